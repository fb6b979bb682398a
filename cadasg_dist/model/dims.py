"""``ModelDims``: the sizes and feature layout the networks, the cache and the sampler share.

Plain data: importing it does not load torch (the sampler runs on numpy; the tensor methods
import torch when they are called, which only training and the torch paths do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import ndtri

from cadasg_dist.data.transforms import SpanInfo

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelDims:
    """What the networks need to know about the data: sizes and the feature layout."""

    features: int
    contexts: int
    spans: tuple[SpanInfo, ...]
    target_spans: tuple[SpanInfo, ...]  # the target column's spans (value and missing), may be empty
    # The softmax span whose class stratifies the latent prior (the target's class, or whether a
    # numeric target sits on its point mass); None for one stratum per context.
    strata_span: SpanInfo | None = None
    # A numeric target's value span, cut into `target_bins` bins of its Gaussian-scaled value (equal
    # mass under N(0, 1), i.e. roughly quantile bins), each with its own latent prior.
    bin_span: SpanInfo | None = None
    target_bins: int = 1
    # The decoder reads the stratum one-hot besides the context (False: an artifact from before).
    stratum_input: bool = False
    # Each class's group, where a categorical target's thin classes share one stratum (runs of
    # adjacent classes; ``class_groups``); None: a stratum per class.
    class_groups: tuple[int, ...] | None = None

    @property
    def classes(self) -> int:
        return self.strata_span.width if self.strata_span is not None else 1

    @property
    def groups(self) -> int:
        """Class groups: a stratum each (times the value bins)."""
        return self.class_groups[-1] + 1 if self.class_groups else self.classes

    @property
    def strata(self) -> int:
        return self.groups * self.target_bins

    def group_of(self, klass: torch.Tensor) -> torch.Tensor:
        """(B,) the group of each class id: how many groups start at or before it (comparisons only)."""
        import torch

        if not self.class_groups:
            return klass
        g = self.class_groups
        starts = torch.tensor([i for i in range(1, len(g)) if g[i] != g[i - 1]], device=klass.device)
        return (klass[:, None] >= starts).sum(dim=1)

    def members(self, group: torch.Tensor) -> torch.Tensor:
        """(B, classes) whether each class belongs to each row's ``group``."""
        import torch

        g = torch.tensor(self.class_groups if self.class_groups else range(self.classes), device=group.device)
        return g[None, :] == group[:, None]

    def stratum(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) stratum = group·bins + bin of each encoded row (B, D) (a class is its own group unless
        ``class_groups`` merges it). Comparisons only, so it also runs inside ``torch.func.vmap``
        (the per-example DP gradients)."""
        import torch

        stratum = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if self.strata_span is not None:
            s = self.strata_span
            stratum = self.group_of(x[:, s.start:s.stop].argmax(dim=1)) * self.target_bins
        if self.bin_span is not None and self.target_bins > 1:
            edges = torch.distributions.Normal(0.0, 1.0).icdf(
                torch.arange(1, self.target_bins, dtype=x.dtype, device=x.device) / self.target_bins)
            stratum = stratum + (x[:, self.bin_span.start, None] > edges).sum(dim=1)
        return stratum

    def stratum_np(self, x: np.ndarray) -> np.ndarray:
        """``stratum`` of (B, D) rows held in numpy (the sampler's), the same comparisons."""
        stratum = np.zeros(x.shape[0], dtype=np.int64)
        if self.strata_span is not None:
            s = self.strata_span
            klass = x[:, s.start:s.stop].argmax(axis=1)
            if self.class_groups:
                g = self.class_groups
                starts = np.array([i for i in range(1, len(g)) if g[i] != g[i - 1]], dtype=np.int64)
                klass = (klass[:, None] >= starts).sum(axis=1)
            stratum = klass * self.target_bins
        if self.bin_span is not None and self.target_bins > 1:
            edges = ndtri(np.arange(1, self.target_bins) / self.target_bins).astype(x.dtype)
            stratum = stratum + (x[:, self.bin_span.start, None] > edges).sum(axis=1)
        return stratum

    def cells(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(B,) cell id = context·S + stratum of each encoded row (B, D)."""
        return context * self.strata + self.stratum(x)

    @property
    def decoder_condition(self) -> int:
        """Width of the decoder's conditioning input: the context one-hot, then the stratum one-hot."""
        return self.contexts + (self.strata if self.stratum_input else 0)

    def condition(self, onehot: torch.Tensor, stratum: torch.Tensor) -> torch.Tensor:
        """The decoder's conditioning input for rows with context one-hot ``onehot`` (B, C) and
        stratum ids ``stratum`` (B,)."""
        import torch

        if not self.stratum_input:
            return onehot
        levels = torch.arange(self.strata, device=stratum.device)
        return torch.cat([onehot, (stratum[:, None] == levels).to(onehot.dtype)], dim=1)

    def to_dict(self) -> dict:
        span = lambda s: [s.column, s.kind, s.start, s.width, s.role]  # noqa: E731
        return {"features": self.features, "contexts": self.contexts,
                "spans": [span(s) for s in self.spans], "target_spans": [span(s) for s in self.target_spans],
                "strata_span": None if self.strata_span is None else span(self.strata_span),
                "bin_span": None if self.bin_span is None else span(self.bin_span), "target_bins": self.target_bins,
                "stratum_input": self.stratum_input,
                "class_groups": None if self.class_groups is None else list(self.class_groups)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelDims:
        def spans(key: str) -> tuple[SpanInfo, ...]:
            return tuple(SpanInfo(c, k, int(st), int(w), r) for c, k, st, w, r in d[key])
        def one(key: str) -> SpanInfo | None:
            v = d.get(key)
            return None if v is None else SpanInfo(v[0], v[1], int(v[2]), int(v[3]), v[4])
        return cls(int(d["features"]), int(d["contexts"]), spans("spans"), spans("target_spans"), one("strata_span"),
                   one("bin_span"), int(d.get("target_bins", 1)), bool(d.get("stratum_input", False)),
                   None if d.get("class_groups") is None else tuple(int(g) for g in d["class_groups"]))
