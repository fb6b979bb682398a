"""The sampling pack: everything a draw reads, as numpy arrays, and the decoder that runs on it.

A fitted model's decoder, with each cell's latent prior q(z) folded into its first layer, the
cells' shares of the cache and the fitted marginal calibration: built once from the torch
networks (``sampling.fold``), saved in the model artifact (``sampler.safetensors``), so a process
that only samples (``cadasg sample``, a Serve replica, a Ray sampling task) never imports torch.

Folding: z = mu_k + eps L_k^T for a row of cell k, and the first layer reads [z, cond_k], so its
output is eps (W_z L_k)^T + (W_z mu_k + W_c cond_k + b): one (latent x hidden) matrix and one bias
per cell. The eps of a cell's rows are drawn contiguous (rows sorted by cell, put back at the end):
eps is i.i.d., so which row gets which eps changes nothing. The head's rows are permuted so the
softmax spans of one width are adjacent and one max/exp/sum activates them all, on the output
transposed (features x rows: a span is a few contiguous runs).

Privacy: the pack is post-processing of the model and of released statistics; it spends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cadasg_dist.model.correct import MarginalCalibration
from cadasg_dist.model.dims import ModelDims

# A hidden layer as the pack runs it: ("linear", (weight transposed, bias), 0.0),
# ("layer_norm", (weight, bias), eps) or ("leaky_relu", (), negative slope).
Layer = tuple[str, tuple[np.ndarray, ...], float]


@dataclass
class SamplingPack:
    scale: np.ndarray  # (K, L, H) float32: cell k's latent noise -> the first hidden layer
    shift: np.ndarray  # (K, H) float32: cell k's first-layer bias (its prior mean and condition)
    layers: list[Layer]
    head_w: np.ndarray  # (D, H) float32, rows permuted: continuous columns first, then softmax spans by width
    head_b: np.ndarray  # (D,)
    unperm: np.ndarray  # (D,) int64: the feature order back from the permuted head
    groups: list[tuple[int, int, int]]  # (first row, end row, width) of the softmax spans of each width
    cell_counts: np.ndarray  # (K,) float64: the cache's (noisy) row count per cell
    calibration: MarginalCalibration | None = None
    # The settings ``calibration`` was fitted under (``calibration_settings``); None: not fitted yet.
    calibrated_for: tuple[str, bool, bool] | None = None
    _fused: Fused | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def latent(self) -> int:
        return self.scale.shape[1]

    def fused(self) -> Fused:
        """The decoder as ``activated`` runs it (built on first use)."""
        if self._fused is None:
            self._fused = fuse(self)
        return self._fused

    def activated(self, cell: np.ndarray, dims: ModelDims, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, order): the activated decoder output for rows of ``cell`` sorted by cell, as a
        (B, D) transposed view of a (D, B) array, the target pinned to each cell's stratum; and
        where each row came from (``cell[order]`` is sorted)."""
        small = np.int16 if len(self.shift) <= np.iinfo(np.int16).max else np.int64
        order = np.argsort(cell.astype(small), kind="stable")  # a radix sort of small integers
        ordered = cell[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], len(ordered)]
        net = self.fused()
        eps = rng.standard_normal((len(cell), self.latent), dtype=np.float32)
        h = np.empty((len(cell), self.shift.shape[1]), dtype=np.float32)
        for a, b in zip(starts.tolist(), ends.tolist()):
            k = int(ordered[a])
            np.matmul(eps[a:b], net.scale[k], out=h[a:b])
            h[a:b] += net.shift[k]
        for kind, arrays, value in net.layers:
            h = _layer(h, kind, arrays, value)
        raw = net.head_w @ h.T  # (D, B): each output column a contiguous run of B values
        raw += self.head_b[:, None]
        for a, b, width in self.groups:
            x = raw[a:b].reshape(-1, width, len(cell))
            x -= x.max(axis=1, keepdims=True)
            np.exp(x, out=x)
            x /= x.sum(axis=1, keepdims=True)
        rows = raw[self.unperm]
        _pin_stratum(rows, ordered, dims)
        return rows.T, order

    # --- plain data for the artifact ---------------------------------------------------------
    def to_parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(index, arrays): a JSON index (layer kinds, span groups, calibration keys) and the arrays."""
        arrays = {"scale": self.scale, "shift": self.shift, "head_w": self.head_w, "head_b": self.head_b,
                  "unperm": self.unperm, "cell_counts": self.cell_counts}
        for i, (_, layer_arrays, _) in enumerate(self.layers):
            arrays |= {f"layer{i}.{j}": a for j, a in enumerate(layer_arrays)}
        index: dict[str, Any] = {"layers": [[kind, len(a), value] for kind, a, value in self.layers],
                                 "groups": [list(g) for g in self.groups], "calibration": None,
                                 "calibrated_for": None if self.calibrated_for is None else list(self.calibrated_for)}
        if self.calibration is not None:
            index["calibration"], cal = self.calibration.to_parts()
            arrays |= {f"calibration.{k}": v for k, v in cal.items()}
        return index, {k: np.ascontiguousarray(v) for k, v in arrays.items()}

    @classmethod
    def from_parts(cls, index: dict[str, Any], arrays: dict[str, np.ndarray], dims: ModelDims) -> SamplingPack:
        layers = [(str(kind), tuple(arrays[f"layer{i}.{j}"] for j in range(int(count))), float(value))
                  for i, (kind, count, value) in enumerate(index["layers"])]
        calibration = None
        if index.get("calibration") is not None:
            prefix = "calibration."
            cal = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            calibration = MarginalCalibration.from_parts(index["calibration"], cal, dims)
        return cls(arrays["scale"], arrays["shift"], layers, arrays["head_w"], arrays["head_b"],
                   arrays["unperm"].astype(np.int64), [tuple(int(v) for v in g) for g in index["groups"]],
                   arrays["cell_counts"], calibration,
                   None if index.get("calibrated_for") is None else tuple(index["calibrated_for"]))


def calibration_settings(config: Any) -> tuple[str, bool, bool]:
    """What a model's marginal calibration depends on besides the model: which kinds of column it
    corrects, and whether per stratum and per context (``model.calibrate_*``, resolved)."""
    return config.model.calibrate_marginals, bool(config.class_calibration), bool(config.context_calibration)


@dataclass(frozen=True)
class Fused:
    """The pack's decoder rearranged to make fewer passes over each block's activations; the same
    function in exact arithmetic (float32 rounding moves values by about 1e-6):

    * a layer norm right after a linear layer (the folded first layer included) reads inputs whose
      mean is already 0, because that layer's output columns are centred (W minus each row's mean
      over the outputs, b minus its mean): the norm skips its mean pass and subtraction
      ("centred_norm");
    * a layer norm followed by a leaky ReLU and a linear layer (or the head), with every gain g > 0:
      leaky(g x + b) = g leaky(x + b / g), so the gain moves into the next layer's weights and the
      norm keeps only its bias (arrays ``(None, b / g)``).
    """

    scale: np.ndarray
    shift: np.ndarray
    layers: list[Layer]
    head_w: np.ndarray


def fuse(pack: SamplingPack) -> Fused:
    """``pack``'s decoder as ``Fused`` describes; the pack's own arrays are left as they are."""
    scale, shift, head_w = pack.scale, pack.shift, pack.head_w
    layers = [[kind, list(arrays), value] for kind, arrays, value in pack.layers]
    for i, (kind, arrays, _) in enumerate(layers):
        if kind != "layer_norm":
            continue
        if i == 0:
            scale, shift = scale - scale.mean(axis=2, keepdims=True), shift - shift.mean(axis=1, keepdims=True)
            layers[i][0] = "centred_norm"
        elif layers[i - 1][0] == "linear":
            w, b = layers[i - 1][1]
            layers[i - 1][1] = [w - w.mean(axis=1, keepdims=True), b - b.mean()]
            layers[i][0] = "centred_norm"
        gain = arrays[0]
        if not (np.all(gain > 0) and i + 1 < len(layers) and layers[i + 1][0] == "leaky_relu"):
            continue
        if i + 2 == len(layers):
            head_w = head_w * gain[None, :]
        elif layers[i + 2][0] == "linear":
            w, b = layers[i + 2][1]
            layers[i + 2][1] = [w * gain[:, None], b]
        else:
            continue
        layers[i][1] = [None, arrays[1] / gain]
    as_f32 = lambda a: None if a is None else np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return Fused(as_f32(scale), as_f32(shift),
                 [(kind, tuple(as_f32(a) for a in arrays), value) for kind, arrays, value in layers],
                 as_f32(head_w))


def _layer(h: np.ndarray, kind: str, arrays: tuple[np.ndarray | None, ...], value: float) -> np.ndarray:
    """One hidden layer, in place where it can be: torch's Linear, LayerNorm (also as ``Fused``
    rearranges it) and LeakyReLU."""
    if kind == "linear":
        out = h @ arrays[0]
        out += arrays[1]
        return out
    if kind in ("layer_norm", "centred_norm"):  # the biased variance, as torch's; float32 sums
        n = np.float32(h.shape[1])
        if kind == "layer_norm":
            h -= (h.sum(axis=1, dtype=np.float32) / n)[:, None]
        h *= 1.0 / np.sqrt(np.einsum("ij,ij->i", h, h)[:, None] / n + np.float32(value))
        if arrays[0] is not None:
            h *= arrays[0]
        h += arrays[1]
        return h
    if kind == "leaky_relu":  # max(x, a x) is x for x > 0 and a x below, for a slope 0 <= a < 1
        return np.maximum(h, h * np.float32(value), out=h)
    raise ValueError(f"unknown layer kind {kind!r} in the sampling pack")


def _pin_stratum(rows: np.ndarray, cell: np.ndarray, dims: ModelDims) -> None:
    """Set the target's stratifying span of (D, B) ``rows`` to each row's cell: the class one-hot,
    or inside a group of merged classes the decoder's own shares of the group's classes."""
    span = dims.strata_span
    if span is None:
        return
    group = (cell % dims.strata) // dims.target_bins
    block = rows[span.start:span.stop]
    if dims.class_groups is None:
        block[:] = 0.0
        block[group, np.arange(len(cell))] = 1.0
        return
    member = (np.asarray(dims.class_groups)[:, None] == group[None, :]).astype(rows.dtype)  # (classes, B)
    own = block * member
    total = own.sum(axis=0, keepdims=True)
    fallback = member / member.sum(axis=0, keepdims=True)
    block[:] = np.where(total > 1e-12, own / np.maximum(total, np.float32(1e-12)), fallback)
