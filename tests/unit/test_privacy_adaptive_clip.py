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


# --- per-layer adaptive clipping -----------------------------------------------------------------
def _clipper(names=("w", "b"), clip=1.0, count_std=5.0, rate=0.2):
    from cadasg_dist.privacy.adaptive import PerLayerAdaptiveClipper

    return PerLayerAdaptiveClipper(list(names), clip=clip, target_quantile=0.5, learning_rate=rate,
                                   count_noise_std=count_std)


def test_per_layer_counts_and_gradients_compose_to_the_calibrated_multiplier() -> None:
    clipper = _clipper(names=("a", "b", "c"))
    z = 1.3
    sigma_g = clipper.gradient_noise(z)
    # whitened sensitivity: gradient part 1/σ_g, three counts of sensitivity 1/2 with noise σ_b each
    assert math.sqrt(sigma_g**-2 + 3 * 0.25 / 5.0**2) == pytest.approx(1 / z, rel=1e-12)
    assert clipper.thresholds == pytest.approx({"a": 1 / math.sqrt(3), "b": 1 / math.sqrt(3), "c": 1 / math.sqrt(3)})


def test_per_layer_thresholds_track_each_tensors_median_norm() -> None:
    gen = torch.Generator().manual_seed(0)
    clipper = _clipper(count_std=1.0, rate=0.3)
    for _ in range(200):
        # per-example norms: "w" around 4, "b" around 0.05 (a bias much smaller than its weight)
        grads = {"w": 4.0 * torch.rand(200, 3, 3, generator=gen) * 2 / 3, "b": 0.05 * torch.rand(200, 2, generator=gen)}
        clipper.release(grads, noise_multiplier=1.0, generator=gen, expected_batch_size=200)
    med_w = float(grads["w"].reshape(200, -1).norm(dim=1).median())
    med_b = float(grads["b"].norm(dim=1).median())
    assert clipper.thresholds["w"] == pytest.approx(med_w, rel=0.15)
    assert clipper.thresholds["b"] == pytest.approx(med_b, rel=0.15)
    # the noise of the last release scales with each tensor's own threshold
    assert clipper.last_stds["w"] / clipper.last_stds["b"] == pytest.approx(med_w / med_b, rel=0.4)


def test_per_layer_clipping_is_refused_on_ray_workers(tiny_config) -> None:
    with pytest.raises(ConfigError, match="per_layer"):
        tiny_config.replace(**{"privacy.clipping": "per_layer", "distributed.num_workers": 2})
