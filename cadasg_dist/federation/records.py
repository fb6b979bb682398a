"""What travels between a silo and the server, and how it is packed.

A silo sends, each round, exactly two kinds of arrays: the model's *parameters* (the same names
and shapes as ``CADASGNetworks.named_parameters()``) and its cache's *sufficient statistics*
(``CacheStats``: one row per cache cell, never one per data row). ``check_payload`` asserts that.

SecAgg+ (Flower's legacy workflow) averages one flat list of float arrays weighted by each silo's
row count, after quantizing every value into [-clip, clip]. The cache statistics must be *summed*,
not averaged, so ``secagg_pack`` divides each silo's statistics by its quantized weight and by a
public per-block scale, and ``secagg_unpack`` multiplies the average back: the result is the exact
sum up to quantization error (unbiased stochastic rounding; far below the DP noise).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict

from cadasg_dist.config import CacheConfig
from cadasg_dist.context.cache import BLOCKS, CacheStats
from cadasg_dist.errors import InvalidDataError
from cadasg_dist.federation.config import SECAGG_QUANTIZATION, FederatedConfig
from cadasg_dist.model.networks import CADASGNetworks

CACHE_FIELDS = tuple(f.name for f in fields(CacheStats))


def model_arrays(nets: CADASGNetworks) -> OrderedDict[str, torch.Tensor]:
    """The trainable parameters, by name (buffers are constants of the plan and never travel)."""
    return OrderedDict((name, p.detach().clone()) for name, p in nets.named_parameters())


def load_model_arrays(nets: CADASGNetworks, arrays: dict[str, torch.Tensor]) -> None:
    names = [name for name, _ in nets.named_parameters()]
    missing = [n for n in names if n not in arrays]
    if missing or len(arrays) != len(names):
        raise InvalidDataError(f"model arrays do not match the plan's networks (missing {missing[:3]}, "
                               f"{len(arrays)} arrays for {len(names)} parameters)")
    with torch.no_grad():
        for name, p in nets.named_parameters():
            p.copy_(torch.as_tensor(arrays[name], dtype=p.dtype).view_as(p))


def cache_record(stats: CacheStats) -> ArrayRecord:
    return ArrayRecord({name: Array(getattr(stats, name).numpy()) for name in CACHE_FIELDS})


def record_cache(record: ArrayRecord) -> CacheStats:
    return CacheStats(**{name: torch.from_numpy(np.array(record[name].numpy(), dtype=np.float64))
                         for name in CACHE_FIELDS})


def noise_metrics(noise_var: torch.Tensor) -> dict[str, float]:
    """A cache release's noise variance per block (``ContextCache.noise_var``) as reply metrics."""
    return {f"cache-noise-var-{name}": float(v) for name, v in zip(BLOCKS, noise_var.tolist())}


def summed_noise(metrics: list[dict[str, Any]]) -> torch.Tensor:
    """The noise variance of the sum of the silos' releases (independent noises add); a silo that
    did not report it counts as exact."""
    return torch.tensor([sum(float(m.get(f"cache-noise-var-{name}", 0.0)) for m in metrics) for name in BLOCKS],
                        dtype=torch.float64)


def sum_caches(caches: list[CacheStats]) -> CacheStats | None:
    """The merge of the silos' releases: an exact sum of additive statistics."""
    total = None
    for stats in caches:
        total = stats if total is None else total + stats
    return total


def expected_shapes(nets: CADASGNetworks, n_cells: int) -> dict[str, dict[str, tuple[int, ...]]]:
    d, lat = nets.dims.features, nets.cfg.latent_dim
    return {"arrays": {n: tuple(p.shape) for n, p in nets.named_parameters()},
            "cache": {"n": (n_cells,), "sx": (n_cells, d), "sxx": (n_cells, d, d), "sz": (n_cells, lat),
                      "szz": (n_cells, lat, lat), "svar": (n_cells, lat)}}


