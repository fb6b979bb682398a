"""``cadasg schema``: draft a codebook from a table, or check a codebook against one.

    cadasg schema DATA [--out FILE [--force]] [--target COL] [--context COL[,COL]]
    cadasg schema DATA --check FILE [--private]

The draft is READ FROM THE DATA, so it is not public until the data owner confirms each entry
from documentation (its header says so); a confirmed codebook is then passed to ``cadasg train
--codebook FILE``. Without ``--out`` the draft goes to stdout and the table of columns to stderr.
``--check`` prints every problem, one line each, and exits 2 if there is any (0 if none);
``--private`` names no value of the table (counts and shares only), for output that may be shared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from cadasg_dist.cli.common import EXIT_USAGE
from cadasg_dist.errors import CADASGError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("schema", help="draft a codebook from a table, or check one against it")
    p.add_argument("data", help="CSV or Parquet file (or a directory of Parquet parts)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--out", metavar="FILE", help="write the draft codebook here (default: stdout)")
    mode.add_argument("--check", metavar="FILE", help="check this codebook against DATA: every problem, "
                                                      "one line each; exit 2 if any")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--target", help="the target column you will train with (for the draft's warnings)")
    p.add_argument("--context", help="the context column(s) you will train with, comma-separated "
                                     "(warns when the rows cannot support their levels)")
    p.add_argument("--private", action="store_true",
                   help="with --check: name no value of the table, only counts and shares")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cadasg_dist.config import csv_list
    from cadasg_dist.data.codebook import Codebook
    from cadasg_dist.data.io import read_table

    if args.check:
        if args.force or args.target or args.context:
            raise CADASGError("--check reads DATA and the codebook only: drop --force, --target and --context")
        return _check(Codebook.from_yaml(args.check), read_table(args.data), Path(args.check), args.private)
    if args.private:
        raise CADASGError("--private goes with --check (a draft is read from the data by design)")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.force:
        raise CADASGError(f"{out} exists; pass --force to overwrite it")
    if out is not None and not out.parent.is_dir():
        raise CADASGError(f"cannot write {out}: folder {out.parent} does not exist")
    df = read_table(args.data)
    book = Codebook.detect(df)
    context = tuple(csv_list(args.context)) if args.context else ()
    warnings = book.warnings(df, target=args.target, context=context)
    table = sys.stdout if out is not None else sys.stderr
    print_table(book, warnings, table)
    if out is None:
        sys.stdout.write(book.to_yaml_text(source=Path(args.data).name))
        return 0
    book.to_yaml(out, source=Path(args.data).name)
    print(f"draft codebook written to {out}: READ FROM THE DATA, so confirm every entry from documentation "
          f"before treating it as public; check it with: cadasg schema {args.data} --check {out}")
    return 0


def _check(book: Any, df: Any, path: Path, private: bool) -> int:
    problems = book.check(df, private=private)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} between {path} and the data",
              file=sys.stderr)
        return EXIT_USAGE
    print(f"{path} matches the data: no problem found")
    return 0


def print_table(book: Any, warnings: list[str], stream: TextIO) -> None:
    """One line per column (name, kind, what the draft declares), then the warnings."""
    width = min(24, max(len(c.name) for c in book.columns))
    for c in book.columns:
        if c.kind == "identifier":
            what = f"dropped: {c.identifier}"
        elif c.categories is not None:
            shown = ", ".join(map(str, c.categories[:6])) + (", ..." if len(c.categories) > 6 else "")
            what = f"{len(c.categories)} categories: {shown}"
        elif c.min is not None:
            what = f"[{c.min}, {c.max}]"
        else:
            what = ""
        print(f"  {c.name:<{width}}  {c.kind:<11}  {what}".rstrip(), file=stream)
    for line in warnings:
        print(f"warning: {line}", file=stream)
