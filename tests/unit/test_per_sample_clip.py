"""clip_and_noise, per_layer_clip_and_noise and poisson_batches: sensitivity, noise scale, sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from cadasg_dist.errors import ConfigError
from cadasg_dist.privacy import (
    clip_and_noise,
    per_layer_clip_and_noise,
    per_layer_noise_stds,
    per_layer_sensitivity,
    poisson_batches,
)


def _grads(batch: int = 8, scale: float = 10.0, seed: int = 0) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "w": scale * torch.randn(batch, 4, 3, generator=gen),
        "b": scale * torch.randn(batch, 4, generator=gen),
        "gain": scale * torch.randn(batch, generator=gen),  # a scalar parameter: (B,)
    }


def _flat_norm(tensors: dict[str, Tensor]) -> float:
    return math.sqrt(sum(float(t.pow(2).sum()) for t in tensors.values()))


def test_without_noise_each_example_contributes_at_most_the_clip_norm() -> None:
    grads = _grads()
    grads["w"][0] *= 1e-4  # one small example, left unclipped
    grads["b"][0] *= 1e-4
    grads["gain"][0] *= 1e-4
    clip = 1.5
    kwargs = {"max_grad_norm": clip, "noise_multiplier": 0.0, "generator": None, "expected_batch_size": 1}

    parts = [clip_and_noise({k: v[i : i + 1] for k, v in grads.items()}, **kwargs) for i in range(8)]
    total = clip_and_noise(grads, **kwargs)

    assert all(_flat_norm(p) <= clip * (1 + 1e-6) for p in parts)
    assert all(_flat_norm(p) == pytest.approx(clip, rel=1e-5) for p in parts[1:])  # big ones hit the bound
    torch.testing.assert_close(parts[0]["w"], grads["w"][0])
    for key in total:
        torch.testing.assert_close(total[key], sum(p[key] for p in parts))


def test_noise_has_std_sigma_c_over_expected_batch_size() -> None:
    zeros = {"w": torch.zeros(3, 200, 500)}  # 100k coordinates, no signal
    sigma, clip, expected = 2.0, 0.5, 4.0
    gen = torch.Generator().manual_seed(0)

    first = clip_and_noise(zeros, max_grad_norm=clip, noise_multiplier=sigma, generator=gen,
                           expected_batch_size=expected)["w"]
    second = clip_and_noise(zeros, max_grad_norm=clip, noise_multiplier=sigma, generator=gen,
                            expected_batch_size=expected)["w"]

    assert first.shape == (200, 500)
    assert not torch.equal(first, second)
    assert float(first.std()) == pytest.approx(sigma * clip / expected, rel=0.02)
    assert abs(float(first.mean())) < 0.01


def test_same_seed_same_noise_and_empty_batch_is_still_noised() -> None:
    empty = {"w": torch.zeros(0, 50, 50)}
    kwargs = {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "expected_batch_size": 10}

    a = clip_and_noise(empty, generator=torch.Generator().manual_seed(3), **kwargs)["w"]
    b = clip_and_noise(empty, generator=torch.Generator().manual_seed(3), **kwargs)["w"]

    torch.testing.assert_close(a, b)
    assert a.shape == (50, 50) and float(a.std()) == pytest.approx(0.1, rel=0.1)


def test_per_layer_clipping_bounds_each_layer_and_scales_noise() -> None:
    grads = _grads()
    thresholds = {"w": 2.0, "b": 0.5, "gain": 0.1}

    parts = [per_layer_clip_and_noise({k: v[i : i + 1] for k, v in grads.items()}, thresholds=thresholds,
                                      noise_multiplier=0.0, generator=None, expected_batch_size=1) for i in range(8)]

    for part in parts:
        for name, clip in thresholds.items():
            assert float(part[name].norm()) <= clip * (1 + 1e-6)
        assert _flat_norm(part) <= per_layer_sensitivity(thresholds) * (1 + 1e-6)

    zeros = {"w": torch.zeros(2, 300, 300), "b": torch.zeros(2, 300, 300)}
    thresholds = {"w": 2.0, "b": 0.5}
    gen = torch.Generator().manual_seed(1)
    noisy = per_layer_clip_and_noise(zeros, thresholds=thresholds, noise_multiplier=1.5, generator=gen,
                                     expected_batch_size=5)
    for name, clip in thresholds.items():
        assert float(noisy[name].std()) == pytest.approx(1.5 * math.sqrt(2) * clip / 5, rel=0.02)


def test_per_layer_noise_keeps_the_effective_multiplier() -> None:
    # Gaussian noise with covariance diag(std_l^2) and per-layer sensitivity C_l: the Mahalanobis
    # sensitivity sqrt(sum C_l^2 / std_l^2) must be 1/sigma for the ledger to record sigma as is.
    thresholds = {"a": 0.1, "b": 1.0, "c": 3.0, "d": 0.7}
    sigma = 1.3

    stds = per_layer_noise_stds(thresholds, noise_multiplier=sigma)

    mahalanobis = math.sqrt(sum(c**2 / stds[n] ** 2 for n, c in thresholds.items()))
    assert mahalanobis == pytest.approx(1 / sigma, rel=1e-12)
    assert per_layer_sensitivity(thresholds) == pytest.approx(math.sqrt(0.01 + 1 + 9 + 0.49))


def test_per_layer_thresholds_must_match_the_gradients() -> None:
    with pytest.raises(ConfigError, match="missing"):
        per_layer_clip_and_noise(_grads(), thresholds={"w": 1.0}, noise_multiplier=1.0, generator=None,
                                 expected_batch_size=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"expected_batch_size": 0}, "expected_batch_size"),
    ],
)
def test_clip_and_noise_rejects_bad_values(kwargs: dict, match: str) -> None:
    args = {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "generator": None, "expected_batch_size": 4, **kwargs}
    with pytest.raises(ConfigError, match=match):
        clip_and_noise(_grads(), **args)


def test_poisson_batches_have_mean_size_q_n() -> None:
    n_rows, q, steps = 5000, 0.04, 300
    gen = torch.Generator().manual_seed(0)

    batches = list(poisson_batches(n_rows, q, steps, gen))

    sizes = torch.tensor([len(b) for b in batches], dtype=torch.float64)
    assert len(batches) == steps
    assert float(sizes.mean()) == pytest.approx(q * n_rows, rel=0.02)
    assert float(sizes.std()) == pytest.approx(math.sqrt(n_rows * q * (1 - q)), rel=0.15)
    for b in batches[:20]:
        assert b.dtype == torch.int64 and len(torch.unique(b)) == len(b)
        assert int(b.min()) >= 0 and int(b.max()) < n_rows


def test_poisson_batches_can_be_empty_and_are_reproducible() -> None:
    sizes = [len(b) for b in poisson_batches(20, 0.01, 200, torch.Generator().manual_seed(5))]
    again = [len(b) for b in poisson_batches(20, 0.01, 200, torch.Generator().manual_seed(5))]

    assert 0 in sizes
    assert sizes == again


@pytest.mark.parametrize(("n_rows", "q", "steps"), [(0, 0.1, 1), (10, 0.0, 1), (10, 1.5, 1), (10, 0.1, -1)])
def test_poisson_batches_reject_bad_values(n_rows: int, q: float, steps: int) -> None:
    with pytest.raises(ConfigError):
        list(poisson_batches(n_rows, q, steps, None))
