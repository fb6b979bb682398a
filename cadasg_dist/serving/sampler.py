"""Many small sample requests in one pass, each getting exactly the rows ``CADASG.sample`` gives it.

``@serve.batch`` hands the deployment a list of concurrent requests. Merging them must not change
any request's rows: a client that repeats (n, context, seed) gets the same answer whatever else was
in the batch. So each request keeps its own random streams, replayed in the order
``CADASG.sample`` draws them:

1. per request (cheap, exact): ``default_rng(seed)``, the latent seed, the context allocation, the
   latent draw and the decoder forward pass. The decoder runs per request because a float32
   matrix product is not bitwise the same across batch sizes (we measured 1e-6 differences), and
   a different last digit would be a different row.
2. merged (the pandas-heavy part, ~80% of the time at n=100): one ``DataTransformer.decode`` over
   the stacked probabilities, with a random source that draws each request's share from that
   request's own generator, then one ``extractor.fill``; the frame is then split back.

Privacy: this reads only the model and its cache (post-processing of the DP release); it spends
no budget. Requests larger than one chunk of ``CADASG.sample`` never come here.

``tests/unit/test_serving_sampler.py`` checks that every request equals ``model.sample`` alone,
so a change to the library's sampling order fails a test instead of silently changing rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.sampling import CHUNK_ROWS
from cadasg_dist.sampling import conditions as conds
from cadasg_dist.sampling.api import Sampling
from cadasg_dist.sampling.draw import fresh_seed
from cadasg_dist.sampling.loop import frames, streams
from cadasg_dist.sampling.run import check_count


@dataclass(frozen=True)
class SampleJob:
    """One request: ``n`` rows of ``context`` with ``seed``, from ``model``; ``merge``: whether it may
    share a pass (see :func:`merge_is_exact`)."""

    model: Sampling  # a CADASG or a SampledModel
    n: int
    context: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    merge: bool = True


# sample() decodes at most this many rows at a time; a merged pass must not be larger.
_SAMPLE_CHUNK: int = inspect.signature(Sampling.sample).parameters["chunk"].default


class _Unbatchable(Exception):
    """The library drew randomness in a way the merged pass cannot replay."""


class _StackedRandom:
    """Stands in for one ``np.random.Generator`` over stacked requests.

    ``random(size)`` over all stacked rows returns each request's share drawn from that request's
    own generator, in order: exactly what ``decode`` would draw for each request alone. Any other
    use raises, and the caller falls back to one ``sample()`` per request.
    """

    def __init__(self, rngs: list[np.random.Generator], sizes: list[int]) -> None:
        self._rngs, self._sizes, self._total = rngs, sizes, sum(sizes)

    def random(self, size: int | None = None) -> np.ndarray:
        if size != self._total:
            raise _Unbatchable(f"random({size}) over {self._total} stacked rows")
        return np.concatenate([r.random(k) for r, k in zip(self._rngs, self._sizes)])

    def __getattr__(self, name: str) -> Any:
        raise _Unbatchable(f"decode used Generator.{name}")


def _probabilities(job: SampleJob) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """``CADASG.sample`` up to the decoder, for one job: (its rng, context id per row, probabilities)."""
    model = job.model
    rng, latent = streams(job.seed)
    cell = model.cell_allocation(int(job.n), job.context or None, rng)
    probs = model.feature_probs(cell, latent)  # (n, D)
    return rng, cell // model.dims.strata, probs


def _merged(model: Sampling, jobs: list[SampleJob]) -> list[pd.DataFrame]:
    if model.constraints:  # broken rows are redrawn from each request's own streams: one sample() each
        raise _Unbatchable("the model has constraints")
    parts = [_probabilities(job) for job in jobs]
    sizes = [len(ids) for _, ids, _ in parts]
    ids = np.concatenate([p[1] for p in parts])
    probs = np.concatenate([p[2] for p in parts])  # (sum n, D)
    frame = model.transformer.decode(probs, _StackedRandom([p[0] for p in parts], sizes))
    frame = model.extractor.fill(frame, ids)
    frame = model.schema.with_derived(frame)
    bounds = np.cumsum([0, *sizes])
    return [frame.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds, bounds[1:])]


def sample_many(jobs: list[SampleJob], *, max_rows: int = CHUNK_ROWS) -> list[pd.DataFrame]:
    """Rows for every job, in order; each equal to ``job.model.sample(n, context=, seed=)``.

    Jobs of the same model (the same loaded version) share one decode pass of at most
    ``max_rows`` rows (keep it at most ``sample()``'s chunk); jobs of different versions (during a
    swap) are decoded separately; a job with ``merge=False`` is one ``sample()`` call.
    Raises what ``CADASG.sample`` raises for a job (``ContextError``, ``InvalidDataError``):
    validate contexts before merging so one bad request cannot fail the others.
    """
    max_rows = min(max_rows, _SAMPLE_CHUNK)
    out: list[pd.DataFrame | None] = [None] * len(jobs)
    groups: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(id(job.model), []).append(i)
    for idx in groups.values():
        start = 0
        while start < len(idx):
            chunk, rows = [], 0
            for i in idx[start:]:
                if chunk and rows + jobs[i].n > max_rows:
                    break
                chunk.append(i)
                rows += jobs[i].n
            start += len(chunk)
            try:
                if rows > max_rows or not all(jobs[i].merge for i in chunk):
                    raise _Unbatchable("merging disabled")
                frames = _merged(jobs[chunk[0]].model, [jobs[i] for i in chunk])
            except _Unbatchable:
                frames = [jobs[i].model.sample(jobs[i].n, context=jobs[i].context or None, seed=jobs[i].seed)
                          for i in chunk]
            for i, frame in zip(chunk, frames):
                out[i] = frame
    return out  # type: ignore[return-value]


def iter_sample(model: Sampling, n: int, *, context: dict[str, Any] | None = None, seed: int | None = 0,
                chunk: int = _SAMPLE_CHUNK) -> Iterator[pd.DataFrame]:
    """``model.sample(n, context=, seed=, chunk=)`` one decode chunk at a time, generated lazily: the
    same chunk loop as ``sample`` (``sampling.loop.frames``), so the frames concatenate to exactly its
    rows, but only one chunk is ever held, so a large answer can be streamed with bounded memory.

    Validates like ``sample`` before the first row (raises ``InvalidDataError``/``ContextError``
    then, not mid-stream). ``tests/unit/test_serving_sampler.py`` checks the equality.
    """
    n = check_count(n)
    sampler = model.sampler  # checks the model is fitted
    plan = conds.plan(model, None, context)  # an unknown context raises here, before the first row
    rng, g = streams(fresh_seed() if seed is None else int(seed))
    return _numbered(frames(sampler, n, plan, rng, g, chunk))


def _numbered(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The frames of ``sample``'s chunk loop, indexed as ``sample``'s one frame would be."""
    start = 0
    for frame in parts:
        yield frame.set_axis(range(start, start + len(frame)))
        start += len(frame)


def merge_is_exact(model: Sampling) -> bool:
    """Whether merged passes give this model exactly the rows of ``sample()``: run once per loaded
    version, so a library change to the sampling order degrades to unmerged passes, not to
    different rows. Costs a few small samples."""
    some = model.contexts[: 2]
    jobs = [SampleJob(model, 1, {}, 0), SampleJob(model, 37, some[0], 1), SampleJob(model, 5, some[-1], 2),
            SampleJob(model, 64, {}, 3)]
    try:
        merged = _merged(model, jobs)
        return all(frame.equals(model.sample(j.n, context=j.context or None, seed=j.seed))
                   for j, frame in zip(jobs, merged))
    except _Unbatchable:
        return False
