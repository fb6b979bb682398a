"""Band labels: any spelling of a band names it, and a band column tied to its feature holds in every row."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.config import CADASGConfig, ContextConfig, ModelConfig, TrainConfig
from cadasg_dist.context.labels import Interval, parse_interval
from cadasg_dist.errors import ConfigError
from cadasg_dist.synthesizer import CADASG

SMALL = ModelConfig(latent_dim=4, hidden=(32,), critic_hidden=(32,), utility_hidden=(16,))
BANDS = {"18-29": (18, 29), "30-44": (30, 44), "45-64": (45, 64), "65+": (65, 200)}


@pytest.mark.parametrize("text, expected", [
    ("[40, 55)", Interval(40, 55, True, False)),
    ("[40,55)", Interval(40, 55, True, False)),
    ("  [ 40 ,55 ) ", Interval(40, 55, True, False)),
    ("[40, 55[", Interval(40, 55, True, False)),
    ("]40, 55]", Interval(40, 55, False, True)),
    ("(40.5, 55]", Interval(40.5, 55, False, True)),
    ("40-54", Interval(40, 54, True, True)),
    ("40 – 54", Interval(40, 54, True, True)),
    ("40 to 54", Interval(40, 54, True, True)),
    ("<40", Interval(-math.inf, 40, False, False)),
    ("<= 40", Interval(-math.inf, 40, False, True)),
    ("≥65", Interval(65, math.inf, True, False)),
    ("65+", Interval(65, math.inf, True, False)),
    ("[-inf, 25)", Interval(-math.inf, 25, False, False)),
    ("[65, inf)", Interval(65, math.inf, True, False)),
])
def test_every_spelling_of_a_band_reads_as_its_interval(text, expected):
    assert parse_interval(text) == expected


@pytest.mark.parametrize("text", ["young", "1985", "a-b", "", "[40, 55", 40, None])
def test_a_label_that_names_no_interval_reads_as_none(text):
    assert parse_interval(text) is None


def test_context_filters_accept_any_spelling_of_a_band(mixed_table):
    cfg = CADASGConfig(target="label", context=ContextConfig(columns=("score",), bands={"score": (-20, 0, 20)}),
                       model=SMALL, train=TrainConfig(epochs=1, batch_size=200))
    model = CADASG(cfg).fit(mixed_table)
    exact = model.sample(300, context={"score": "[-20, 0)"}, seed=2)
    for spelling in ("[-20,0)", " [ -20 , 0 ) ", "[-20, 0[", "-20 to 0", "(-20, 0]"):
        assert model.sample(300, context={"score": spelling}, seed=2).equals(exact), spelling
    with pytest.raises(Exception, match="valid values"):
        model.sample(10, context={"score": "[-20,1)"})


@pytest.fixture(scope="module")
def people() -> pd.DataFrame:
    """A user's table with a band column built the obvious way: age_band next to age."""
    rng = np.random.default_rng(11)
    n = 1500
    age = rng.integers(18, 91, size=n)
    band = np.select([age < 30, age < 45, age < 65], ["18-29", "30-44", "45-64"], "65+")
    income = np.exp(rng.normal(10, 0.4, size=n)) + age * 300.0
    return pd.DataFrame({"age": age, "age_band": band, "region": rng.choice(["n", "s"], size=n),
                         "income": income, "label": np.where(income > np.median(income), "high", "low")})


def _config(**extra) -> CADASGConfig:
    return CADASGConfig.from_dict({"target": "label", "context": {"columns": ["age_band", "region"]},
                                   "model": {"latent_dim": 4, "hidden": [32], "critic_hidden": [32],
                                             "utility_hidden": [16]},
                                   "train": {"epochs": 2, "batch_size": 256}, **extra})


def _outside(rows: pd.DataFrame) -> float:
    lo = rows["age_band"].map({k: v[0] for k, v in BANDS.items()})
    hi = rows["age_band"].map({k: v[1] for k, v in BANDS.items()})
    return float(((rows["age"] < lo) | (rows["age"] > hi)).mean())


def test_an_untied_band_context_contradicts_itself_and_is_warned_about(people, caplog):
    with caplog.at_level(logging.WARNING, logger="cadasg_dist.constraints"):
        model = CADASG(_config()).fit(people)
    warned = [r.getMessage() for r in caplog.records if "looks like bands of 'age'" in r.getMessage()]
    assert len(warned) == 1 and "kind: band, column: age, context: age_band" in warned[0]
    assert _outside(model.sample(20_000, seed=1)) > 0.05  # what the band tie fixes


@pytest.mark.parametrize("bands", [None, {"18 - 29": [18, 29], "30-44": [30, 44], "45-64": [45, 64],
                                          "65+": [65, 200]}])
def test_the_band_tie_keeps_every_row_inside_its_band(people, bands, caplog):
    tie = {"kind": "band", "column": "age", "context": "age_band"}
    if bands is not None:  # declared bands, a key spelt loosely ("18 - 29" for "18-29"), both ends inside
        tie |= {"bands": bands, "inclusive": "both"}
    with caplog.at_level(logging.WARNING, logger="cadasg_dist.constraints"):
        model = CADASG(_config(constraints=[tie])).fit(people)
    assert not [r for r in caplog.records if "looks like bands" in r.getMessage()]
    rows = model.sample(50_000, seed=3)
    assert _outside(rows) == 0.0
    stats = model.constraints.stats
    assert stats["rows"] == 50_000 and stats["redrawn"] > stats["repaired"]  # mostly honest redraws
    # the band's own distribution is kept: ages spread over the band, not piled on its edges
    young = rows.loc[rows["age_band"] == "18-29", "age"]
    assert young.nunique() >= 10 and ((young == 18) | (young == 29)).mean() < 0.4


def test_a_band_label_that_names_no_interval_needs_its_band_declared(people):
    table = people.assign(age_band=people["age_band"].replace({"65+": "senior"}))
    with pytest.raises(ConfigError, match=r"constraints\[0\]: label 'senior' of 'age_band' names no interval"):
        CADASG(_config(constraints=[{"kind": "band", "column": "age", "context": "age_band"}])).prepare(table)
    tie = {"kind": "band", "column": "age", "context": "age_band", "bands": {"senior": [65, 200]}}
    CADASG(_config(constraints=[tie])).prepare(table)
    with pytest.raises(ConfigError, match=r"bands key 'old' is not a label of 'age_band'; labels: "):
        CADASG(_config(constraints=[{**tie, "bands": {"old": [65, 200]}}])).prepare(table)
