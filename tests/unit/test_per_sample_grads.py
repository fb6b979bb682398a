"""per_sample_grads equals a per-example autograd loop, gradient penalty (double backward) included."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from cadasg_dist.errors import ConfigError
from cadasg_dist.privacy import FunctionalModule, input_gradient, per_sample_grads
from cadasg_dist.privacy.per_sample import GradBuffers

GP_WEIGHT = 10.0
BATCH, WIDTH = 6, 5


def _critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(WIDTH, 16), nn.LayerNorm(16), nn.LeakyReLU(0.2), nn.Linear(16, 1))


def _batch() -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(BATCH, WIDTH, generator=gen)  # (B, D)
    fake = torch.randn(BATCH, WIDTH, generator=gen)  # (B, D)
    alpha = torch.rand(BATCH, 1, generator=gen)  # (B, 1): one interpolation weight per example
    return real, fake, alpha


def critic_example_loss(call: FunctionalModule, real: Tensor, fake: Tensor, alpha: Tensor) -> Tensor:
    """-D(x_i) + λ (‖∇_x̃ D(x̃_i)‖ - 1)², x̃_i = a_i x_i + (1 - a_i) f_i; sample tensors have no batch dim."""
    mixed = alpha * real + (1 - alpha) * fake  # (D,)
    slope = input_gradient(lambda z: call(z.unsqueeze(0)), mixed)  # (D,)
    return -call(real.unsqueeze(0)).squeeze() + GP_WEIGHT * (slope.norm() - 1) ** 2


def _reference_loop(critic: nn.Module, real: Tensor, fake: Tensor, alpha: Tensor) -> dict[str, list[Tensor]]:
    """The textbook way: one example at a time, torch.autograd.grad with create_graph=True."""
    params = dict(critic.named_parameters())
    out: dict[str, list[Tensor]] = {n: [] for n in params}
    for i in range(real.shape[0]):
        mixed = (alpha[i] * real[i] + (1 - alpha[i]) * fake[i]).detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(critic(mixed.unsqueeze(0)).sum(), mixed, create_graph=True)
        loss = -critic(real[i].unsqueeze(0)).squeeze() + GP_WEIGHT * (slope.norm() - 1) ** 2
        for name, g in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
            out[name].append(g)
    return out


def test_gradient_penalty_per_sample_grads_equal_the_loop() -> None:
    critic = _critic()
    real, fake, alpha = _batch()

    grads = per_sample_grads(critic, critic_example_loss, real, fake, alpha)
    expected = _reference_loop(critic, real, fake, alpha)

    assert set(grads) == {n for n, _ in critic.named_parameters()}
    for name, param in critic.named_parameters():
        assert grads[name].shape == (BATCH, *param.shape)
        torch.testing.assert_close(grads[name], torch.stack(expected[name]), atol=1e-5, rtol=1e-5)


def test_chunks_in_a_pool_equal_vmaps_chunks_and_the_pool_is_reused() -> None:
    """The gradient penalty's double backward, chunked into reused memory: the same numbers as
    vmap's own chunking (to the bit) and as the per-example loop; the pool's buffer is kept."""
    critic = _critic()
    real, fake, alpha = _batch()
    pool = GradBuffers()
    mine = per_sample_grads(critic, critic_example_loss, real, fake, alpha, chunk_size=4, pool=pool)
    plain = per_sample_grads(critic, critic_example_loss, real, fake, alpha, chunk_size=4)
    expected = _reference_loop(critic, real, fake, alpha)
    params = dict(critic.named_parameters())
    vmapped = vmap(grad(lambda p, *s: critic_example_loss(FunctionalModule(critic, p), *s)),
                   in_dims=(None, 0, 0, 0), chunk_size=4)({n: p.detach() for n, p in params.items()}, real, fake, alpha)
    for name in params:
        assert torch.equal(mine[name], vmapped[name]) and torch.equal(plain[name], vmapped[name])
        torch.testing.assert_close(mine[name], torch.stack(expected[name]), atol=1e-5, rtol=1e-5)
    buffer = pool.flat
    again = per_sample_grads(critic, critic_example_loss, real[:5], fake[:5], alpha[:5], chunk_size=4, pool=pool)
    assert pool.flat is buffer  # fewer rows: the same memory, no new allocation
    for name in params:  # chunks of 4 and 1 rows here: batched kernels may round differently, so close
        torch.testing.assert_close(again[name], vmapped[name][:5], atol=1e-6, rtol=1e-6)


def test_loop_method_accepts_torch_autograd_grad() -> None:
    critic = _critic()
    real, fake, alpha = _batch()

    def autograd_loss(call: FunctionalModule, real: Tensor, fake: Tensor, alpha: Tensor) -> Tensor:
        mixed = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(call(mixed.unsqueeze(0)).sum(), mixed, create_graph=True)
        return -call(real.unsqueeze(0)).squeeze() + GP_WEIGHT * (slope.norm() - 1) ** 2

    looped = per_sample_grads(critic, autograd_loss, real, fake, alpha, method="loop")
    vmapped = per_sample_grads(critic, critic_example_loss, real, fake, alpha)

    for name in vmapped:
        torch.testing.assert_close(looped[name], vmapped[name], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="method='loop'"):
        per_sample_grads(critic, autograd_loss, real, fake, alpha)


def test_vae_loss_through_encoder_and_decoder_of_a_module_dict() -> None:
    torch.manual_seed(2)
    latent = 3
    vae = nn.ModuleDict({
        "encoder": nn.Sequential(nn.Linear(WIDTH, 16), nn.LeakyReLU(0.2), nn.Linear(16, 2 * latent)),
        "decoder": nn.Sequential(nn.Linear(latent, 16), nn.LeakyReLU(0.2), nn.Linear(16, WIDTH)),
        "unused": nn.Linear(2, 2),
    })
    x = torch.randn(BATCH, WIDTH)
    noise = torch.randn(BATCH, latent)  # reparameterisation noise, passed in for determinism

    def vae_example_loss(call: FunctionalModule, x: Tensor, noise: Tensor) -> Tensor:
        mu, logvar = call["encoder"](x.unsqueeze(0)).chunk(2, dim=-1)  # (1, K) each
        z = mu + torch.exp(0.5 * logvar) * noise
        recon = call["decoder"](z).squeeze(0)  # (D,)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum()
        return (recon - x).pow(2).sum() + 0.1 * kl

    grads = per_sample_grads(vae, vae_example_loss, x, noise)

    for i in range(BATCH):
        vae.zero_grad()
        mu, logvar = vae["encoder"](x[i : i + 1]).chunk(2, dim=-1)
        recon = vae["decoder"](mu + torch.exp(0.5 * logvar) * noise[i : i + 1]).squeeze(0)
        loss = (recon - x[i]).pow(2).sum() + 0.1 * 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum()
        loss.backward()
        for name, param in vae.named_parameters():
            expected = torch.zeros_like(param) if param.grad is None else param.grad
            torch.testing.assert_close(grads[name][i], expected, atol=1e-5, rtol=1e-5)
    assert grads["unused.weight"].abs().max() == 0


def test_frozen_parameters_are_left_out() -> None:
    critic = _critic()
    critic[0].weight.requires_grad_(False)

    grads = per_sample_grads(critic, critic_example_loss, *_batch())

    assert "0.weight" not in grads and "0.bias" in grads


def test_empty_batch_gives_empty_gradients() -> None:
    critic = _critic()
    real, fake, alpha = (t[:0] for t in _batch())

    grads = per_sample_grads(critic, critic_example_loss, real, fake, alpha)

    assert grads["3.weight"].shape == (0, 1, 16)


def test_batchnorm_is_refused() -> None:
    critic = nn.Sequential(nn.Linear(WIDTH, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    with pytest.raises(ConfigError, match="BatchNorm1d"):
        per_sample_grads(critic, critic_example_loss, *_batch())


def test_mismatched_batch_sizes_and_non_scalar_loss_are_refused() -> None:
    critic = _critic()
    real, fake, alpha = _batch()
    with pytest.raises(ConfigError, match="leading batch dimension"):
        per_sample_grads(critic, critic_example_loss, real, fake[:2], alpha)
    with pytest.raises(ConfigError, match="scalar"):
        per_sample_grads(critic, lambda call, x: call(x.unsqueeze(0)), real)
