import numpy as np
import pandas as pd
import pytest

from cadasg_dist.config import CADASGConfig, ContextConfig
from cadasg_dist.errors import ContextError, InvalidDataError
from cadasg_dist.synthesizer import CADASG


def test_sample_keeps_schema_types_and_categories(tiny_model, mixed_table):
    rows = tiny_model.sample(500, seed=1)
    assert list(rows.columns) == list(mixed_table.columns)
    assert rows["count"].dtype == np.int64
    assert rows["flag"].dtype == bool
    assert pd.api.types.is_datetime64_any_dtype(rows["when"])
    assert set(rows["label"]) <= {"yes", "no"}
    assert rows["score"].between(mixed_table["score"].min(), mixed_table["score"].max()).all()


def test_context_shares_follow_the_cache_counts(tiny_model, mixed_table):
    rows = tiny_model.sample(2000, seed=0)
    real = mixed_table["group"].value_counts(normalize=True)
    synth = rows["group"].value_counts(normalize=True)
    assert (real - synth).abs().max() < 0.005  # exact allocation, no multinomial noise


def test_rare_context_is_generated_directly(tiny_model):
    rows = tiny_model.sample(300, context={"group": "rare"}, seed=0)
    assert len(rows) == 300 and set(rows["group"]) == {"rare"}


def test_same_seed_same_rows_and_different_seed_differs(tiny_model):
    a = tiny_model.sample(100, seed=7)
    b = tiny_model.sample(100, seed=7)
    c = tiny_model.sample(100, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_unknown_context_is_refused_with_the_valid_values(tiny_model):
    with pytest.raises(ContextError, match="valid values: a, b, rare"):
        tiny_model.sample(10, context={"group": "zzz"})
    with pytest.raises(ContextError, match="unknown context column 'sex'"):
        tiny_model.sample(10, context={"sex": "F"})
    for bad in (0, -5, 2.5):
        with pytest.raises(InvalidDataError, match="positive integer"):
            tiny_model.sample(bad)


def test_partial_context_spreads_over_matching_contexts(mixed_table):
    from cadasg_dist.config import ModelConfig, TrainConfig

    cfg = CADASGConfig(target="label", context=ContextConfig(columns=("group", "flag")),
                       model=ModelConfig(latent_dim=4, hidden=(32,), critic_hidden=(32,), utility_hidden=(16,)),
                       train=TrainConfig(epochs=1, batch_size=200))
    model = CADASG(cfg).fit(mixed_table)
    rows = model.sample(3000, context={"flag": True}, seed=0)
    assert set(rows["flag"]) == {True}
    real = mixed_table[mixed_table["flag"]]["group"].value_counts(normalize=True)
    synth = rows["group"].value_counts(normalize=True)
    assert (real - synth).abs().max() < 0.01
    # a value given as text (as the CLI passes it) still matches a boolean context
    assert set(model.sample(10, context={"flag": "True"})["flag"]) == {True}


def test_banded_numeric_context(mixed_table):
    from cadasg_dist.config import ModelConfig, TrainConfig

    cfg = CADASGConfig(target="label", context=ContextConfig(columns=("score",), bands={"score": (-20, 0, 20)}),
                       model=ModelConfig(latent_dim=4, hidden=(32,), critic_hidden=(32,), utility_hidden=(16,)),
                       train=TrainConfig(epochs=1, batch_size=200))
    model = CADASG(cfg).fit(mixed_table)
    assert [c["score"] for c in model.contexts] == ["[-20, 0)", "[0, 20)"]
    low = model.sample(200, context={"score": "[-20, 0)"}, seed=0)
    assert (low["score"] < 0).all()
    high = model.sample(200, context={"score": 5}, seed=0)  # a value inside the band selects it
    assert (high["score"] >= 0).all()


def test_training_is_reproducible(mixed_table, tiny_config):
    a = CADASG(tiny_config).fit(mixed_table)
    b = CADASG(tiny_config).fit(mixed_table)
    for (name, ta), tb in zip(a.nets.state_dict().items(), b.nets.state_dict().values()):
        assert bool((ta == tb).all()), name
    pd.testing.assert_frame_equal(a.sample(50, seed=3), b.sample(50, seed=3))


def test_date_period_context():
    from cadasg_dist.config import ModelConfig, TrainConfig

    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({"when": pd.to_datetime("2021-01-01") + pd.to_timedelta(rng.integers(0, 730, n), unit="D"),
                       "x": rng.normal(size=n), "y": rng.choice(["u", "v"], n)})
    cfg = CADASGConfig(target="y", context=ContextConfig(columns=("when",), periods={"when": "year"}),
                       model=ModelConfig(latent_dim=2, hidden=(16,), critic_hidden=(16,), utility_hidden=(8,)),
                       train=TrainConfig(epochs=1, batch_size=100))
    model = CADASG(cfg).fit(df)
    assert [c["when"] for c in model.contexts] == ["2021", "2022"]
    rows = model.sample(50, context={"when": "2022"}, seed=0)
    assert len(rows) == 50 and pd.api.types.is_datetime64_any_dtype(rows["when"])
    with pytest.raises(ContextError, match="valid values: 2021, 2022"):
        model.sample(5, context={"when": "2030"})
