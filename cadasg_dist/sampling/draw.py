"""The sampler's inner loop: cells -> latent codes -> decoder -> rows, one chunk at a time.

Every synthetic row passes through ``Sampler._draw_chunk``: the one place a chunk of cells becomes
a DataFrame (decoded, contexts filled in, derived columns added), whatever asked for it
(``CADASG.sample``, ``sample_to_file``, a conditional draw). Per-chunk checks belong there.

Speed: the decoder runs on numpy from the model's ``SamplingPack`` (each cell's latent prior
folded into the first layer, the softmax spans activated by width in one pass) in blocks of
``BLOCK`` rows, so each activation (BLOCK x hidden floats) stays in the CPU cache instead of
streaming a chunk-sized array through memory for every layer. A process that only samples does
not import torch.

Privacy: sampling reads only the model and its cache (post-processing of what training released);
it spends no budget.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.memory import keep_freed_memory
from cadasg_dist.model.correct import MarginalCalibration
from cadasg_dist.sampling.pack import SamplingPack, calibration_settings

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


class Sampler:
    """Draws rows of a fitted model (``CADASG`` or a ``SampledModel``: its ``transformer``,
    ``extractor``, ``schema``, ``dims``, ``config`` and ``constraints``) from its ``SamplingPack``,
    on numpy; fits the pack's marginal calibration at the first calibrated draw if it has none."""

    def __init__(self, model: Any, pack: SamplingPack) -> None:
        self.model, self.pack = model, pack
        keep_freed_memory()  # each block allocates and frees the same few MB: reuse them (about 9 % of a draw)

    def bound_to(self, model: Any) -> Sampler:
        """This sampler drawing for ``model``, a copy of its model with the same networks and cache
        (its pack and calibration are reused; its constraints are its own)."""
        twin = copy.copy(self)
        twin.model = model
        return twin

    def calibration(self) -> MarginalCalibration | None:
        """The pack's marginal calibration, fitted now if it has none for the model's settings (a
        saved model carries it: only a change of ``model.calibrate_*`` fits it again)."""
        settings = calibration_settings(self.model.config)
        if self.pack.calibrated_for != settings:
            from cadasg_dist.sampling.fold import calibrate  # torch: once per model and settings

            self.pack.calibration, self.pack.calibrated_for = calibrate(self.model, self.pack), settings
        return self.pack.calibration

    def feature_probs(self, cell: np.ndarray, rng: np.random.Generator, *, calibrated: bool = True) -> np.ndarray:
        """(N, D) activated decoder output for rows of ``cell`` (see ``CADASG.feature_probs``), in
        blocks of ``BLOCK`` rows; a transposed view of a (D, N) array."""
        dims = self.model.dims
        calibration = self.calibration() if calibrated else None
        # Filled column-major: decode reads each span's values as one contiguous run, and a block's
        # transpose is done while it is in cache, not over the whole chunk afterwards.
        out = np.empty((dims.features, len(cell)), dtype=np.float32)
        for a in range(0, len(cell), BLOCK):
            block = cell[a:a + BLOCK]
            rows, order = self.pack.activated(block, dims, rng)
            if calibration is not None:
                rows = calibration.apply(rows, block[order] // dims.strata, in_place=True)  # a fresh array
            back = np.empty_like(order)  # the inverse of ``order``: one gather into the block's columns
            back[order] = np.arange(len(order))
            np.take(rows.T, back, axis=1, out=out[:, a:a + len(order)])
        return out.T

    def _draw_chunk(self, cells: np.ndarray, latent: np.random.Generator, rng: np.random.Generator) -> pd.DataFrame:
        """The rows of one chunk of cells (context x target stratum), as the user sees them: every
        output column, contexts filled in, derived columns added. Each sampling path comes here."""
        m = self.model
        frame = self._decoded(cells, latent, rng)
        constraints = m.constraints
        if constraints:  # the one call of ConstraintSet.enforce: broken rows redrawn from their cells, else repaired
            frame = constraints.enforce(frame, cells, lambda again: self._decoded(again, latent, rng))
        return m.schema.with_derived(frame)

    def _decoded(self, cells: np.ndarray, latent: np.random.Generator, rng: np.random.Generator) -> pd.DataFrame:
        """Decoded rows of ``cells`` with their context columns filled in (no derived columns yet)."""
        m = self.model
        cell = np.ascontiguousarray(cells, dtype=np.int64)
        frame = m.transformer.decode(self.feature_probs(cell, latent), rng)
        return m.extractor.fill(frame, cells // m.dims.strata)
