"""The sampler's inner loop: cells -> latent codes -> decoder -> rows, one chunk at a time.

Every synthetic row passes through ``Sampler._draw_chunk``: the one place a chunk of cells becomes
a DataFrame (decoded, contexts filled in, derived columns added), whatever asked for it
(``CADASG.sample``, ``sample_to_file``, a conditional draw). Per-chunk checks belong there.

Speed: the decoder runs in blocks of ``BLOCK`` rows, so each activation (BLOCK x hidden floats)
stays in the CPU cache instead of streaming a chunk-sized tensor through memory for every layer;
the latent draw is one matrix product per cell over contiguous rows (the rows sorted by cell and
put back), not a boolean gather per cell. Neither changes what is drawn: the same normal numbers
feed the same per-cell transforms.

Privacy: sampling reads only the model and its cache (post-processing of what training released);
it spends no budget.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch

from cadasg_dist.train.step import Priors, pin_stratum

# Rows per decoder pass inside a chunk: small enough for a block's activations to stay in cache.
BLOCK = 8192


def fresh_seed() -> int:
    """A new seed from the operating system's entropy (63 bits, printable and replayable)."""
    return secrets.randbits(63)


def largest_remainder(weights: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to ``n`` in proportion to ``weights`` (Hamilton's method)."""
    share = weights / weights.sum() * n
    counts = np.floor(share).astype(np.int64)
    remainder = n - int(counts.sum())
    if remainder > 0:
        counts[np.argsort(-(share - counts), kind="stable")[:remainder]] += 1
    return counts


def exact_chunks(cells: np.ndarray, counts: np.ndarray, chunk: int, rng: np.random.Generator
                 ) -> Iterator[np.ndarray]:
    """The cells of ``counts.sum()`` rows (``counts[i]`` of ``cells[i]``) in a uniformly random
    order, ``chunk`` at a time, without ever holding all of them: each chunk takes a multivariate
    hypergeometric share of what is left, then is shuffled; that is the law of cutting one random
    permutation into chunks. A single chunk is ``rng.permutation(np.repeat(cells, counts))``."""
    left = counts.astype(np.int64).copy()
    while (total := int(left.sum())) > 0:
        m = min(chunk, total)
        take = left.copy() if m == total else rng.multivariate_hypergeometric(left, m)
        left -= take
        yield rng.permutation(np.repeat(cells, take))


def latent_draw(priors: Priors, cell: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """z ~ q(z | cell) for each row: one N(0, I) matrix for all rows, then per cell mean + eps Lᵀ
    over the cell's rows, taken contiguous (rows sorted by cell, then put back in place)."""
    eps = torch.randn(len(cell), priors.latent_mean.shape[1], generator=generator)
    order = torch.argsort(cell, stable=True)
    sorted_cells = cell[order]
    z_sorted = torch.empty_like(eps)
    ids, counts = torch.unique_consecutive(sorted_cells, return_counts=True)
    start = 0
    for k, c in zip(ids.tolist(), counts.tolist()):
        rows = order[start:start + c]
        z_sorted[start:start + c] = torch.addmm(priors.latent_mean[k], eps[rows], priors.latent_chol[k].T)
        start += c
    z = torch.empty_like(eps)
    z[order] = z_sorted
    return z


class SpanSoftmax:
    """``networks.activate`` with ``tau=None`` (softmax per softmax span, continuous spans passed
    through), vectorised over spans: the spans of one width are gathered into one (B, spans, width)
    tensor and normalised together (max, exp, sum: elementwise passes over contiguous memory, much
    cheaper than ``torch.softmax`` over a short last dimension), in place on the decoder output."""

    def __init__(self, spans: tuple[Any, ...], features: int) -> None:
        by_width: dict[int, list[int]] = {}
        for s in spans:
            if s.kind == "softmax":
                by_width.setdefault(s.width, []).extend(range(s.start, s.stop))
        self.groups = [(w, torch.tensor(cols, dtype=torch.long)) for w, cols in sorted(by_width.items())]

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        for width, cols in self.groups:
            x = raw[:, cols].view(raw.shape[0], -1, width)
            e = (x - x.amax(2, keepdim=True)).exp_()
            raw[:, cols] = e.div_(e.sum(2, keepdim=True)).view(raw.shape[0], -1)
        return raw


class Sampler:
    """Draws rows of a fitted ``CADASG`` (any object with its ``nets``, ``cache``, ``transformer``,
    ``extractor``, ``schema`` and ``config``); holds the priors and the marginal calibration."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.priors = Priors.from_cache(model.cache, model.config.model.latent_dim)
        self._calibration: Any = None
        self.activate = SpanSoftmax(model.nets.dims.spans, model.nets.dims.features)

    def calibration(self) -> Any:
        from cadasg_dist.model.calibration import MarginalCalibration, reference_draw

        if self._calibration is None:
            m = self.model
            reference, contexts = reference_draw(m)
            self._calibration = MarginalCalibration.fit(reference, m.transformer, m.nets.dims,
                                                        m.config.model.calibrate_marginals, m.config.class_calibration,
                                                        contexts if m.config.context_calibration else None)
        return self._calibration

    @torch.inference_mode()
    def feature_probs(self, cell: torch.Tensor, generator: torch.Generator, *, calibrated: bool = True
                      ) -> torch.Tensor:
        """(N, D) activated decoder output for rows of ``cell`` (see ``CADASG.feature_probs``)."""
        nets, strata = self.model.nets, self.model.cache.strata
        dims = nets.dims
        z = latent_draw(self.priors, cell, generator)
        kinds = self.model.config.model.calibrate_marginals
        calibration = self.calibration() if calibrated and kinds != "off" else None
        out = torch.empty(len(cell), dims.features)
        for a in range(0, len(cell), BLOCK):
            c = cell[a:a + BLOCK]
            cond = dims.condition(nets.one_hot(c // strata), c % strata)
            rows = self.activate(nets.decoder(z[a:a + BLOCK], cond))
            rows = pin_stratum(rows, c, dims)
            out[a:a + BLOCK] = rows if calibration is None else calibration.apply(rows, c // strata)
        return out

    def _draw_chunk(self, cells: np.ndarray, generator: torch.Generator, rng: np.random.Generator) -> pd.DataFrame:
        """The rows of one chunk of cells (context x target stratum), as the user sees them: every
        output column, contexts filled in, derived columns added. Each sampling path comes here."""
        m = self.model
        cell = torch.from_numpy(np.ascontiguousarray(cells, dtype=np.int64))
        probs = self.feature_probs(cell, generator)
        frame = m.transformer.decode(probs.numpy(), rng)
        frame = m.extractor.fill(frame, cells // m.cache.strata)
        return m.schema.with_derived(frame)
