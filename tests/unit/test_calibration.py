"""Marginal calibration (cadasg_dist/model/calibration.py and histograms.py): the corrections
themselves, the frequencies the private preprocessing releases for them, and sampling with them on."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from cadasg_dist.errors import ConfigError
from cadasg_dist.model.calibration import (
    _interp_linear_ends,
    cell_score_map,
    normal_score_map,
    prior_shift,
    shrink_to_model,
)
from cadasg_dist.model.histograms import (
    CLASS_CELLS,
    CONTEXT_EDGES,
    class_counts,
    class_key,
    context_counts,
    normal_cells,
)
from cadasg_dist.private.prepare import prepare_private
from cadasg_dist.private.releases import released_frequencies
from cadasg_dist.synthesizer import CADASG


def test_prior_shift_makes_the_mean_probability_equal_the_target():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(5000, 4, generator=g, dtype=torch.float64) * 2, dim=1)
    target = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    r = prior_shift(probs, target)
    shifted = probs * r.double()
    mean = (shifted / shifted.sum(1, keepdim=True)).mean(0)
    torch.testing.assert_close(mean, target, atol=2e-3, rtol=0)
    # each row keeps the order of its preferences between two categories with equal factors' ratio
    assert torch.all((r > 0) & (r <= 1))


def test_prior_shift_keeps_a_category_the_release_zeroed_possible():
    probs = torch.full((1000, 3), 1 / 3, dtype=torch.float64)
    r = prior_shift(probs, torch.tensor([0.5, 0.5, -3.0], dtype=torch.float64))  # a noisy count below 0
    assert float(r[2]) > 0


def test_normal_score_map_sends_a_skewed_sample_to_standard_normal():
    rng = np.random.default_rng(0)
    values = rng.exponential(size=20_000) * 3 - 1
    x, y = normal_score_map(values, None)
    mapped = _interp_linear_ends(values, x, y)
    assert np.all(np.diff(y) > 0) and np.all(np.diff(x) > 0)
    assert stats.kstest(mapped, "norm").statistic < 0.01
    fresh = rng.exponential(size=5000) * 3 - 1  # the map is fixed: new draws of the same law follow
    assert stats.kstest(_interp_linear_ends(fresh, x, y), "norm").statistic < 0.03
    # ranks (so the dependence with other columns) are kept, also beyond the end knots
    wide = np.r_[values, -50.0, 500.0]
    assert np.all(np.diff(_interp_linear_ends(np.sort(wide), x, y)) >= 0)


def test_a_tie_maps_to_the_middle_of_its_share():
    rng = np.random.default_rng(2)
    values = np.r_[np.zeros(10_000), rng.uniform(1, 2, size=10_000)]  # half the mass on one value
    x, y = normal_score_map(values, None)
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)
    # the tie sits at the mean normal score of the lower half, -2 phi(0), not at the lowest level's
    assert _interp_linear_ends(np.zeros(1), x, y)[0] == pytest.approx(-2 * stats.norm.pdf(0), abs=0.02)
    assert np.mean(_interp_linear_ends(values, x, y)) == pytest.approx(0.0, abs=0.02)
    assert np.mean(_interp_linear_ends(values[10_000:], x, y) >= 0) > 0.99  # the rest sits above the median


def test_weights_leave_out_the_values_that_will_not_be_decoded():
    rng = np.random.default_rng(1)
    values = np.r_[np.zeros(5000), rng.normal(size=5000)]  # the atom's rows sit at 0
    weights = np.r_[np.zeros(5000), np.ones(5000)]
    x, y = normal_score_map(values, weights)
    assert stats.kstest(_interp_linear_ends(values[5000:], x, y), "norm").statistic < 0.02


def test_released_frequencies_follow_the_transform_code_order():
    # noisy histogram: [missing, a, b, c]; codes: a, b, c, then the missing slot
    np.testing.assert_allclose(released_frequencies(np.array([10.0, 50.0, -4.0, 40.0]), True),
                               [0.5, 0.0, 0.4, 0.1])
    np.testing.assert_allclose(released_frequencies(np.array([3.0, 30.0, 10.0]), False), [0.75, 0.25])


def test_private_preprocessing_releases_category_frequencies(mixed_table, tiny_config):
    cfg = tiny_config.replace(**{"privacy.epsilon": 4.0, "data.columns": {
        "group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]}}})
    prep = prepare_private(mixed_table, cfg, rng=np.random.default_rng(0))
    t = prep.transformer.transforms["label"]
    real = mixed_table["label"].value_counts(normalize=True)
    assert len(t.frequencies) == t.width and abs(sum(t.frequencies) - 1) < 1e-9
    assert abs(t.frequencies[t.categories.index("yes")] - real["yes"]) < 0.1  # noisy, but near
    assert "label.frequencies" in prep.released["preprocess/histograms"]


def test_calibrated_sampling_matches_released_marginals_and_stays_deterministic(mixed_table, tiny_config, tmp_path):
    model = CADASG(tiny_config.replace(**{"target": None})).fit(mixed_table)
    raw_model = CADASG.load(model.save(tmp_path / "m"))
    raw_model.config = raw_model.config.replace(**{"model.calibrate_marginals": "off"})
    calibrated, raw = model.sample(4000, seed=3), raw_model.sample(4000, seed=3)
    real = mixed_table["label"].value_counts(normalize=True)
    err = {name: (rows["label"].value_counts(normalize=True) - real).abs().max()
           for name, rows in (("calibrated", calibrated), ("raw", raw))}
    assert err["calibrated"] < 0.03 and err["calibrated"] <= err["raw"] + 1e-9
    ks = {name: stats.ks_2samp(rows["score"], mixed_table["score"]).statistic
          for name, rows in (("calibrated", calibrated), ("raw", raw))}
    assert ks["calibrated"] < 0.06 and ks["calibrated"] <= ks["raw"] + 0.01
    # the correction is a function of the model: a loaded copy gives the same rows
    again = CADASG.load(tmp_path / "m").sample(4000, seed=3)
    pd.testing.assert_frame_equal(calibrated, again)


# --- per-class calibration ----------------------------------------------------------------------

def test_cell_score_map_puts_the_given_shares_in_the_normal_cells():
    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, size=20_000)
    shares = np.array([0.02, 0.03, 0.05, 0.1, 0.1, 0.2, 0.2, 0.3])
    x, y = cell_score_map(values, np.ones(len(values)), shares)
    mapped = _interp_linear_ends(values, x, y)
    np.testing.assert_allclose(np.bincount(normal_cells(mapped), minlength=CLASS_CELLS) / len(values), shares,
                               atol=0.006)
    assert np.all(np.diff(y) > 0)  # monotone: ranks are kept


def test_shrinkage_takes_exact_counts_and_distrusts_counts_drowned_in_noise():
    own, truth = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(shrink_to_model(1000 * truth, own, std=0.0), truth)
    # a noise sd far above the gap between the model and the counts: the model's own shares stay
    np.testing.assert_allclose(shrink_to_model(1000 * truth, own, std=1e5), own, atol=1e-3)
    # noise small beside the gap: close to the counts
    assert np.abs(shrink_to_model(1000 * truth, own, std=5.0) - truth).max() < 0.01


def test_class_counts_split_every_other_column_by_the_target_class(mixed_table, tiny_config):
    model = CADASG(tiny_config.replace(**{"model.calibrate_classes": True}))
    prepared = model.prepare(mixed_table)
    x, dims = prepared.x, prepared.dims
    counts = class_counts(x, model.transformer, dims)
    t = model.transformer.transforms
    assert set(counts) == {class_key(s) for s in model.transformer.spans if s.column != "label"}
    assert "count.atom" in counts  # a numeric column's atom share is counted by class too
    labels = t["label"].categories
    for c, name in enumerate(labels):  # a categorical column: its slots' counts among the class's rows
        rows = mixed_table["label"] == name
        assert counts["flag"][c].sum() == rows.sum()
        assert counts["flag"][c][t["flag"].categories.index(True)] == (mixed_table["flag"] & rows).sum()
    # a continuous column counts only the rows whose value is decoded (not its atom at 0)
    assert counts["count"].sum() == (mixed_table["count"] != 0).sum()
    assert counts["score"].shape == (len(labels), CLASS_CELLS)
    # stored on the transformer for the calibration, exactly (std 0) in a non-private fit
    assert model.transformer.class_marginals["std"] == 0.0


def test_sampling_follows_each_class_distribution(mixed_table, tiny_config, tmp_path):
    """A 2-epoch model has not learnt how score moves with the label; the per-class calibration
    puts it back (the real mean score differs by about 3 between the classes)."""
    model = CADASG(tiny_config.replace(**{"model.calibrate_classes": True})).fit(mixed_table)
    plain = CADASG.load(model.save(tmp_path / "m"))
    plain.config = plain.config.replace(**{"model.calibrate_classes": False})
    real = mixed_table.groupby("label")["score"].mean()
    gap = {}
    for name, m in (("classes", model), ("plain", plain)):
        rows = m.sample(4000, seed=5)
        gap[name] = float((rows.groupby("label")["score"].mean() - real).abs().max())
    assert gap["classes"] < 0.3 and gap["classes"] < gap["plain"] / 2, gap
    again = CADASG.load(tmp_path / "m").sample(4000, seed=5)  # deterministic, also after loading
    pd.testing.assert_frame_equal(model.sample(4000, seed=5), again)


def test_a_numeric_target_splits_the_histograms_by_its_value_bin(mixed_table, tiny_config):
    """No classes to split by: the strata are the target's equal-mass value bins."""
    model = CADASG(tiny_config.replace(**{"target": "score", "model.calibrate_classes": True}))
    prepared = model.prepare(mixed_table)
    x, dims = prepared.x, prepared.dims
    assert dims.strata == tiny_config.model.target_bins == 5 and dims.strata_span is None
    counts = class_counts(x, model.transformer, dims)
    assert "score" not in counts and counts["flag"].shape == (5, 2)
    rows_per_bin = counts["flag"].sum(1)  # every row in one bin, about a fifth in each
    assert rows_per_bin.sum() == len(mixed_table)
    np.testing.assert_allclose(rows_per_bin / len(mixed_table), 0.2, atol=0.03)
    # the bins are the score's quintiles: the label's share in each is the real one
    yes = model.transformer.transforms["label"].categories.index("yes")
    quintile = pd.qcut(mixed_table["score"], 5, labels=False)
    real = (mixed_table["label"] == "yes").groupby(quintile).mean().to_numpy()
    np.testing.assert_allclose(counts["label"][:, yes] / rows_per_bin, real, atol=0.05)
    assert real[0] < 0.1 and real[-1] > 0.8


