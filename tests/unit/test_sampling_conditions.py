"""Conditions on any column (issue 29 gap 1) and fresh seeds (gap 3)."""

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.errors import ContextError, InvalidDataError
from cadasg_dist.sampling import loop


def test_target_class_is_exact_through_the_cells(tiny_model, monkeypatch):
    drawn = []
    real = loop.Sampler._draw_chunk
    monkeypatch.setattr(loop.Sampler, "_draw_chunk", lambda self, c, g, r: drawn.append(len(c)) or real(self, c, g, r))
    rows = tiny_model.sample(400, conditions={"label": "yes"}, seed=1)
    assert len(rows) == 400 and set(rows["label"]) == {"yes"}
    assert sum(drawn) == 400  # a stratum: nothing drawn is rejected


def test_context_and_categorical_conditions_together(tiny_model):
    rows = tiny_model.sample(300, conditions={"group": "b", "flag": True, "label": "no"}, seed=2)
    assert len(rows) == 300
    assert set(rows["group"]) == {"b"} and set(rows["flag"]) == {True} and set(rows["label"]) == {"no"}
    assert rows["flag"].dtype == bool


def test_numeric_value_is_pinned_and_range_is_kept(tiny_model, mixed_table):
    one = tiny_model.sample(50, conditions={"score": 1.5}, seed=3)
    assert (one["score"] == 1.5).all()
    assert one["amount"].nunique() > 5  # the other columns still vary
    level = tiny_model.sample(60, conditions={"count": 9}, seed=3)
    assert (level["count"] == 9).all()
    inside = tiny_model.sample(200, conditions={"score": (0.0, 2.0)}, seed=3)
    assert inside["score"].between(0.0, 2.0).all() and inside["score"].nunique() > 100
    lower = tiny_model.sample(50, conditions={"amount": (None, 80)}, seed=3)
    assert (lower["amount"] <= 80).all()


def test_bad_conditions_are_one_clear_line(tiny_model):
    with pytest.raises(InvalidDataError, match="unknown column 'nope'"):
        tiny_model.sample(5, conditions={"nope": 1})
    with pytest.raises(InvalidDataError, match="unknown value 'maybe' for column 'label'; valid values: "):
        tiny_model.sample(5, conditions={"label": "maybe"})
    with pytest.raises(InvalidDataError, match="outside the modelled range"):
        tiny_model.sample(5, conditions={"score": 1e6})
    with pytest.raises(InvalidDataError, match="holds integers"):
        tiny_model.sample(5, conditions={"count": 2.5})
    with pytest.raises(ContextError, match="valid values: a, b, rare"):
        tiny_model.sample(5, conditions={"group": "zzz"})


def test_a_too_rare_condition_is_refused_with_the_rate(tiny_model, monkeypatch):
    monkeypatch.setattr(loop, "MIN_PROBE", 2_000)
    monkeypatch.setattr(loop, "MAX_DRAWS_PER_ROW", 2)  # demand a 50% rate: a narrow range cannot meet it
    with pytest.raises(loop.TooRareError, match=r"score=0.0..0.05: met by \d+\.\d+% of generated rows"):
        tiny_model.sample(500, conditions={"score": (0.0, 0.05)}, seed=0)


def test_sample_remaining_completes_partial_rows_in_place(tiny_model):
    known = pd.DataFrame({"group": ["rare", None, "a", "rare"], "label": [None, "yes", "no", None],
                          "score": [np.nan, 0.5, np.nan, np.nan]}, index=[7, 3, 9, 1])
    out = tiny_model.sample_remaining(known, seed=4)
    assert list(out.index) == [7, 3, 9, 1]
    assert list(out.columns) == tiny_model.schema.output_names
    assert list(out.loc[[7, 9, 1], "group"]) == ["rare", "a", "rare"]
    assert out.loc[3, "label"] == "yes" and out.loc[3, "score"] == 0.5 and out.loc[9, "label"] == "no"
    pd.testing.assert_frame_equal(out, tiny_model.sample_remaining(known, seed=4))
    with pytest.raises(InvalidDataError, match="unknown column 'x'"):
        tiny_model.sample_remaining(pd.DataFrame({"x": [1]}))


def test_fresh_seed_by_default_reported_and_replayable(tiny_model):
    a = tiny_model.sample(50)
    seed_a = tiny_model.last_seed
    b = tiny_model.sample(50)
    assert seed_a != tiny_model.last_seed and not a.equals(b)
    pd.testing.assert_frame_equal(a, tiny_model.sample(50, seed=seed_a))
    assert tiny_model.last_seed == seed_a


def test_context_argument_still_works_and_agrees_with_conditions(tiny_model):
    a = tiny_model.sample(120, context={"group": "rare"}, seed=5)
    b = tiny_model.sample(120, conditions={"group": "rare"}, seed=5)
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(InvalidDataError, match="fixed twice"):
        tiny_model.sample(5, context={"group": "a"}, conditions={"group": "b"})
