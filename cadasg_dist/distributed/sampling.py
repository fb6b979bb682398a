"""Sampling on Ray: ``n`` synthetic rows written as Parquet parts by ``num_workers`` Ray tasks.

The driver loads the model only to split the rows: each context cell gets its share of ``n`` from
the model's (noisy, already released) cache counts, exactly as ``CADASG.sample`` allocates them,
and the contexts are packed onto workers with the training's ``make_plan`` (a large context is
split in pieces). Each worker loads the model itself and draws its pieces in chunks of
``SAMPLE_CHUNK_ROWS`` rows with ``CADASG.sample(..., context=...)``, writing each chunk as one
Parquet part before drawing the next, so its memory is one chunk whatever ``n`` is. Sampling reads
nothing but the model: it spends no privacy budget.

Rows are a pure function of (model, n, seed, conditions): every chunk's seed comes from
(seed, context, piece, chunk), not from the worker that draws it; the parts are named by context
and piece, so a different worker count gives the same rows in the same files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cadasg_dist.distributed.plan import make_plan
from cadasg_dist.errors import ConfigError, InvalidDataError
from cadasg_dist.sampled import load_for_sampling

# Rows one worker draws, holds and writes at a time.
SAMPLE_CHUNK_ROWS = 100_000


def sample_on_ray(model_dir: str | Path, n: int, out_dir: str | Path, *, num_workers: int, seed: int = 0,
                  conditions: dict[str, Any] | None = None) -> list[Path]:
    """Write ``n`` rows of the model at ``model_dir`` to ``out_dir`` as Parquet parts; returns their paths.

    ``conditions`` fixes context columns ({"region": "west"}): only the matching context cells are
    drawn, in their shares. Uses the Ray this process is connected to, else starts a local one
    (``RAY_ADDRESS`` names a cluster to join) and stops it at the end. ``out_dir`` must be empty or
    new; the parts appear in it only once all are written.
    """
    import ray

    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n <= 0:
        raise InvalidDataError(f"n must be a positive integer, got {n!r}")
    if num_workers < 1:
        raise ConfigError(f"num_workers must be >= 1, got {num_workers}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidDataError(f"{out} exists and is not an empty directory: choose a new --out directory")
    pieces = plan_pieces(load_for_sampling(model_dir), int(n), min(num_workers, int(n)), conditions)
    started = not ray.is_initialized()
    if started:
        ray.init(address=os.environ.get("RAY_ADDRESS", "local"), configure_logging=False, log_to_driver=False)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:
        draw = ray.remote(num_cpus=1)(draw_pieces)
        refs = [draw.remote(str(model_dir), mine, str(staging), seed, conditions) for mine in pieces if mine]
        written = [Path(p) for names in ray.get(refs) for p in names]
        final = []
        for p in sorted(written):
            final.append(out / p.name)
            p.replace(final[-1])
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if started:
            ray.shutdown()


def plan_pieces(model: Any, n: int, num_workers: int, conditions: dict[str, Any] | None
                ) -> list[list[tuple[int, int, int]]]:
    """Per worker, its (context, piece, rows): the contexts' shares of ``n`` packed by ``make_plan``."""
    extractor = model.extractor
    ids = extractor.resolve(conditions) if conditions else np.arange(extractor.n_contexts)
    if len(ids) == 0:
        raise InvalidDataError(f"no context matches {conditions}; known: {extractor.known_text()}")
    weights = model.sampler.pack.cell_counts.reshape(extractor.n_contexts, -1).sum(axis=1)[ids]
    counts = np.zeros(extractor.n_contexts, dtype=np.int64)
    counts[ids] = largest_remainder(weights if weights.sum() > 0 else np.ones(len(ids)), n)
    plan = make_plan(counts, num_workers, slack=0.0)
    out: list[list[tuple[int, int, int]]] = [[] for _ in range(num_workers)]
    for c, parts in enumerate(plan.pieces):
        for k, p in enumerate(parts):
            out[p.worker].append((c, k, p.rows))
    return out


def largest_remainder(weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` split in proportion to ``weights``, in integers summing to ``n`` (largest remainders)."""
    share = np.asarray(weights, dtype=np.float64) * n / float(np.sum(weights))
    base = np.floor(share).astype(np.int64)
    base[np.argsort(-(share - base), kind="stable")[: n - int(base.sum())]] += 1
    return base


def draw_pieces(model_dir: str, pieces: list[tuple[int, int, int]], staging: str, seed: int,
                conditions: dict[str, Any] | None) -> list[str]:
    """One worker: draw each (context, piece, rows) in chunks and write each chunk as a Parquet part."""
    model = load_for_sampling(model_dir)  # numpy only: the task does not import torch
    written = []
    for context, piece, rows in pieces:
        fixed = {**(conditions or {}), **model.extractor.describe(context)}
        for j, start in enumerate(range(0, rows, SAMPLE_CHUNK_ROWS)):
            k = min(SAMPLE_CHUNK_ROWS, rows - start)
            chunk_seed = int(np.random.SeedSequence([seed, context, piece, j]).generate_state(1)[0])
            path = Path(staging) / f"part-c{context:04d}-p{piece:03d}-{j:05d}.parquet"
            model.sample(k, seed=chunk_seed, context=fixed or None).to_parquet(path, index=False)
            written.append(str(path))
    return written