def test_sampling_follows_each_value_bin_of_a_numeric_target(mixed_table, tiny_config, tmp_path):
    """A 2-epoch model has not learnt how the label moves with score; the per-bin calibration puts
    it back."""
    model = CADASG(tiny_config.replace(**{"target": "score", "model.calibrate_classes": True})).fit(mixed_table)
    plain = CADASG.load(model.save(tmp_path / "m"))
    plain.config = plain.config.replace(**{"model.calibrate_classes": False})
    edges = np.quantile(mixed_table["score"], [0.2, 0.4, 0.6, 0.8])

    def yes_by_bin(df: pd.DataFrame) -> np.ndarray:
        return (df["label"] == "yes").groupby(np.searchsorted(edges, df["score"])).mean().to_numpy()

    real = yes_by_bin(mixed_table)
    gap = {name: float(np.abs(yes_by_bin(m.sample(4000, seed=5)) - real).max())
           for name, m in (("bins", model), ("plain", plain))}
    assert gap["bins"] < 0.15 and gap["bins"] < gap["plain"] / 2, gap


def test_private_class_histograms_are_one_charged_release_with_the_stated_noise(mixed_table, tiny_config):
    declared = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]}}
    cfg = tiny_config.replace(**{"privacy.epsilon": 4.0, "data.columns": declared,
                                 "model.calibrate_classes": True})
    noisy = [prepare_private(mixed_table, cfg, rng=np.random.default_rng(seed)) for seed in range(16)]
    prep = noisy[0]
    release = prep.transformer.class_marginals
    (mech,) = [m for m in prep.ledger.mechanisms if m.name == "preprocess/class_marginals"]
    assert mech.sensitivity == pytest.approx(np.sqrt(len(release["counts"])))
    assert release["std"] == pytest.approx(mech.noise_multiplier * mech.sensitivity)
    assert set(prep.released["preprocess/class_marginals"]) == {f"{c}.by_label" for c in release["counts"]}
    # repeated releases on the same rows differ with the stated sd (the flag column's exact counts
    # are the same in every run; a run whose noisy release found missing values adds a slot after them)
    # (a run whose noisy release gave the target a missing slot has a third stratum: left out here)
    same = [p for p in noisy if p.dims.strata == 2]
    assert len(same) >= 12
    cells = np.array([np.array(p.transformer.class_marginals["counts"]["flag"])[:, :2] for p in same])
    cells = cells.reshape(len(same), -1)
    assert np.std(cells, axis=0).mean() == pytest.approx(release["std"], rel=0.3)
    # switched off: no release, no charge
    off = prepare_private(mixed_table, cfg.replace(**{"model.calibrate_classes": False}), rng=np.random.default_rng(0))
    assert off.transformer.class_marginals is None
    assert all(m.name != "preprocess/class_marginals" for m in off.ledger.mechanisms)


