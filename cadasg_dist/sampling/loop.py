"""The chunk loop every sampling path runs: an exact allocation when nothing is rejected, bounded
rejection rounds when something is, and a clear refusal when a condition is too rare.

Without filters the n rows are spread over the plan's cells exactly (largest remainder of the
cache's counts, then a random order), so context and class shares match the cache at any n; a
chunk of a larger draw takes its hypergeometric share of what is left, so memory is one chunk.
With filters, each round draws enough rows for what is still missing at the rate seen so far and
keeps those that pass; the kept rows follow the model's conditional distribution.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.errors import InvalidDataError
from cadasg_dist.sampling.conditions import Plan
from cadasg_dist.sampling.draw import Sampler, exact_chunks, largest_remainder

# A condition kept by fewer than one drawn row in MAX_DRAWS_PER_ROW is refused: meeting it would
# take more than that many decoder passes per row.
MAX_DRAWS_PER_ROW = 500
# The rate is judged only after this many drawn rows (a rare but reachable value needs a few rounds).
MIN_PROBE = 20_000


class TooRareError(InvalidDataError):
    """The conditions are met by too few generated rows to sample in bounded tries."""


def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The two random streams of one draw: cells and decoding, and the latent codes (seeded by the
    first stream's first number)."""
    rng = np.random.default_rng(seed)
    return rng, np.random.default_rng(int(rng.integers(2**62)))


def frames(sampler: Sampler, n: int, plan: Plan, rng: np.random.Generator, latent: np.random.Generator,
           chunk: int) -> Iterator[pd.DataFrame]:
    """Frames of at most ``chunk`` rows, ``n`` rows in all, meeting the plan."""
    produced = drawn = 0
    if not plan.filters:
        for cells in exact_chunks(plan.cells, largest_remainder(plan.weights, n), chunk, rng):
            frame = sampler._draw_chunk(cells, latent, rng)
            drawn += len(cells)
            frame = frame.iloc[:n - produced] if produced + len(frame) > n else frame
            produced += len(frame)
            yield frame
    while produced < n:  # rejection rounds (also tops up rows a per-chunk check refused)
        need = n - produced
        rate = produced / drawn if drawn else 1.0
        m = min(chunk, max(1024, math.ceil(1.25 * need / max(rate, 1.0 / MAX_DRAWS_PER_ROW))))
        cells = rng.permutation(np.repeat(plan.cells, largest_remainder(plan.weights, m)))
        frame = plan.apply(sampler._draw_chunk(cells, latent, rng))
        drawn += m
        frame = frame.iloc[:need]
        produced += len(frame)
        if len(frame):
            yield frame
        if produced < n and drawn >= MIN_PROBE and produced * MAX_DRAWS_PER_ROW < drawn:
            raise TooRareError(refusal(plan, produced, drawn))


def refusal(plan: Plan, kept: int, drawn: int) -> str:
    """The one line that refuses a too-rare draw, with the rate achieved and what to do instead."""
    what = ", ".join(f"{k}={_show(v)}" for k, v in plan.conditions.items()) or "the declared checks"
    return (f"{what}: met by {kept / drawn:.4%} of generated rows ({kept:,} of {drawn:,} drawn), below the "
            f"{1 / MAX_DRAWS_PER_ROW:.2%} that bounded tries need; widen the condition (a range LO..HI for a "
            f"number) or condition on a context column or the target's class, which are exact")


def _show(v: Any) -> str:
    return f"{v[0]}..{v[1]}" if isinstance(v, tuple) and len(v) == 2 else str(v)
