"""``cadasg sample``: synthetic rows from a trained model, written to a table.

    cadasg sample DIR --n N [--context COL=VALUE ...] [--seed S] --out FILE.csv|FILE.parquet

Sampling spends no privacy budget; the printed line carries the model's guarantee.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cadasg_dist.cli.common import privacy_line
from cadasg_dist.errors import CADASGError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sample", help="sample synthetic rows from a trained model")
    p.add_argument("model", help="model directory written by `cadasg train`")
    p.add_argument("--n", type=int, required=True, help="number of rows")
    p.add_argument("--context", action="append", default=[], metavar="COL=VALUE",
                   help="fix a context column (repeatable); the others follow their distribution")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same rows")
    p.add_argument("--out", required=True, help="output .csv or .parquet")
    p.set_defaults(func=run)
    return p


def parse_context(items: list[str]) -> dict[str, str]:
    """``["year=1984", ...]`` -> ``{"year": "1984", ...}``."""
    fixed: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise CADASGError(f"--context expects COLUMN=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        fixed[key.strip()] = value.strip()
    return fixed


def run(args: argparse.Namespace) -> int:
    from cadasg_dist.data.io import SUFFIXES, write_table
    from cadasg_dist.synthesizer import CADASG

    if args.n <= 0:
        raise CADASGError(f"--n must be a positive number of rows, got {args.n}")
    if Path(args.out).suffix.lower() not in SUFFIXES:
        raise CADASGError(f"--out must end in .csv or .parquet, got {args.out}")
    model = CADASG.load(args.model)
    start = time.perf_counter()
    rows = model.sample(args.n, context=parse_context(args.context), seed=args.seed)
    seconds = time.perf_counter() - start
    write_table(rows, args.out)
    print(f"{len(rows)} rows in {seconds:.2f}s ({len(rows) / max(seconds, 1e-9):,.0f} rows/s) -> {args.out}; "
          f"{privacy_line(model.ledger)}")
    return 0