def test_a_private_numeric_target_releases_one_histogram_per_value_bin(mixed_table, tiny_config):
    declared = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]}}
    cfg = tiny_config.replace(**{"target": "score", "privacy.epsilon": 4.0, "data.columns": declared,
                                 "model.calibrate_classes": True})
    prep = prepare_private(mixed_table, cfg, rng=np.random.default_rng(0))
    release = prep.transformer.class_marginals
    (mech,) = [m for m in prep.ledger.mechanisms if m.name == "preprocess/class_marginals"]
    # a row per value bin (times two where the noisy release found score missing: its indicator
    # is a stratum too), the target itself left out; a row is in one, so the sensitivity is sqrt(T)
    strata, slots = np.shape(release["counts"]["label"])
    assert "score" not in release["counts"] and strata in (5, 10) and slots == 2
    assert mech.sensitivity == pytest.approx(np.sqrt(len(release["counts"])))
    assert release["std"] == pytest.approx(mech.noise_multiplier * mech.sensitivity) and release["std"] > 0
    assert set(prep.released["preprocess/class_marginals"]) == {f"{c}.by_score" for c in release["counts"]}


def test_a_thin_target_class_shares_a_stratum_with_a_neighbour_under_dp(mixed_table, tiny_config, tmp_path):
    df = mixed_table.copy()
    df.loc[df.index[:12], "label"] = "rare"  # 12 rows over 3 contexts: under one noise sd per context
    declared = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "rare", "yes"]}}
    cfg = tiny_config.replace(**{"privacy.epsilon": 4.0, "privacy.delta": 1e-5, "data.columns": declared,
                                 "model.calibrate_classes": True})
    model = CADASG(cfg).fit(df)
    dims = model.nets.dims
    groups = list(dims.class_groups)
    assert groups in ([0, 0, 1], [0, 1, 1])  # "rare" (code 1) joined a neighbour, chosen from released shares
    assert dims.strata == 2 and model.cache.strata == 2
    assert np.shape(model.transformer.class_marginals["counts"]["flag"])[0] == 2  # one histogram per group
    rows = model.sample(3000, seed=1)
    assert set(rows["label"]) <= {"no", "rare", "yes"} and (rows["label"] == "rare").any()  # the decoder's choice
    # ... which the calibration moves onto the released class shares inside the merged group
    merged = np.asarray(groups) == max(set(groups), key=groups.count)
    cells = model.cell_allocation(4000, None, np.random.default_rng(0))
    probs = model.feature_probs(cells, np.random.default_rng(0))
    span = dims.strata_span
    inside = probs[dims.stratum_np(probs) == groups[int(np.argmax(merged))], span.start:span.stop].mean(0)
    released = np.asarray(model.transformer.transforms["label"].frequencies)[merged]
    assert np.allclose(inside[merged], released / released.sum(), atol=0.02)
    again = CADASG.load(model.save(tmp_path / "m"))  # the groups are part of the artifact, once
    assert again.nets.dims == dims
    assert "class_groups" not in json.loads((tmp_path / "m" / "transformer.json").read_text())
    pd.testing.assert_frame_equal(again.sample(500, seed=2), model.sample(500, seed=2))
    plain = CADASG(tiny_config.replace(**{"data.columns": declared})).fit(df)  # exact: no merging
    assert plain.nets.dims.class_groups is None and plain.nets.dims.strata == 3
    never = prepare_private(df, cfg.replace(**{"privacy.merge_class_sds": 0.0}), rng=np.random.default_rng(0))
    assert never.dims.class_groups is None  # switched off
    with pytest.raises(ConfigError, match="privacy.merge_class_sds must be >= 0"):
        cfg.replace(**{"privacy.merge_class_sds": -1.0})


