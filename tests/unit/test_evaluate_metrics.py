"""Unit tests of cadasg_dist.evaluate: fidelity, per-context, utility and privacy metrics."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.data.schema import infer_schema
from cadasg_dist.errors import CADASGError, ConfigError, ContextError, InvalidDataError
from cadasg_dist.evaluate import EvaluationResult, evaluate
from cadasg_dist.evaluate.features import encode, fit_encoder, widened_schema
from cadasg_dist.evaluate.utility import _ratio


def correlated_table(n: int, seed: int) -> pd.DataFrame:
    """Numeric and categorical columns that depend on each other, with a learnable binary target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 2.0 * x + rng.normal(scale=0.3, size=n)
    group = np.where(x + rng.normal(scale=0.5, size=n) > 0, "hi", "lo")
    region = rng.choice(["north", "south", "east"], size=n, p=[0.5, 0.3, 0.2])
    label = np.where(y + (region == "north") + rng.normal(scale=0.5, size=n) > 0.5, "yes", "no")
    return pd.DataFrame({"x": x, "y": y, "group": group, "region": region, "label": label})


def shuffled(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Every column permuted independently: same marginals, no dependence left."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: rng.permutation(df[c].to_numpy()) for c in df.columns})


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return correlated_table(1200, seed=0)


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return correlated_table(1200, seed=1)


@pytest.fixture(scope="module")
def identical(real: pd.DataFrame) -> EvaluationResult:
    return evaluate(real, real.copy(), target="label", context=["region"], train=real.copy())


def test_identical_tables_score_one(identical: EvaluationResult) -> None:
    f = identical.fidelity
    assert f.column_shape == pytest.approx(1.0, abs=1e-9)
    assert f.pair_trend == pytest.approx(1.0, abs=1e-9)
    assert all(s == pytest.approx(1.0, abs=1e-9) for s in f.columns.values())
    assert f.cov_frobenius == pytest.approx(0.0, abs=1e-9)
    assert f.precision == pytest.approx(1.0) and f.recall == pytest.approx(1.0)
    assert all(row.score == pytest.approx(1.0, abs=1e-9) for row in identical.per_context)
    assert identical.context_frequency_tv == pytest.approx(0.0, abs=1e-12)
    assert all(t.relative_error == pytest.approx(0.0, abs=1e-12) for t in identical.target_rates)


def test_independent_shuffle_keeps_shapes_but_breaks_trends(real: pd.DataFrame) -> None:
    result = evaluate(real, shuffled(real, seed=3), target=None)
    assert result.fidelity.column_shape == pytest.approx(1.0, abs=1e-9)  # same multiset per column
    assert result.fidelity.pair_trend < 0.85
    pair = {(p.a, p.b): p.score for p in result.fidelity.pairs}
    assert pair[("x", "y")] < 0.6  # rho ~0.99 vs ~0: 1 - 0.99 / 2
    assert result.fidelity.precision < 0.9 or result.fidelity.cov_frobenius_relative > 0.3


def test_hand_computed_ks_tv_and_wasserstein() -> None:
    real = pd.DataFrame({"v": [1.5, 2.5, 3.5, 4.5], "c": ["a", "a", "b", "b"]})
    syn = pd.DataFrame({"v": [3.5, 4.5, 5.5, 6.5], "c": ["a", "b", "b", "b"]})
    result = evaluate(real, syn, target=None)
    # KS: the empirical CDFs differ by at most 0.5 (at v = 2.5); TV: |0.5 - 0.25| = 0.25
    assert result.fidelity.columns == {"v": pytest.approx(0.5), "c": pytest.approx(0.75)}
    # shift of 2 in units of the real std (population std of 1.5..4.5 is sqrt(1.25))
    assert result.fidelity.wasserstein["v"] == pytest.approx(2 / math.sqrt(1.25))
    assert {c.name: c.metric for c in result.fidelity.column_details} == {"v": "ks", "c": "tv"}


def test_missing_values_are_a_category_and_a_rate() -> None:
    real = pd.DataFrame({"v": [1.5, np.nan, 3.5, 4.5], "c": ["a", None, "b", "b"]})
    syn = pd.DataFrame({"v": [1.5, 2.5, 3.5, 4.5], "c": ["a", "a", "b", "b"]})
    result = evaluate(real, syn, target=None)
    assert result.fidelity.missing_rates["v"] == {"real": 0.25, "synthetic": 0.0}
    assert result.fidelity.columns["c"] == pytest.approx(0.75)  # missing 0.25 vs 0, 'a' 0.25 vs 0.5


def test_copy_of_train_is_caught_by_privacy_metrics(real: pd.DataFrame, train: pd.DataFrame) -> None:
    result = evaluate(real, train.copy(), target=None, train=train, privacy={"epsilon": float("inf"), "delta": None})
    p = result.privacy
    assert p.exact_match_rate == 1.0
    assert p.exact_match_baseline == 0.0  # continuous columns: no honest repeats
    assert p.mia_auc > 0.9
    assert p.dcr_share > 0.9
    assert math.isinf(p.epsilon)


def test_fresh_sample_looks_private(real: pd.DataFrame, train: pd.DataFrame) -> None:
    result = evaluate(real, correlated_table(1200, seed=2), target=None, train=train)
    p = result.privacy
    assert p.exact_match_rate == 0.0
    assert abs(p.mia_auc - 0.5) < 0.08
    assert abs(p.dcr_share - 0.5) < 0.08


def test_per_context_rows_worst_first_and_missing_context_is_zero(real: pd.DataFrame) -> None:
    syn = real[real["region"] != "east"].reset_index(drop=True)
    result = evaluate(real, syn, target=None, context=["region"])
    rows = result.per_context.rows
    assert rows[0].key == {"region": "east"} and rows[0].n_synthetic == 0 and rows[0].score == 0.0
    assert [r.score for r in rows] == sorted(r.score for r in rows)
    assert result.per_context.min == 0.0
    n_east = int((real["region"] == "east").sum())
    assert result.context_frequency_tv == pytest.approx(n_east / len(real))
    weights = [r.n_real for r in rows]
    assert result.per_context.weighted_mean == pytest.approx(np.average([r.score for r in rows], weights=weights))


def test_utility_of_good_and_useless_synthetic_data(real: pd.DataFrame, train: pd.DataFrame) -> None:
    good = evaluate(real, train.copy(), target="label", context=["region"], train=train).utility
    assert good.task == "classification" and good.metric == "roc_auc"
    assert good.real > 0.8
    assert good.ratio == pytest.approx(1.0, abs=0.03)
    assert {c.key["region"] for c in good.per_context} <= {"north", "south", "east"}
    assert all(c.n_test >= 200 for c in good.per_context)
    bad = evaluate(real, shuffled(train, seed=4), target="label", train=train).utility
    assert bad.ratio < 0.75
    assert "macro_f1" in bad.secondary


def test_regression_and_multiclass_targets(real: pd.DataFrame, train: pd.DataFrame) -> None:
    reg = evaluate(real, train, target="y", train=train).utility
    assert reg.task == "regression" and reg.metric == "r2" and reg.real > 0.8
    multi = evaluate(real, train, target="region", train=train).utility
    assert multi.metric == "roc_auc_ovr_macro" and multi.ratio is not None


def test_r2_ratio_guards() -> None:
    assert _ratio(0.8, 0.4, "regression") == pytest.approx(0.5)
    assert _ratio(0.8, -0.3, "regression") == 0.0
    assert _ratio(-0.1, 0.4, "regression") is None
    assert _ratio(0.9, 0.45, "classification") == pytest.approx(0.5)


def test_without_train_privacy_is_skipped_and_baseline_splits_holdout(real: pd.DataFrame) -> None:
    result = evaluate(real, real.copy(), target="label")
    assert result.privacy.exact_match_rate is None and result.privacy.mia_auc is None
    assert any("privacy metrics skipped" in n for n in result.notes)
    assert result.utility.baseline == "holdout split"
    assert result.n_train is None


def test_to_dict_is_json_safe_with_stable_keys(identical: EvaluationResult) -> None:
    d = identical.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert set(d) >= {"format", "fidelity", "per_context", "context_frequency_tv", "target_rates", "utility",
                      "privacy", "subsampled", "elapsed_s", "n_real", "n_synthetic", "column_kinds", "notes"}
    assert set(d["fidelity"]) >= {"column_shape", "pair_trend", "columns", "wasserstein", "cov_frobenius", "mmd",
                                  "precision", "recall", "missing_rates"}
    assert set(d["per_context"]) >= {"rows", "min", "weighted_mean"}
    assert set(d["privacy"]) >= {"exact_match_rate", "dcr_share", "mia_auc", "epsilon", "delta"}
    inf = dataclasses.replace(identical, elapsed_s=float("inf")).to_dict()
    assert inf["elapsed_s"] == "inf"
    assert json.loads(text)["format"].startswith("cadasg-evaluation/")


def test_subsampling_is_reported(real: pd.DataFrame) -> None:
    result = evaluate(real, real.copy(), target=None, max_rows=500)
    assert "fidelity_real" in result.subsampled and "500" in result.subsampled["fidelity_real"]


def test_mismatched_schema_names_the_columns(real: pd.DataFrame) -> None:
    syn = real.drop(columns=["y"]).assign(extra=1)
    with pytest.raises(InvalidDataError) as err:
        evaluate(real, syn, target=None)
    assert "'y'" in str(err.value) and "'extra'" in str(err.value)


def test_bad_arguments_are_user_errors(real: pd.DataFrame) -> None:
    with pytest.raises(InvalidDataError, match="nope"):
        evaluate(real, real, target="nope")
    with pytest.raises(ContextError, match="nowhere"):
        evaluate(real, real, target=None, context=["nowhere"])
    with pytest.raises(ConfigError):
        evaluate(real, real, target=None, max_rows=5)
    with pytest.raises(ConfigError):
        evaluate(real, real, target=None, privacy={"epsilon": "lots"})
    with pytest.raises(CADASGError, match="identifier"):
        evaluate(real.assign(id=np.arange(len(real))), real.assign(id=np.arange(len(real))), target=None)


def test_csv_and_typed_values_compare_equal() -> None:
    real = pd.DataFrame({"k": [1, 2, 3, 1, 2, 3], "b": [True, False, True, False, True, False]})
    syn = pd.DataFrame({"k": [1.0, 2.0, 3.0, 1.0, 2.0, 3.0], "b": ["true", "false", "true", "false", "true", "false"]})
    result = evaluate(real, syn, target=None)
    assert result.fidelity.columns == {"k": pytest.approx(1.0), "b": pytest.approx(1.0)}


def test_missing_datetimes_encode_like_present_ones() -> None:
    rng = np.random.default_rng(5)
    when = pd.Series(pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 300, size=200), unit="D"))
    real = pd.DataFrame({"when": when.mask(rng.random(200) < 0.2), "v": rng.normal(size=200)})
    result = evaluate(real, real.copy(), target=None, train=real.copy())
    assert result.fidelity.columns["when"] == pytest.approx(1.0)
    assert result.fidelity.missing_rates["when"]["real"] > 0.1
    assert result.fidelity.cov_frobenius == pytest.approx(0.0, abs=1e-9)
    assert result.privacy.exact_match_rate == 1.0
    # a gap encodes at the median (about 0 on the Gaussian scale), not at the earliest date
    schema = widened_schema(infer_schema(real), [real])
    features = encode(fit_encoder(schema, real), real)
    gaps = real["when"].isna().to_numpy()
    assert np.abs(features[gaps, 0]).max() < 0.2


def test_exact_match_baseline_counts_honest_repeats() -> None:
    rng = np.random.default_rng(7)

    def coarse(n: int) -> pd.DataFrame:  # 2 x 3 possible rows: fresh rows repeat training rows
        return pd.DataFrame({"a": rng.choice(["x", "y"], size=n), "b": rng.choice(["p", "q", "r"], size=n)})

    result = evaluate(coarse(300), coarse(300), target=None, train=coarse(300))
    assert result.privacy.exact_match_rate == 1.0 and result.privacy.exact_match_baseline == 1.0
