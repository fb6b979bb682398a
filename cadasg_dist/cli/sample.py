"""``cadasg sample``: synthetic rows from a trained model, streamed to a table.

    cadasg sample DIR --n N --out FILE.csv|FILE.parquet [--condition COL=VALUE ...]
                  [--context COL=VALUE ...] [--seed S] [--chunk ROWS] [--num-workers N]

``--condition`` fixes any column: ``COL=VALUE`` (a category, or a number), ``COL=LO..HI`` (a
numeric range, either end may be left out); see ``CADASG.sample`` for how each is met.
The rows are written in chunks (a Parquet row group each), so any ``--n`` runs in bounded memory.
Without ``--seed`` a fresh seed is drawn; it is printed on stderr (``seed: S``) and stored with the
rows: Parquet key-value metadata ``cadasg.seed``, or for CSV the sidecar ``FILE.csv.meta.json``.
``--num-workers N`` (N >= 1) draws on Ray (``distributed.sampling.sample_on_ray``) and writes
Parquet parts into the directory ``--out``; 0, the default, draws in this process.

Sampling spends no privacy budget; the printed line carries the model's guarantee.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from cadasg_dist.cli.common import privacy_line
from cadasg_dist.errors import CADASGError
from cadasg_dist.sampling import CHUNK_ROWS


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sample", help="sample synthetic rows from a trained model",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="model directory written by `cadasg train`")
    p.add_argument("--n", type=int, required=True, help="number of rows")
    p.add_argument("--condition", action="append", default=[], metavar="COL=VALUE",
                   help="fix any column to a value, or a number to a range COL=LO..HI (repeatable)")
    p.add_argument("--context", action="append", default=[], metavar="COL=VALUE",
                   help="fix a context column (repeatable); the others follow their distribution")
    p.add_argument("--seed", type=int, default=None, help="the same seed gives the same rows (default: a fresh "
                   "seed, printed on stderr and stored with the rows)")
    p.add_argument("--chunk", type=int, default=CHUNK_ROWS, help="rows drawn and written at a time (a row group)")
    p.add_argument("--num-workers", type=int, default=0,
                   help="0: sample in this process; N >= 1: sample on N Ray workers into Parquet parts in --out")
    p.add_argument("--out", required=True, help="output .csv or .parquet (a directory with --num-workers)")
    p.set_defaults(func=run)
    return p


def parse_context(items: list[str], flag: str = "--context") -> dict[str, str]:
    """``["year=1984", ...]`` -> ``{"year": "1984", ...}``."""
    fixed: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise CADASGError(f"{flag} expects COLUMN=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        if key.strip() in fixed:
            raise CADASGError(f"{flag} gives column {key.strip()!r} twice; give each column once")
        fixed[key.strip()] = value.strip()
    return fixed


def parse_conditions(items: list[str]) -> dict[str, Any]:
    """``["age=40..55", "sex=F"]`` -> ``{"age": ("40", "55"), "sex": "F"}``: ``LO..HI`` is a range
    (an empty end is open: None); numbers are read by the model, which knows the column's kind."""
    out: dict[str, Any] = {}
    for key, value in parse_context(items, "--condition").items():
        if ".." in value:
            lo, hi = value.split("..", 1)
            out[key] = (lo.strip() or None, hi.strip() or None)
        else:
            out[key] = value
    return out


def check_args(args: argparse.Namespace) -> None:
    """Every flag checked before the model is read."""
    from cadasg_dist.data.io import SUFFIXES

    if args.n <= 0:
        raise CADASGError(f"--n must be a positive number of rows, got {args.n}")
    if args.chunk <= 0:
        raise CADASGError(f"--chunk must be a positive number of rows, got {args.chunk}")
    if args.num_workers < 0:
        raise CADASGError(f"--num-workers must be 0 (in this process) or a number of Ray workers, got "
                          f"{args.num_workers}")
    suffix = Path(args.out).suffix.lower()
    if args.num_workers > 0:
        if suffix == ".csv":
            raise CADASGError(f"--num-workers writes Parquet parts into a directory: give --out DIR, got {args.out}")
    elif suffix not in SUFFIXES:
        raise CADASGError(f"--out must end in .csv or .parquet, got {args.out}")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    context, conditions = parse_context(args.context), parse_conditions(args.condition)
    if args.num_workers > 0:
        return _run_on_ray(args, {**context, **conditions})
    from cadasg_dist.sampled import load_for_sampling

    model = load_for_sampling(args.model)  # numpy only: sampling a saved model does not import torch
    start = time.perf_counter()
    result = model.sample_to_file(args.out, args.n, chunk=args.chunk, seed=args.seed, conditions=conditions,
                                  context=context)
    seconds = time.perf_counter() - start
    print(f"seed: {result.seed} (repeat this draw with --seed {result.seed})", file=sys.stderr)
    print(f"{result.rows} rows in {seconds:.2f}s ({result.rows / max(seconds, 1e-9):,.0f} rows/s) -> {args.out}; "
          f"{privacy_line(model.ledger, model.epsilon)}")
    return 0


def _run_on_ray(args: argparse.Namespace, conditions: dict[str, Any]) -> int:
    from cadasg_dist.sampling.draw import fresh_seed

    try:
        from cadasg_dist.distributed.sampling import sample_on_ray
    except ImportError as exc:
        raise CADASGError(f"--num-workers {args.num_workers} samples on Ray, which is not available here ({exc}); "
                          "install the distributed extra or use --num-workers 0") from None
    seed = fresh_seed() if args.seed is None else args.seed
    print(f"seed: {seed} (repeat this draw with --seed {seed})", file=sys.stderr)
    start = time.perf_counter()
    sample_on_ray(args.model, args.n, args.out, num_workers=args.num_workers, seed=seed, conditions=conditions)
    seconds = time.perf_counter() - start
    print(f"{args.n} rows in {seconds:.2f}s on {args.num_workers} Ray workers -> {args.out}")
    return 0
