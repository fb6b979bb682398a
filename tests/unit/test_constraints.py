"""Declared constraints: checked when declared and at fit, and every sampled row satisfies every one.

The property test draws constraint sets with hypothesis, adds them to one small trained model and
checks 100k sampled rows with its own pandas arithmetic (not the rules' code that enforced them).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from cadasg_dist.cli import main
from cadasg_dist.config import CADASGConfig, ConstraintConfig
from cadasg_dist.constraints import Band, Combinations, Inequality, Range
from cadasg_dist.constraints.base import Grid
from cadasg_dist.context.labels import Interval
from cadasg_dist.errors import ConfigError
from cadasg_dist.serving.sampler import SampleJob, sample_many
from cadasg_dist.synthesizer import CADASG

REGIONS = {"north": "A", "south": "A", "east": "B", "west": "B"}
TINY = {"model": {"latent_dim": 4, "hidden": [32], "critic_hidden": [32], "utility_hidden": [16]},
        "train": {"epochs": 2, "batch_size": 256}}


@pytest.fixture(scope="module")
def shop() -> pd.DataFrame:
    """Every kind of column a constraint reads, with missing values."""
    rng = np.random.default_rng(3)
    n = 1200
    region = rng.choice(list(REGIONS), size=n)
    income = np.exp(rng.normal(10, 0.5, size=n))
    start = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 365, size=n), unit="D")
    df = pd.DataFrame({
        "region": region, "country": [REGIONS[r] for r in region],
        "age": rng.integers(18, 91, size=n), "income": income, "spend": income * rng.uniform(0.1, 0.9, size=n),
        "level": rng.choice([1, 2, 3], size=n), "flag": rng.random(n) < 0.4,
        "start": start, "end": start + pd.to_timedelta(rng.integers(1, 90, size=n), unit="D"),
        "label": np.where(income > np.median(income), "high", "low"),
    })
    df.loc[rng.random(n) < 0.05, "income"] = np.nan
    return df


def _config(constraints=(), **extra) -> CADASGConfig:
    return CADASGConfig.from_dict({"target": "label", "context": {"columns": ["region"]}, **TINY,
                                   "constraints": list(constraints), **extra})


@pytest.fixture(scope="module")
def model(shop) -> CADASG:
    fitted = CADASG(_config()).fit(shop)
    fitted.sample(10, seed=0)  # the calibration, built once and shared by the copies below
    return fitted


# --- declarations -------------------------------------------------------------------------------

@pytest.mark.parametrize("entry, message", [
    ({"kind": "ranges", "column": "age"}, r"constraints\[1\]\.kind must be one of \['range'"),
    ({"kind": "range", "column": "age", "low": 9, "high": 1}, r"constraints\[1\]: low must be below high"),
    ({"kind": "range", "column": "age"}, r"constraints\[1\]: a range constraint needs low, high or both"),
    ({"kind": "inequality", "a": "age"}, r"constraints\[1\]: an inequality constraint needs b"),
    ({"kind": "combinations", "columns": ["flag"]}, r"constraints\[1\]: a combinations constraint needs >= 2"),
    ({"kind": "combinations", "columns": ["flag", "level"], "allowed": [[True]]},
     r"each allowed combination needs 2 values"),
    ({"kind": "band", "column": "age", "context": "b", "bands": {"x": [5, 1]}}, r"bands\['x'\] must be \[low, high\]"),
    ({"kind": "range", "column": "age", "low": 1, "colum": "x"}, r"unknown config key 'constraints\[1\]\.colum'"),
])
def test_a_bad_entry_is_refused_with_one_line_naming_it(entry, message):
    good = {"kind": "range", "column": "age", "low": 0}
    with pytest.raises(ConfigError, match=message) as err:
        CADASGConfig.from_dict({"constraints": [good, entry]})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("entry, message", [
    ({"kind": "range", "column": "agee", "low": 0}, r"constraints\[0\]: unknown column 'agee'; columns: region"),
    ({"kind": "range", "column": "region", "low": 0}, r"'region' is a categorical column; this rule needs"),
    ({"kind": "range", "column": "level", "low": 3.5}, r"no value of 'level' lies in \[3.5, inf\)"),
    ({"kind": "inequality", "a": "start", "b": "age"}, r"'start' and 'age' must both be dates or both numbers"),
    ({"kind": "combinations", "columns": ["flag", "income"]}, r"'income' is a continuous column; combinations"),
    ({"kind": "combinations", "columns": ["region", "country"], "allowed": [["north", "C"]]},
     r"allowed value 'C' is not a category of 'country'; categories: A, B"),
    ({"kind": "combinations", "columns": ["region", "country"], "allowed": [["north", "A"]]},
     r"the context region=east is in no allowed combination"),
    ({"kind": "band", "column": "age", "context": "income"}, r"'income' must be categorical"),
])
def test_an_entry_that_does_not_fit_the_table_is_refused_before_training(shop, entry, message):
    with pytest.raises(ConfigError, match=message):
        CADASG(_config([entry])).prepare(shop)


def test_the_cli_refuses_a_bad_constraint_in_one_line(tmp_path, shop, capsys):
    path = tmp_path / "shop.csv"
    shop.to_csv(path, index=False)
    code = main(["train", str(path), "--target", "label", "--context", "region", "--out", str(tmp_path / "m"),
                 "--set", "constraints=[{kind: range, column: nope, high: 3}]"])
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.endswith(" ...")]  # progress lines
    assert code == 2 and len(err) == 1 and "constraints[0]: unknown column 'nope'" in err[0]
    assert not (tmp_path / "m").exists()


def test_a_private_run_never_reads_the_combinations_from_the_table():
    declared = {"region": {"categories": list(REGIONS)}, "country": {"categories": ["A", "B"]},
                "label": {"categories": ["high", "low"]}}
    with pytest.raises(ConfigError, match=r"constraints\[0\]: a private run never reads the combinations"):
        _config([{"kind": "combinations", "columns": ["region", "country"]}],
                privacy={"epsilon": 4.0}, data={"columns": declared})
    private = _config(privacy={"epsilon": 4.0}, data={"columns": declared})
    with pytest.raises(ConfigError, match=r"constraints\[0\]: a private run never reads the combinations"):
        CADASG(private).add_constraints({"kind": "combinations", "columns": ["region", "country"]})


# --- repairs, one rule at a time ----------------------------------------------------------------

def test_each_repair_follows_its_documented_rule():
    frame = pd.DataFrame({"x": [5.0, 50.0, -3.0, np.nan], "n": np.array([0, 7, 12, 3]),
                          "a": [1.0, 9.0, 4.0, 2.0], "b": [2.0, 3.0, 4.0, 1.0],
                          "g": ["u", "v", "w", "u"], "h": ["p", "p", "q", "q"]})
    Range("x", 0, 10, "right", Grid("float")).repair(frame, frozenset(), frame)
    assert frame["x"].iloc[0] == 5.0 and frame["x"].iloc[1] == 10.0 and np.isnan(frame["x"].iloc[3])
    assert frame["x"].iloc[2] == np.nextafter(0.0, 1.0)  # an open end: the next float inside
    Range("n", 1, 10, "neither", Grid("int")).repair(frame, frozenset(), frame)
    assert frame["n"].tolist() == [2, 7, 9, 3] and frame["n"].dtype == np.int64
    Inequality("a", "b", True, 1.0, Grid("float"), Grid("float")).repair(frame, frozenset(), frame)
    assert frame[["a", "b"]].values.tolist() == [[1.0, 2.0 + 2 ** -51], [2.0, 10.0], [3.0, 5.0], [0.0, 3.0]]
    Band("n", "g", {"u": Interval(0, 1, True, True), "w": Interval(3, 5, True, False)}, Grid("int")).repair(
        frame, frozenset(), frame)
    assert frame["n"].tolist() == [1, 7, 4, 1]  # "v" has no band: unconstrained
    rule = Combinations(("g", "h"), [("u", "p"), ("v", "q"), ("w", "q")])
    rule.repair(frame, frozenset({"g"}), frame.iloc[[0]])
    assert frame[["g", "h"]].values.tolist() == [["u", "p"], ["v", "q"], ["w", "q"], ["u", "p"]]


def test_a_nearest_combination_keeps_the_fixed_columns_and_follows_the_draws_shares():
    rule = Combinations(("g", "h"), [("u", "p"), ("u", "q"), ("v", "r")])
    rows = pd.DataFrame({"g": ["u", "u"], "h": ["r", "r"]})
    reference = pd.DataFrame({"g": ["u", "u", "u"], "h": ["q", "q", "p"]})
    rule.repair(rows, frozenset({"g"}), reference)
    assert rows["h"].tolist() == ["q", "q"]  # keeps g = u; (u, q) is the more frequent choice


def test_contradicting_rules_are_one_clear_error(model):
    m = copy.copy(model).add_constraints({"kind": "range", "column": "age", "high": 30},
                                         {"kind": "range", "column": "spend", "low": 0},
                                         {"kind": "inequality", "a": "spend", "b": "age", "offset": 100})
    with pytest.raises(ConfigError, match="the constraints cannot all hold on"):
        m.sample(2000, seed=0)


# --- the model: API, artifact, serving ----------------------------------------------------------

def test_constraints_are_saved_with_the_model_and_give_the_same_rows(shop, tmp_path):
    entries = [{"kind": "combinations", "columns": ["flag", "level"]}, {"kind": "range", "column": "age", "high": 60}]
    fitted = CADASG(_config(entries)).fit(shop)
    rule = fitted.constraints.rules[0]
    assert rule.source == "data" and len(rule.allowed) == 6  # read from the table (a non-private fit)
    rows = fitted.sample(3000, seed=4)
    again = CADASG.load(fitted.save(tmp_path / "m"))
    assert again.constraints.describe() == fitted.constraints.describe()
    assert again.sample(3000, seed=4).equals(rows)
    assert again.config.constraints == fitted.config.constraints


def test_add_constraints_before_and_after_fit(shop, model):
    early = CADASG(_config()).add_constraints(ConstraintConfig(kind="range", column="age", low=30))
    assert early.config.constraints[0].low == 30.0 and not early.constraints  # built at fit
    late = copy.copy(model).add_constraints({"kind": "inequality", "a": "start", "b": "end", "offset": 86400})
    assert late.constraints.describe() == ["inequality start + 86400s <= end"] and not model.constraints
    rows = late.sample(5000, seed=1)
    assert (rows["start"] + pd.Timedelta(days=1) <= rows["end"]).all()
    with pytest.raises(ConfigError, match=r"constraints\[1\]: declare the allowed combinations of flag, level"):
        late.add_constraints({"kind": "combinations", "columns": ["flag", "level"]})
    assert len(late.constraints) == 1 and len(late.config.constraints) == 1  # nothing half-added


def test_served_batches_enforce_the_constraints(model):
    m = copy.copy(model).add_constraints({"kind": "range", "column": "age", "low": 40, "high": 50})
    jobs = [SampleJob(m, 40, {}, 1), SampleJob(m, 25, {"region": "east"}, 2)]
    for job, rows in zip(jobs, sample_many(jobs)):
        assert rows.equals(m.sample(job.n, context=job.context or None, seed=job.seed))
        assert rows["age"].between(40, 50).all()


# --- the property: every declared constraint holds on 100k rows ---------------------------------

@st.composite
def constraint_sets(draw) -> list[dict]:
    """A satisfiable set: each column in at most one rule, every region in an allowed combination."""
    out: list[dict] = []
    inclusive = st.sampled_from(["both", "neither", "left", "right"])
    money = draw(st.sampled_from(["range", "inequality", "reversed", "none"]))
    if money == "range":
        for column in ("income", "spend"):
            low = draw(st.floats(1_000, 30_000))
            out.append({"kind": "range", "column": column, "low": low, "high": low + draw(st.floats(1, 40_000)),
                        "inclusive": draw(inclusive)})
    elif money != "none":  # "reversed" asks the opposite of the table: most rows are repaired
        a, b = ("spend", "income") if money == "inequality" else ("income", "spend")
        out.append({"kind": "inequality", "a": a, "b": b, "strict": draw(st.booleans()),
                    "offset": draw(st.floats(-2_000, 2_000))})
    if draw(st.booleans()):
        out.append({"kind": "range", "column": "age", "low": draw(st.integers(10, 60)) + 0.5,
                    "high": draw(st.integers(61, 95)), "inclusive": draw(inclusive)})
    level = draw(st.sampled_from(["range", "combinations", "none"]))
    if level == "range":
        out.append({"kind": "range", "column": "level", "low": draw(st.sampled_from([None, 1, 1.5])),
                    "high": draw(st.sampled_from([2.5, 3])), "inclusive": draw(inclusive)})  # 2 always inside
    if draw(st.booleans()):
        out.append({"kind": "inequality", "a": "start", "b": "end", "strict": draw(st.booleans()),
                    "offset": draw(st.integers(-30, 60)) * 86400.0})
    if draw(st.booleans()):
        pairs = [(r, c) for r in REGIONS for c in ("A", "B")]
        extra = draw(st.lists(st.sampled_from(pairs), max_size=3))
        out.append({"kind": "combinations", "columns": ["region", "country"],
                    "allowed": [[r, draw(st.sampled_from(["A", "B"]))] for r in REGIONS] + [list(p) for p in extra]})
    if level == "combinations":
        combos = [[f, lv, lab] for f in (True, False) for lv in (1, 2, 3) for lab in ("high", "low")]
        out.append({"kind": "combinations", "columns": ["flag", "level", "label"],
                    "allowed": draw(st.lists(st.sampled_from(combos), min_size=1, max_size=6, unique_by=str))})
    return out


def _holds(entry: dict, rows: pd.DataFrame) -> pd.Series:
    """Whether each row satisfies ``entry``, by plain pandas arithmetic (a missing value satisfies it)."""
    kind = entry["kind"]
    if kind == "range":
        x = rows[entry["column"]].astype(float)
        lo, hi = entry.get("low"), entry.get("high")
        ok = x.between(-math.inf if lo is None else lo, math.inf if hi is None else hi, inclusive=entry["inclusive"])
        return ok | x.isna()
    if kind == "inequality":
        a, b = rows[entry["a"]], rows[entry["b"]]
        shift = pd.Timedelta(seconds=entry["offset"]) if a.dtype.kind == "M" else entry["offset"]
        ok = (a + shift < b) if entry["strict"] else (a + shift <= b)
        return ok | a.isna() | b.isna()
    allowed = {tuple(str(v) for v in combo) for combo in entry["allowed"]}
    return rows[entry["columns"]].astype(str).apply(tuple, axis=1).isin(allowed)


EVERY_KIND = [
    {"kind": "inequality", "a": "income", "b": "spend", "strict": True, "offset": 500.0},  # most rows repaired
    {"kind": "range", "column": "age", "low": 30, "high": 40, "inclusive": "right"},
    {"kind": "range", "column": "level", "low": 1.5, "high": 3, "inclusive": "both"},
    {"kind": "inequality", "a": "start", "b": "end", "strict": True, "offset": 30 * 86400.0},
    {"kind": "combinations", "columns": ["region", "country"], "allowed": [[r, "B"] for r in REGIONS]},
    {"kind": "combinations", "columns": ["flag", "label"], "allowed": [[True, "high"], [False, "high"]]},
]


@settings(max_examples=4, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],  # no shrinking
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=constraint_sets(), seed=st.integers(0, 2**31))
@example(entries=EVERY_KIND, seed=7)
def test_every_declared_constraint_holds_on_100k_sampled_rows(model, entries, seed):
    constrained = copy.copy(model).add_constraints(*entries)
    rows = constrained.sample(100_000, seed=seed)
    assert len(rows) == 100_000
    for entry in entries:
        ok = _holds(entry, rows)
        assert ok.all(), (entry, int((~ok).sum()))
    assert rows["region"].value_counts().equals(model.sample(100_000, seed=seed)["region"].value_counts())