def test_class_marginals_share_is_validated():
    from cadasg_dist.config import CADASGConfig
    from cadasg_dist.errors import ConfigError

    with pytest.raises(ConfigError, match="class_marginals_share"):
        CADASGConfig().replace(**{"privacy.class_marginals_share": 0.85})


def test_a_private_fit_with_the_class_release_stays_inside_epsilon(mixed_table, tiny_config):
    declared = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]}}
    cfg = tiny_config.replace(**{"privacy.epsilon": 4.0, "privacy.delta": 1e-5, "data.columns": declared,
                                 "model.calibrate_classes": True})
    model = CADASG(cfg).fit(mixed_table)
    names = [m.name for m in model.ledger.mechanisms]
    assert "preprocess/class_marginals" in names
    assert model.epsilon <= 4.0
    rows = model.sample(500, seed=1)
    assert len(rows) == 500 and model._calibration.strata is not None


# --- per-context calibration --------------------------------------------------------------------

def test_context_cells_resolve_a_context_that_lives_in_the_tail():
    """Diamonds' Fair has its median depth at the 98th percentile of all rows: one of the class
    histograms' equal-probability cells, several of the context histograms' equal-width ones."""
    scores = np.random.default_rng(0).normal(2.2, 0.3, size=2000)
    assert np.mean(normal_cells(scores) == CLASS_CELLS - 1) > 0.99
    assert len(np.unique(normal_cells(scores, CONTEXT_EDGES))) >= 6
    shares = np.bincount(normal_cells(scores, CONTEXT_EDGES), minlength=len(CONTEXT_EDGES) + 1) / len(scores)
    x, y = cell_score_map(np.random.default_rng(1).normal(size=20_000), np.ones(20_000), shares, CONTEXT_EDGES)
    mapped = _interp_linear_ends(np.random.default_rng(2).normal(size=20_000), x, y)
    assert abs(np.median(mapped) - 2.2) < 0.05 and abs(np.std(mapped) - 0.3) < 0.05


