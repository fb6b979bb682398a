"""Building a ``SamplingPack`` from a fitted model's torch networks and cache, and fitting its
marginal calibration: the only sampling code that needs torch (once per model; the artifact then
carries the pack, and sampling runs on numpy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cadasg_dist.model.calibration import REFERENCE_ROWS, REFERENCE_SEED, MarginalCalibration, fit_calibration
from cadasg_dist.sampling.pack import Layer, SamplingPack
from cadasg_dist.train.step import Priors


@torch.inference_mode()
def build_pack(nets: Any, cache: Any, latent_dim: int) -> SamplingPack:
    """The pack of ``nets`` (``CADASGNetworks``) with ``cache``'s priors folded in; uncalibrated."""
    priors = Priors.from_cache(cache, latent_dim)
    dims, layers = nets.dims, list(nets.decoder.body)
    first = layers[0]
    w_z, w_c = first.weight[:, :latent_dim], first.weight[:, latent_dim:]
    cells = torch.arange(priors.latent_mean.shape[0])
    cond = dims.condition(nets.one_hot(cells // cache.strata), cells % cache.strata)
    scale = (w_z @ priors.latent_chol).transpose(1, 2)  # (K, L, H)
    shift = priors.latent_mean @ w_z.T + cond @ w_c.T + first.bias  # (K, H)
    soft = sorted((s for s in dims.spans if s.kind == "softmax"), key=lambda s: s.width)
    cont = [c for s in dims.spans if s.kind != "softmax" for c in range(s.start, s.stop)]
    perm = cont + [c for s in soft for c in range(s.start, s.stop)]
    groups, at = [], len(cont)
    for width in sorted({s.width for s in soft}):
        count = sum(s.width for s in soft if s.width == width)
        groups.append((at, at + count, width))
        at += count
    return SamplingPack(_f32(scale), _f32(shift), [_layer(layer) for layer in layers[1:]],
                        _f32(nets.decoder.head.weight[perm]), _f32(nets.decoder.head.bias[perm]),
                        np.argsort(np.asarray(perm)).astype(np.int64), groups,
                        cache.cell_counts().double().numpy().copy())


def calibrate(model: Any, pack: SamplingPack) -> MarginalCalibration | None:
    """The marginal calibration of ``model`` (its transformer's released marginals, its config),
    fitted on a reference draw from ``pack``: every cell at its cached share, a fixed seed, so the
    same model gets the same correction in any process. None when the config turns it off."""
    cfg = model.config
    if cfg.model.calibrate_marginals == "off":
        return None
    rng = np.random.default_rng(REFERENCE_SEED)
    cell = model.cell_allocation(REFERENCE_ROWS, None, rng)
    probs, order = pack.activated(cell, model.dims, rng)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    probs = np.ascontiguousarray(probs[back])
    contexts = cell // model.dims.strata
    return fit_calibration(torch.from_numpy(probs), model.transformer, model.dims, cfg.model.calibrate_marginals,
                           cfg.class_calibration, contexts if cfg.context_calibration else None)


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().contiguous().numpy().copy()


def _layer(layer: torch.nn.Module) -> Layer:
    if isinstance(layer, torch.nn.Linear):
        return "linear", (_f32(layer.weight.T), _f32(layer.bias)), 0.0
    if isinstance(layer, torch.nn.LayerNorm):
        return "layer_norm", (_f32(layer.weight), _f32(layer.bias)), float(layer.eps)
    if isinstance(layer, torch.nn.LeakyReLU):
        return "leaky_relu", (), float(layer.negative_slope)
    raise TypeError(f"the sampler cannot fold a {type(layer).__name__} layer")
