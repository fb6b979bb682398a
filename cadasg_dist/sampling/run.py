"""What ``CADASG.sample`` and ``CADASG.sample_remaining`` do, on the model's ``Sampler``.

Seeds: ``seed=None`` draws a fresh one from the operating system (``draw.fresh_seed``) and the
model reports it as ``model.last_seed``, so any draw can be repeated exactly with ``seed=``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.data.values import category_key, is_missing
from cadasg_dist.errors import InvalidDataError
from cadasg_dist.sampling import conditions as conds
from cadasg_dist.sampling.draw import Sampler, fresh_seed
from cadasg_dist.sampling.loop import frames, streams

# Bytes an output value takes in a DataFrame (a number, or a pointer to a shared category object),
# and how many copies of the rows an in-memory draw holds at its peak (the chunks and their concatenation).
VALUE_BYTES = 8
PEAK_COPIES = 2


def check_count(n: Any) -> int:
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n <= 0:
        raise InvalidDataError(f"n must be a positive integer, got {n!r}")
    return int(n)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(model: Any, n: int) -> None:
    """Refuse an in-memory draw larger than the memory available, before anything is built."""
    need = n * len(model.schema.output_names) * VALUE_BYTES * PEAK_COPIES
    free = available_memory()
    if free is not None and need > free:
        raise InvalidDataError(f"{n:,} rows need about {need / 2**30:.1f} GiB in memory, more than the "
                               f"{free / 2**30:.1f} GiB available; write them to a file in chunks instead: "
                               f"model.sample_to_file(path, n) or `cadasg sample MODEL --n {n} --out FILE.parquet`")


def draw(model: Any, sampler: Sampler, n: int, *, conditions: dict[str, Any] | None,
         context: dict[str, Any] | None, seed: int | None, chunk: int) -> tuple[pd.DataFrame, int]:
    """``n`` rows meeting ``context`` and ``conditions``, and the seed that drew them."""
    n = check_count(n)
    if not isinstance(chunk, int) or chunk <= 0:
        raise InvalidDataError(f"chunk must be a positive integer, got {chunk!r}")
    check_fits_in_memory(model, n)
    the_plan = conds.plan(model, conditions, context)
    seed = fresh_seed() if seed is None else int(seed)
    rng, g = streams(seed)
    parts = list(frames(sampler, n, the_plan, rng, g, chunk))
    return (parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)), seed


def remaining(model: Any, sampler: Sampler, known: pd.DataFrame, *, seed: int | None, chunk: int
              ) -> tuple[pd.DataFrame, int]:
    """Complete the partial rows of ``known``: each row's present values are its conditions, its
    missing cells are generated. Rows with the same known values are drawn together; the result has
    ``known``'s index, every output column, and the given values in place."""
    if not isinstance(known, pd.DataFrame):
        raise InvalidDataError(f"sample_remaining expects a DataFrame of partial rows, got {type(known).__name__}")
    unknown = [c for c in known.columns if c not in model.schema.output_names]
    if unknown:
        raise InvalidDataError(f"unknown column {unknown[0]!r} in the partial rows; columns: "
                               f"{', '.join(model.schema.output_names)}")
    if len(known) == 0:
        raise InvalidDataError("sample_remaining got no rows to complete")
    seed = fresh_seed() if seed is None else int(seed)
    rng, g = streams(seed)
    groups: dict[tuple, list[int]] = {}
    given: dict[tuple, dict[str, Any]] = {}
    for pos, row in enumerate(known.itertuples(index=False, name=None)):
        fixed = {c: _plain(v) for c, v in zip(known.columns, row) if not is_missing(v)}
        key = tuple(sorted((c, repr(category_key(v))) for c, v in fixed.items()))
        groups.setdefault(key, []).append(pos)
        given.setdefault(key, fixed)
    parts, order = [], []
    for key, rows in groups.items():
        the_plan = conds.plan(model, given[key], None)
        parts.extend(frames(sampler, len(rows), the_plan, rng, g, chunk))
        order.extend(rows)
    out = pd.concat(parts, ignore_index=True)
    out = out.iloc[np.argsort(np.asarray(order), kind="stable")]
    out.index = known.index
    return out, seed


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