def _shifted(mixed_table):
    """The mixed table with the rare group's score moved up by 6 (about 3 sd)."""
    df = mixed_table.copy()
    df.loc[df["group"] == "rare", "score"] += 6.0
    return df


def test_context_counts_split_every_column_but_the_pinned_target_by_context(mixed_table, tiny_config):
    model = CADASG(tiny_config.replace(**{"model.calibrate_contexts": True}))
    prepared = model.prepare(mixed_table)
    x, ids, dims = prepared.x, prepared.ids, prepared.dims
    counts = context_counts(x, model.transformer, ids, model.extractor.n_contexts, dims.strata_span.column)
    assert set(counts) == {class_key(s) for s in model.transformer.spans if s.column != "label"}
    flag = model.transformer.transforms["flag"].categories.index(True)
    for g in range(model.extractor.n_contexts):
        rows = ids == g
        assert counts["flag"][g].sum() == rows.sum()
        assert counts["flag"][g][flag] == (mixed_table["flag"].to_numpy() & rows).sum()
    assert counts["score"].shape == (model.extractor.n_contexts, len(CONTEXT_EDGES) + 1)
    assert model.transformer.context_marginals["std"] == 0.0  # exact in a non-private fit
    assert set(model.transformer.context_marginals["counts"]) == set(counts)


