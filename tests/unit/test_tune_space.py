"""Search space YAML -> validated space; the tuning split (no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.errors import ConfigError, InvalidDataError
from cadasg_dist.tuning.space import DEFAULT_SPACE, Param, SearchSpace
from cadasg_dist.tuning.splits import split_for_tuning

SHIPPED = sorted(DEFAULT_SPACE.parent.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spaces_are_valid(path):
    space = SearchSpace.from_yaml(path)
    run = space.for_run(epsilon_cap=3.0)

    assert space.params and run.params
    # epsilon is searched below the cap, or (a fixed-budget space) every trial spends the cap
    assert "privacy.epsilon" in run.params or run.fixed["privacy.epsilon"] == 3.0


def test_every_problem_is_reported_at_once():
    raw = {"space": {"loss.cov": {"loguniform": [0.0, 1.0]}, "loss.kl": {"uniform": [2, 1]},
                     "loss.wgn": {"choice": [1.0]}, "train.epochs": {"uniform": [5, 10]},
                     "model.hidden": {"choice": [[64, 64]]}, "loss.utility": {"normal": [0, 1]},
                     "privacy.epsilon": {"choice": [-1.0]}}}

    with pytest.raises(ConfigError) as err:
        SearchSpace.from_dict(raw)

    message = str(err.value)
    for expected in ("loss.cov: loguniform needs low > 0", "loss.kl: uniform needs low < high",
                     "unknown config key 'loss.wgn'", "train.epochs = 7.5",
                     "model.hidden: choice options must be scalars",
                     "loss.utility: write one of", "privacy.epsilon must be > 0"):
        assert expected in message


def test_unknown_search_setting_is_refused():
    with pytest.raises(ConfigError, match="unknown search setting 'round'"):
        SearchSpace.from_dict({"space": {"loss.cov": {"choice": [1.0]}}, "search": {"round": 3}})
    with pytest.raises(ConfigError, match="grace_rounds"):
        SearchSpace.from_dict({"space": {"loss.cov": {"choice": [1.0]}}, "search": {"rounds": 2, "grace_rounds": 3}})


def test_a_tuple_is_written_as_a_string_choice():
    space = SearchSpace.from_dict({"space": {"model.hidden": {"choice": ["64,64", "128"]}}})

    assert space.params["model.hidden"].values == ("64,64", "128")


SPACE = {"space": {"loss.cov": {"loguniform": [0.25, 4.0]}, "train.epochs": {"randint": [5, 10]},
                   "privacy.epsilon": {"choice": [1.0, 3.0, 8.0]}, "privacy.weight_cache": {"uniform": [0.2, 2.0]},
                   "train.batch_size": 256}}


def test_without_a_budget_privacy_keys_leave_the_search():
    run = SearchSpace.from_dict(SPACE).for_run(epsilon_cap=None)

    assert sorted(run.params) == ["loss.cov", "train.epochs"]
    assert run.fixed == {"train.batch_size": 256}


def test_epsilon_is_capped_and_the_cap_is_tried():
    run = SearchSpace.from_dict(SPACE).for_run(epsilon_cap=5.0)

    assert run.params["privacy.epsilon"] == Param("privacy.epsilon", "choice", (1.0, 3.0, 5.0))
    assert "privacy.weight_cache" in run.params


def test_a_cap_below_every_value_fixes_epsilon():
    run = SearchSpace.from_dict(SPACE).for_run(epsilon_cap=0.5)

    assert "privacy.epsilon" not in run.params
    assert run.fixed["privacy.epsilon"] == 0.5


def test_a_range_of_epsilon_is_clipped_at_the_cap():
    raw = {"space": {"privacy.epsilon": {"loguniform": [0.5, 10.0]}, "loss.cov": {"choice": [1.0, 2.0]}}}

    run = SearchSpace.from_dict(raw).for_run(epsilon_cap=4.0)

    assert run.params["privacy.epsilon"].values == (0.5, 4.0)


def test_pinned_keys_leave_the_search():
    run = SearchSpace.from_dict(SPACE).for_run(epsilon_cap=None, pinned={"train.epochs", "train.batch_size"})

    assert sorted(run.params) == ["loss.cov"]
    assert run.fixed == {}


def test_randint_includes_both_ends_in_tune():
    domain = SearchSpace.from_dict(SPACE).params["train.epochs"].to_tune()

    assert (domain.lower, domain.upper) == (5, 11)  # Tune's upper end is exclusive


def test_split_parts_are_disjoint_and_cover_the_table():
    frame = pd.DataFrame({"v": np.arange(1000)})

    split = split_for_tuning(frame, tune_fraction=0.3, validation_fraction=0.3, seed=0)

    assert split.sizes() == {"final_rows": 700, "tuning_train_rows": 210, "validation_rows": 90}
    parts = [set(split.final.v), set(split.train.v), set(split.validation.v)]
    assert set().union(*parts) == set(range(1000))
    assert sum(map(len, parts)) == 1000
    again = split_for_tuning(frame, tune_fraction=0.3, validation_fraction=0.3, seed=0)
    assert again.final.equals(split.final)


def test_split_by_unit_keeps_a_person_on_one_side():
    frame = pd.DataFrame({"person": np.repeat(np.arange(300), 3), "v": np.arange(900)})

    split = split_for_tuning(frame, tune_fraction=0.3, validation_fraction=0.3, seed=1, unit="person")

    people = [set(split.final.person), set(split.train.person), set(split.validation.person)]
    assert not (people[0] & people[1] or people[0] & people[2] or people[1] & people[2])
    assert len(split.final) == 3 * len(people[0])


def test_split_refuses_a_table_too_small_to_tune():
    with pytest.raises(InvalidDataError, match="too small to tune"):
        split_for_tuning(pd.DataFrame({"v": range(50)}), tune_fraction=0.3, validation_fraction=0.3, seed=0)
