"""Noise-aware Adam steps (privacy.max_step_scale): the scale follows the known noise, and is 1 without it."""

from __future__ import annotations

import math

import pytest
import torch

from cadasg_dist.privacy.step_scale import NoiseAwareSteps
from cadasg_dist.synthesizer import CADASG


def _adam(seed: int = 0, n: int = 2000) -> tuple[torch.nn.Parameter, torch.optim.Adam]:
    torch.manual_seed(seed)
    w = torch.nn.Parameter(torch.zeros(n))
    return w, torch.optim.Adam([w], lr=1e-2, betas=(0.5, 0.9))


def _run(w: torch.nn.Parameter, opt: torch.optim.Adam, signal: float, std: float, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        w.grad = signal + std * torch.randn(w.shape, generator=g)
        opt.step()


def test_without_noise_the_steps_are_adams():
    w, opt = _adam()
    plain, plain_opt = _adam()
    hooks = NoiseAwareSteps(opt, lambda: {id(w): 0.0}, max_scale=8.0)
    _run(w, opt, 0.01, 0.05, 50, seed=1)
    _run(plain, plain_opt, 0.01, 0.05, 50, seed=1)
    assert torch.equal(w, plain) and hooks.mean_scale() == 1.0


@pytest.mark.parametrize(("signal", "std"), [(0.01, 0.02), (0.01, 0.05)])
def test_scale_undoes_the_noise_in_adams_denominator(signal, std):
    w, opt = _adam()
    hooks = NoiseAwareSteps(opt, lambda: {id(w): std}, max_scale=100.0)
    _run(w, opt, signal, std, 400, seed=2)
    expected = math.sqrt((signal ** 2 + std ** 2) / signal ** 2)
    assert hooks.mean_scale() == pytest.approx(expected, rel=0.2)
    # along the signal, the scaled steps move about as far as noiseless Adam's (lr per step)
    clean, clean_opt = _adam()
    _run(clean, clean_opt, signal, 0.0, 400, seed=2)
    assert float(w.detach().mean()) == pytest.approx(float(clean.detach().mean()), rel=0.25)


def test_scale_is_capped_and_removable():
    w, opt = _adam()
    hooks = NoiseAwareSteps(opt, lambda: {id(w): 1.0}, max_scale=3.0)
    _run(w, opt, 0.001, 1.0, 200, seed=3)
    assert hooks.mean_scale() == pytest.approx(3.0)
    hooks.remove()
    before = w.detach().clone()
    _run(w, opt, 0.001, 1.0, 1, seed=4)
    # a plain Adam step again: at most lr·(1 − β₁)/sqrt(1 − β₂) per coordinate
    assert float((w - before).abs().max()) <= 1e-2 * 0.5 / math.sqrt(0.1) * 1.01


def test_scale_below_one_is_refused():
    w, opt = _adam()
    with pytest.raises(ValueError, match="max_scale"):
        NoiseAwareSteps(opt, dict, max_scale=0.5)


def test_private_fit_scales_its_steps_within_the_budget(mixed_table, tiny_config):
    from tests.unit.test_dp_training import BOUNDED, DECLARED

    cfg = tiny_config.replace(**{"privacy.epsilon": 4.0, "privacy.max_step_scale": 4.0,
                                 "data.columns": {**DECLARED, "score": BOUNDED["score"]}})
    model = CADASG(cfg).fit(mixed_table)
    assert model.ledger.epsilon() <= 4.0
    scales = [h["step_scale_critic"] for h in model.history]
    assert all(1.0 <= s <= 4.0 for s in scales) and max(scales) > 1.0
    assert {"step_scale_generator", "step_scale_utility"} <= set(model.history[-1])
