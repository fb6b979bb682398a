"""The sampler's inner loop: cells -> latent codes -> decoder -> rows, one chunk at a time.

Every synthetic row passes through ``Sampler._draw_chunk``: the one place a chunk of cells becomes
a DataFrame (decoded, contexts filled in, derived columns added), whatever asked for it
(``CADASG.sample``, ``sample_to_file``, a conditional draw). Per-chunk checks belong there.

Speed: the decoder runs in blocks of ``BLOCK`` rows, so each activation (BLOCK x hidden floats)
stays in the CPU cache instead of streaming a chunk-sized tensor through memory for every layer;
each cell's latent prior is folded into the decoder's first layer (``FoldedDecoder``) and the
softmax spans are activated by width in one pass, on the head's output transposed (features x
rows, so a span is a few contiguous runs). None of this changes what is drawn: the same Gaussian
codes feed the same per-cell maps, and the rows are the same to the bit.

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
import torch

from cadasg_dist.train.step import Priors, pinned_stratum

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


class FoldedDecoder:
    """The decoder as sampling runs it, with the cell's latent prior folded into the first layer.

    z = μ_k + ε L_kᵀ for a row of cell k, and the first layer reads [z, cond_k], so its output is
    ε (W_z L_k)ᵀ + (W_z μ_k + W_c cond_k + b): one (hidden x latent) matrix and one bias per cell,
    computed once. The latent draw, the concatenation of the condition and its one-hot columns
    disappear from the per-row work. The ε of a cell's rows are drawn contiguous (rows sorted by
    cell, put back in place at the end): ε is i.i.d., so which row gets which ε changes nothing.
    The head's outputs are computed with the softmax spans grouped by width (its rows permuted),
    so one max/exp/sum over a (B, spans, width) view activates every span of a width.
    The result is ``networks.activate(decoder(z, cond), tau=None)`` with ``pin_stratum`` applied.
    """

    def __init__(self, nets: Any, priors: Priors, strata: int) -> None:
        dims, layers = nets.dims, list(nets.decoder.body)
        latent = priors.latent_mean.shape[1]
        first = layers[0]
        w_z, w_c = first.weight[:, :latent], first.weight[:, latent:]
        cells = torch.arange(priors.latent_mean.shape[0])
        cond = dims.condition(nets.one_hot(cells // strata), cells % strata)
        self.scale = (w_z @ priors.latent_chol).transpose(1, 2).contiguous()  # (K, L, H): ε -> first layer
        self.shift = priors.latent_mean @ w_z.T + cond @ w_c.T + first.bias  # (K, H)
        self.layers = layers[1:]
        self.latent, self.dims, self.strata = latent, dims, strata
        soft = sorted((s for s in dims.spans if s.kind == "softmax"), key=lambda s: s.width)
        cont = [c for s in dims.spans if s.kind != "softmax" for c in range(s.start, s.stop)]
        perm = cont + [c for s in soft for c in range(s.start, s.stop)]
        self.head_w, self.head_b = nets.decoder.head.weight[perm].contiguous(), nets.decoder.head.bias[perm]
        self.unperm = torch.argsort(torch.tensor(perm))
        self.groups: list[tuple[int, int, int]] = []  # (first column, last column, width) per width
        at = len(cont)
        for width in sorted({s.width for s in soft}):
            count = sum(s.width for s in soft if s.width == width)
            self.groups.append((at, at + count, width))
            at += count

    def __call__(self, cell: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, order): activated rows for ``cell`` sorted by cell, and where each came from; the
        rows are a (B, D) transposed view of a (D, B) tensor."""
        # numpy's stable sort of small integers is a radix sort (torch's is a comparison sort): the
        # same permutation, several times faster
        small = np.int16 if len(self.shift) <= np.iinfo(np.int16).max else np.int64
        order = torch.from_numpy(np.argsort(cell.numpy().astype(small), kind="stable"))
        ids, counts = torch.unique_consecutive(cell[order], return_counts=True)
        eps = torch.randn(len(cell), self.latent, generator=generator)
        h = torch.empty(len(cell), self.shift.shape[1])
        start = 0
        for k, c in zip(ids.tolist(), counts.tolist()):
            torch.addmm(self.shift[k], eps[start:start + c], self.scale[k], out=h[start:start + c])
            start += c
        for layer in self.layers:
            h = torch.nn.functional.leaky_relu_(h, layer.negative_slope) if isinstance(layer, torch.nn.LeakyReLU) \
                else layer(h)
        # The head's output transposed, (D, B): each output column is a contiguous run of B values,
        # so a softmax over a span of width w reduces w contiguous rows elementwise, and the rows
        # come back in feature order with contiguous row copies.
        raw = torch.addmm(self.head_b[:, None], self.head_w, h.T)
        for a, b, width in self.groups:
            x = raw[a:b].view(-1, width, len(cell))
            x.sub_(x.amax(1, keepdim=True)).exp_()
            x.div_(x.sum(1, keepdim=True))
        rows = raw.index_select(0, self.unperm)
        span = self.dims.strata_span
        if span is not None and self.dims.class_groups is None:  # one-hot, set in place
            rows[span.start:span.stop] = 0.0
            rows[span.start:span.stop].scatter_(0, ((cell[order] % self.strata) // self.dims.target_bins)[None], 1.0)
        elif span is not None:
            rows[span.start:span.stop] = pinned_stratum(rows.T, cell[order], self.dims).T
        return rows.T, order


class Sampler:
    """Draws rows of a fitted ``CADASG`` (any object with its ``nets``, ``cache``, ``transformer``,
    ``extractor``, ``schema`` and ``config``); holds the priors and the marginal calibration."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.priors = Priors.from_cache(model.cache, model.config.model.latent_dim)
        self._calibration: Any = None
        self.decoder = FoldedDecoder(model.nets, self.priors, model.cache.strata)

    def bound_to(self, model: Any) -> Sampler:
        """This sampler drawing for ``model``, a copy of its model with the same networks and cache
        (its priors and calibration are reused; its constraints are its own)."""
        twin = copy.copy(self)
        twin.model = model
        return twin

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
        """(N, D) activated decoder output for rows of ``cell`` (see ``CADASG.feature_probs``), in
        blocks of ``BLOCK`` rows; a transposed view of a (D, N) tensor."""
        strata = self.model.cache.strata
        kinds = self.model.config.model.calibrate_marginals
        calibration = self.calibration() if calibrated and kinds != "off" else None
        # Filled column-major: decode reads each span's values as one contiguous run, and a block's
        # transpose is done while it is in cache, not over the whole chunk afterwards.
        out = torch.empty(self.model.nets.dims.features, len(cell))
        for a in range(0, len(cell), BLOCK):
            rows, order = self.decoder(cell[a:a + BLOCK], generator)
            if calibration is not None:
                rows = calibration.apply(rows, cell[a:a + BLOCK][order] // strata)
            back = torch.empty_like(order)  # the inverse of ``order``: a gather then a block copy
            back[order] = torch.arange(len(order))  # beats a column scatter into the wide ``out``
            out[:, a:a + len(order)] = rows.T.index_select(1, back)
        return out.T

    def _draw_chunk(self, cells: np.ndarray, generator: torch.Generator, rng: np.random.Generator) -> pd.DataFrame:
        """The rows of one chunk of cells (context x target stratum), as the user sees them: every
        output column, contexts filled in, derived columns added. Each sampling path comes here."""
        m = self.model
        frame = self._decoded(cells, generator, rng)
        constraints = m.constraints
        if constraints:  # the one call of ConstraintSet.enforce: broken rows redrawn from their cells, else repaired
            frame = constraints.enforce(frame, cells, lambda again: self._decoded(again, generator, rng))
        return m.schema.with_derived(frame)

    def _decoded(self, cells: np.ndarray, generator: torch.Generator, rng: np.random.Generator) -> pd.DataFrame:
        """Decoded rows of ``cells`` with their context columns filled in (no derived columns yet)."""
        m = self.model
        cell = torch.from_numpy(np.ascontiguousarray(cells, dtype=np.int64))
        frame = m.transformer.decode(self.feature_probs(cell, generator).numpy(), rng)
        return m.extractor.fill(frame, cells // m.cache.strata)