def check_payload(content: RecordDict, shapes: dict[str, dict[str, tuple[int, ...]]]) -> None:
    """Raise unless every array in ``content`` is a model parameter or a cache statistic of its
    expected shape: nothing else, in particular nothing with one entry per data row, may leave."""
    for key, record in content.array_records.items():
        if key not in shapes:
            raise InvalidDataError(f"unexpected array record {key!r} in a silo's reply")
        for name, arr in record.items():
            want = shapes[key].get(name)
            if want is None or tuple(arr.shape) != want:
                raise InvalidDataError(f"array {key}.{name} of shape {tuple(arr.shape)} is not an expected "
                                       f"parameter or statistic (expected {want})")


def payload_bytes(content: RecordDict) -> int:
    """Bytes of the arrays, byte strings and text a message carries (what dominates the wire)."""
    total = sum(len(arr.data) for record in content.array_records.values() for arr in record.values())
    for record in content.config_records.values():
        for value in record.values():
            items = value if isinstance(value, list) else [value]
            total += sum(len(v) if isinstance(v, bytes | str) else 8 for v in items)
    total += sum(8 * (len(v) if isinstance(v, list) else 1)
                 for record in content.metric_records.values() for v in record.values())
    return total


# --- SecAgg+ packing ---------------------------------------------------------------------------

def secagg_weight(num_examples: int, fed: FederatedConfig) -> float:
    """The weight SecAgg+ applies to a silo's vector, quantized exactly as secaggplus_mod does."""
    return round(num_examples / fed.secagg_max_weight * SECAGG_QUANTIZATION) / SECAGG_QUANTIZATION


def _cache_scales(cache: CacheConfig, fed: FederatedConfig) -> dict[str, float]:
    """Public scale per block: twice the largest sum a silo of secagg_max_weight rows can hold
    (per-row sensitivity times rows), over the clipping range."""
    cx, cz = cache.clip_x, cache.clip_z
    per_row = {"n": 1.0, "sx": cx, "sxx": cx * cx, "sz": cz, "szz": cz * cz, "svar": cz}
    return {k: 2.0 * fed.secagg_max_weight * v / fed.secagg_clip for k, v in per_row.items()}


def secagg_pack(weights: list[np.ndarray], stats: CacheStats | None, num_examples: int, fed: FederatedConfig,
                cache: CacheConfig) -> list[np.ndarray]:
    """The flat list a silo hands to SecAgg+: parameters, then its statistics pre-divided so that
    the weighted average SecAgg+ computes is the sum over silos (see the module doc)."""
    out = [np.asarray(w, dtype=np.float64) for w in weights]
    if stats is not None:
        w = secagg_weight(num_examples, fed)
        scales = _cache_scales(cache, fed)
        out += [getattr(stats, k).numpy() / (w * scales[k]) for k in CACHE_FIELDS]
    worst = max((float(np.abs(a * secagg_weight(num_examples, fed)).max()) for a in out if a.size), default=0.0)
    if worst > fed.secagg_clip:
        # public figures only: the value itself (a parameter or a silo's statistic) is data-dependent
        raise InvalidDataError(f"a weighted value exceeds the SecAgg+ clipping range federated.secagg_clip="
                               f"{fed.secagg_clip:g} and would be clipped: raise federated.secagg_clip or "
                               f"federated.secagg_max_weight (now {fed.secagg_max_weight:g})")
    return out


def secagg_unpack(average: list[np.ndarray], n_weights: int, num_examples: list[int], fed: FederatedConfig,
                  cache: CacheConfig) -> tuple[list[np.ndarray], CacheStats | None]:
    """Inverse of ``secagg_pack`` applied to the SecAgg+ average: (mean parameters, summed statistics)."""
    weights = average[:n_weights]
    rest = average[n_weights:]
    if not rest:
        return weights, None
    total = sum(secagg_weight(n, fed) for n in num_examples)
    scales = _cache_scales(cache, fed)
    return weights, CacheStats(**{k: torch.from_numpy(np.asarray(a, dtype=np.float64) * scales[k] * total)
                                  for k, a in zip(CACHE_FIELDS, rest)})
