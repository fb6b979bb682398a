"""Adaptive clipping (Andrew et al. 2021): the combined noise keeps the multiplier, C tracks the quantile."""

from __future__ import annotations

import math

import pytest
import torch

from cadasg_dist.errors import ConfigError
from cadasg_dist.privacy import adaptive_clip_update, gradient_noise_for_adaptive_clipping, per_example_norms


def test_gradient_and_count_noise_compose_to_the_calibrated_multiplier() -> None:
    z, count_std = 1.1, 5.0

    sigma_g = gradient_noise_for_adaptive_clipping(noise_multiplier=z, count_noise_std=count_std)

    # Mahalanobis sensitivity of (gradient sum / C, centred count): sqrt(1/σ_g² + (1/2)²/σ_b²) = 1/z.
    assert math.sqrt(sigma_g**-2 + 0.25 / count_std**2) == pytest.approx(1 / z, rel=1e-12)
    assert sigma_g > z


def test_too_little_count_noise_raises() -> None:
    with pytest.raises(ConfigError, match="count_noise_std"):
        gradient_noise_for_adaptive_clipping(noise_multiplier=2.0, count_noise_std=1.0)


def test_per_example_norms_is_the_global_norm() -> None:
    grads = {"w": torch.tensor([[[3.0]], [[0.0]]]), "b": torch.tensor([[4.0, 0.0], [0.0, 2.0]]), "s": torch.ones(2)}

    torch.testing.assert_close(per_example_norms(grads), torch.tensor([math.sqrt(26.0), math.sqrt(5.0)]))


def test_noiseless_update_converges_to_the_target_quantile() -> None:
    gen = torch.Generator().manual_seed(0)
    clip = 0.1
    for _ in range(400):
        norms = 10 * torch.rand(200, generator=gen)  # uniform on [0, 10]: quantile 0.3 is 3.0
        clip = adaptive_clip_update(norms, clip=clip, target_quantile=0.3, learning_rate=0.2, count_noise_std=0.0,
                                    generator=None, expected_batch_size=200)

    assert clip == pytest.approx(3.0, rel=0.1)


def test_noisy_update_is_random_but_seeded() -> None:
    norms = torch.linspace(0, 2, 50)
    kwargs = {"clip": 1.0, "target_quantile": 0.5, "learning_rate": 0.2, "count_noise_std": 2.5,
              "expected_batch_size": 50}

    a = adaptive_clip_update(norms, generator=torch.Generator().manual_seed(1), **kwargs)
    b = adaptive_clip_update(norms, generator=torch.Generator().manual_seed(1), **kwargs)
    c = adaptive_clip_update(norms, generator=torch.Generator().manual_seed(2), **kwargs)

    assert a == b and a != c
    assert 0.5 < a < 2.0


@pytest.mark.parametrize(("kwargs", "match"), [({"target_quantile": 1.0}, "target_quantile"), ({"clip": 0.0}, "clip")])
def test_update_rejects_bad_values(kwargs: dict, match: str) -> None:
    args = {"clip": 1.0, "target_quantile": 0.5, "learning_rate": 0.2, "count_noise_std": 1.0, "generator": None,
            "expected_batch_size": 10, **kwargs}
    with pytest.raises(ConfigError, match=match):
        adaptive_clip_update(torch.ones(3), **args)