def test_sampling_follows_each_context_distribution(mixed_table, tiny_config, tmp_path):
    """A 2-epoch model has not learnt that the rare group (5 % of rows) scores 6 higher; the
    per-context calibration puts it there, and leaves sampling deterministic."""
    df = _shifted(mixed_table)
    model = CADASG(tiny_config.replace(**{"model.calibrate_contexts": True})).fit(df)
    plain = CADASG.load(model.save(tmp_path / "m"))
    plain.config = plain.config.replace(**{"model.calibrate_contexts": False})  # the switch alone turns it off
    real = df.groupby("group")["score"].median()
    gap = {}
    for name, m in (("contexts", model), ("plain", plain)):
        rows = m.sample(20_000, seed=5)  # the rare group's median over ~1,000 rows, not a 2-sd draw over 300
        gap[name] = float((rows.groupby("group")["score"].median() - real).abs().max())
    assert gap["contexts"] < 0.5 and gap["contexts"] < gap["plain"] / 3, gap
    assert plain.transformer.context_marginals and not plain._calibration.context_maps
    again = CADASG.load(tmp_path / "m").sample(4000, seed=5)
    pd.testing.assert_frame_equal(model.sample(4000, seed=5), again)


def test_private_context_histograms_are_one_charged_release_with_the_stated_noise(mixed_table, tiny_config):
    declared = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]}}
    cfg = tiny_config.replace(**{"privacy.epsilon": 4.0, "data.columns": declared, "model.calibrate_contexts": True})
    auto = cfg.replace(**{"model.calibrate_contexts": "auto"})
    assert auto.replace(**{"privacy.epsilon": 3.0}).context_calibration  # "auto": on at epsilon <= 3 ...
    assert not auto.context_calibration and not auto.replace(**{"privacy.epsilon": math.inf}).context_calibration
    noisy = [prepare_private(mixed_table, cfg, rng=np.random.default_rng(seed)) for seed in range(16)]
    prep = noisy[0]
    release = prep.transformer.context_marginals
    (mech,) = [m for m in prep.ledger.mechanisms if m.name == "preprocess/context_marginals"]
    assert mech.sensitivity == pytest.approx(np.sqrt(len(release["counts"])))
    assert release["std"] == pytest.approx(mech.noise_multiplier * mech.sensitivity)
    assert set(prep.released["preprocess/context_marginals"]) == {f"{c}.by_context" for c in release["counts"]}
    assert "label" not in release["counts"]  # the pinned target's class shares come from the cache
    # (the declared groups' rows, and the flag's two slots: a run whose noisy release found missing
    # values adds a slot after them)
    flags = [np.array(p.transformer.context_marginals["counts"]["flag"])[:3, :2] for p in noisy]
    cells = np.array(flags).reshape(len(noisy), -1)
    assert np.std(cells, axis=0).mean() == pytest.approx(release["std"], rel=0.3)
    off = prepare_private(mixed_table, cfg.replace(**{"model.calibrate_contexts": "off"}), rng=np.random.default_rng(0))
    assert off.transformer.context_marginals is None
    assert all(m.name != "preprocess/context_marginals" for m in off.ledger.mechanisms)


def test_context_marginals_share_is_validated():
    from cadasg_dist.config import CADASGConfig
    from cadasg_dist.errors import ConfigError

    with pytest.raises(ConfigError, match="context_marginals_share"):
        CADASGConfig().replace(**{"privacy.context_marginals_share": 0.75})


def test_a_private_fit_with_the_context_release_stays_inside_epsilon(mixed_table, tiny_config):
    declared = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]}}
    cfg = tiny_config.replace(**{"privacy.epsilon": 4.0, "privacy.delta": 1e-5, "data.columns": declared,
                                 "model.calibrate_classes": True, "model.calibrate_contexts": True})
    model = CADASG(cfg).fit(_shifted(mixed_table))
    names = [m.name for m in model.ledger.mechanisms]
    assert "preprocess/context_marginals" in names and "preprocess/class_marginals" in names
    assert model.epsilon <= 4.0
    rows = model.sample(500, seed=1)
    assert len(rows) == 500 and model._calibration.context_maps
