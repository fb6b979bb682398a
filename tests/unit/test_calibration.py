"""Marginal calibration (cadasg_dist/model/calibration.py): the corrections themselves, the
frequencies the private preprocessing releases for them, and sampling with them on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from cadasg_dist.model.calibration import _interp_linear_ends, normal_score_map, prior_shift
from cadasg_dist.privacy.preprocessing import released_frequencies
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
    from cadasg_dist.privacy.preprocessing import prepare_private

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
