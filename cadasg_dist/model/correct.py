"""The marginal calibration as the sampler applies it: category factors and monotone maps of the
decoder's activated output, globally, per stratum and per context, on numpy arrays.

``model.calibration`` fits a ``MarginalCalibration`` once per model (with torch, on a reference
draw); this module holds the fitted corrections as plain arrays and applies them, so a sampler
never needs torch. ``to_parts``/``from_parts`` give the arrays and a JSON index for the model
artifact. Privacy: the corrections are post-processing of the model and of released marginals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cadasg_dist.data.knots import knot_table
from cadasg_dist.model.dims import ModelDims

Map = tuple[np.ndarray, np.ndarray]  # knots (x, y) of a monotone piecewise-linear map
# The per-group corrections, keyed (group, span start): the name in ``to_parts``, the attribute.
GROUPED = ("class_factors", "class_maps", "context_factors", "context_maps", "target_factors")


@dataclass
class MarginalCalibration:
    factors: dict[int, np.ndarray] = field(default_factory=dict)  # span start -> (width,) factors
    maps: dict[int, Map] = field(default_factory=dict)  # span start -> (x, y) knots
    strata: ModelDims | None = None  # gives a row's stratum, where the per-stratum corrections apply
    strata_per_class: bool = False  # a release from before the bins: grouped by class, not by stratum
    class_factors: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (stratum, start) -> factors
    class_maps: dict[tuple[int, int], Map] = field(default_factory=dict)
    context_factors: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (context, start) -> factors
    context_maps: dict[tuple[int, int], Map] = field(default_factory=dict)
    # (group, target span start) -> factors on the target's classes inside a group of merged classes
    # (``ModelDims.class_groups``), where the decoder chooses among them; ``groups`` gives a row's group
    target_factors: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    groups: ModelDims | None = None

    def apply(self, probs: np.ndarray, contexts: np.ndarray | None = None, *, in_place: bool = False) -> np.ndarray:
        """The corrected (N, D) probabilities / values (a new array unless ``in_place``; ``probs``
        when nothing applies); ``contexts`` (N,), each row's context, applies the per-context
        corrections."""
        by_context = contexts is not None and bool(self.context_maps or self.context_factors)
        if not self.factors and not self.maps and self.strata is None and not by_context and not self.target_factors:
            return probs
        out = probs if in_place else probs.copy(order="K")
        _correct(out, slice(None), self.factors, self.maps)
        if self.target_factors:
            _correct_groups(out, self.groups.stratum_np(out) // self.groups.target_bins, self.target_factors, {})
        if self.strata is not None:  # the stratum of the globally corrected row, as the release counted it
            _correct_groups(out, self.strata_of(out), self.class_factors, self.class_maps)
        if by_context:
            _correct_groups(out, np.asarray(contexts), self.context_factors, self.context_maps)
        return out

    def strata_of(self, probs: np.ndarray) -> np.ndarray:
        stratum = self.strata.stratum_np(probs)
        return stratum // self.strata.target_bins if self.strata_per_class else stratum

    # --- plain data for the artifact ---------------------------------------------------------
    def to_parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(index, arrays): the index is JSON (which keys exist, the flags), the arrays float64."""
        arrays: dict[str, np.ndarray] = {}
        index: dict[str, Any] = {"strata": self.strata is not None, "strata_per_class": self.strata_per_class,
                                 "groups": self.groups is not None}
        for name in ("factors", "maps", *GROUPED):
            keys = []
            for key, value in getattr(self, name).items():
                parts = [int(k) for k in (key if isinstance(key, tuple) else (key,))]
                label = ".".join(map(str, parts))
                if name.endswith("maps"):
                    arrays[f"{name}.{label}.x"], arrays[f"{name}.{label}.y"] = (np.asarray(v, dtype=np.float64)
                                                                              for v in value)
                else:
                    arrays[f"{name}.{label}"] = np.asarray(value, dtype=np.float32)
                keys.append(parts)
            index[name] = keys
        return index, arrays

    @classmethod
    def from_parts(cls, index: dict[str, Any], arrays: dict[str, np.ndarray], dims: ModelDims) -> MarginalCalibration:
        out = cls(strata=dims if index["strata"] else None, strata_per_class=bool(index["strata_per_class"]),
                  groups=dims if index["groups"] else None)
        for name in ("factors", "maps", *GROUPED):
            target = getattr(out, name)
            for parts in index[name]:
                label = ".".join(map(str, parts))
                key = int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
                if name.endswith("maps"):
                    target[key] = (arrays[f"{name}.{label}.x"], arrays[f"{name}.{label}.y"])
                else:
                    target[key] = arrays[f"{name}.{label}"]
        return out


def _correct_groups(out: np.ndarray, groups: np.ndarray, factors: dict[tuple[int, int], np.ndarray],
                    maps: dict[tuple[int, int], Map]) -> None:
    for g in np.unique(groups).tolist():
        mine_f = {s: f for (k, s), f in factors.items() if k == g}
        mine_m = {s: m for (k, s), m in maps.items() if k == g}
        if mine_f or mine_m:
            _correct(out, groups == g, mine_f, mine_m)


def _correct(out: np.ndarray, rows: slice | np.ndarray, factors: dict[int, np.ndarray], maps: dict[int, Map]) -> None:
    """Apply category factors and continuous maps to ``out[rows]`` in place."""
    for start, f in factors.items():
        block = out[rows, start:start + len(f)] * f.astype(out.dtype, copy=False)
        out[rows, start:start + len(f)] = block / np.maximum(block.sum(1, keepdims=True), out.dtype.type(1e-12))
    for start, (x, y) in maps.items():
        out[rows, start] = knot_table(x, y)(out[rows, start].astype(np.float64)).astype(out.dtype)
