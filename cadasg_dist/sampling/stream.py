"""Sampling straight to a file, one chunk at a time, in bounded memory.

Parquet is written with ``pyarrow.parquet.ParquetWriter``, one row group per chunk; CSV is
appended chunk by chunk. Memory is one chunk of rows (and its Arrow copy), whatever ``n`` is. The
file appears only when complete: rows go to a temporary file beside it, renamed at the end, and
removed on any failure.

The draw is recorded with the rows: Parquet key-value metadata holds ``cadasg.seed``,
``cadasg.rows``, ``cadasg.conditions`` (JSON) and ``cadasg.version``; a CSV file, which has no
metadata, gets the same keys in a sidecar ``FILE.csv.meta.json``. With the same seed and chunk
the rows are those of ``CADASG.sample``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cadasg_dist._version import __version__
from cadasg_dist.data.io import SUFFIXES
from cadasg_dist.errors import InvalidDataError
from cadasg_dist.sampling import conditions as conds
from cadasg_dist.sampling.draw import Sampler, fresh_seed
from cadasg_dist.sampling.loop import frames, streams
from cadasg_dist.sampling.run import check_count


@dataclass(frozen=True)
class SampleResult:
    """What ``sample_to_file`` wrote: the file, its row count and the seed that repeats it."""

    path: Path
    rows: int
    seed: int


def sidecar(path: str | Path) -> Path:
    """Where a CSV sample's metadata goes (CSV has no place for it)."""
    return Path(f"{path}.meta.json")


def to_file(model: Any, sampler: Sampler, path: str | Path, n: int, *, chunk: int, seed: int | None,
            conditions: dict[str, Any] | None, context: dict[str, Any] | None) -> SampleResult:
    """Write ``n`` rows to ``path`` (.parquet or .csv) in chunks of ``chunk`` rows."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidDataError(f"cannot write {p}: the file name must end in .csv or .parquet")
    n = check_count(n)
    if not isinstance(chunk, int) or chunk <= 0:
        raise InvalidDataError(f"chunk must be a positive integer, got {chunk!r}")
    the_plan = conds.plan(model, conditions, context)
    seed = fresh_seed() if seed is None else int(seed)
    rng, g = streams(seed)
    meta = {"cadasg.seed": str(seed), "cadasg.rows": str(n), "cadasg.version": __version__,
            "cadasg.conditions": json.dumps({k: _jsonable(v) for k, v in the_plan.conditions.items()})}
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        parts = _row_groups(frames(sampler, n, the_plan, rng, g, chunk), chunk)
        if suffix == ".csv":
            _write_csv(parts, tmp)
            sidecar(p).write_text(json.dumps(meta, indent=1) + "\n")
        else:
            _write_parquet(parts, tmp, meta)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return SampleResult(p, n, seed)


def _row_groups(parts: Iterator[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """The frames regrouped so that each (but the last) holds at least ``rows`` rows: rejection
    rounds can yield a few rows at a time, and a row group per round would bloat the file."""
    held: list[pd.DataFrame] = []
    count = 0
    for frame in parts:
        held.append(frame)
        count += len(frame)
        if count >= rows:
            yield held[0] if len(held) == 1 else pd.concat(held, ignore_index=True)
            held, count = [], 0
    if held:
        yield held[0] if len(held) == 1 else pd.concat(held, ignore_index=True)


def _write_csv(parts: Iterator[pd.DataFrame], tmp: str) -> None:
    with open(tmp, "w", newline="") as f:
        for i, frame in enumerate(parts):
            frame.to_csv(f, header=i == 0, index=False)


def _write_parquet(parts: Iterator[pd.DataFrame], tmp: str, meta: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = schema = None
    try:
        for frame in parts:
            if writer is None:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
                schema = pa.schema(fields, metadata={**(table.schema.metadata or {}),
                                                     **{k.encode(): v.encode() for k, v in meta.items()}})
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
    finally:
        if writer is not None:
            writer.close()


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v if isinstance(v, str | int | float | bool | type(None)) else str(v)
