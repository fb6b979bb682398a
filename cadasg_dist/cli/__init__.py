"""The ``cadasg`` command line.

    cadasg schema DATA [--out FILE [--force]] [--target COL] [--context COL[,COL]]
    cadasg schema DATA --check FILE [--private]
    cadasg train DATA --target COL --context COL[,COL] [--epochs N] [--epsilon E] [--config FILE]
                 [--codebook FILE] --out DIR [--force] [--num-workers N [--use-gpu] [--address auto|ray://HOST:PORT]]
    cadasg sample DIR --n N [--context COL=VALUE ...] [--seed S] --out FILE.csv|FILE.parquet
    cadasg evaluate --real HOLDOUT --synthetic SYN [--train TRAIN] [--model DIR | --target COL --context COLS] --out DIR
    cadasg privacy DIR
    cadasg audit DIR --train TRAIN --holdout HOLDOUT [--canaries M] [--shadows K] [--out FILE]
    cadasg demo [--out DIR]
    cadasg serve DIR        (cadasg_dist/serving/README.md)
    cadasg federated DATA   (docs/guides/federated.md)
    cadasg tune DATA        (docs/guides/tuning.md)

One module per subcommand, each with ``add_parser(subparsers)`` registering its parser with
``set_defaults(func=run)``; ``COMMANDS`` lists them. The same flag means the same in every subcommand
(``common.py``): ``--context`` names context columns, ``--address`` the Ray cluster, ``--num-workers 0``
trains in this process, ``--force`` overwrites a model directory, and help shows the defaults.
Nothing heavy is imported to build the parser: each subcommand imports what it runs when it runs.
Flags parse into ``CADASGConfig`` (the one source of defaults; ``common.py``): a flag left out keeps
the value of ``--config`` or the dataclass default. A user error prints one line and exits with
code 2, and nothing is left half-written (tables and model directories are written to a temporary
name and renamed into place).
"""

from __future__ import annotations

import argparse
import importlib

from cadasg_dist.cli.common import EXIT_USAGE, CommandParser, add_version_flag, dispatch

# The subcommands, in the order ``cadasg --help`` lists them: modules of this package.
COMMANDS = ("schema", "train", "sample", "privacy", "audit", "demo", "evaluate", "serve", "federated", "tune")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cadasg", description="CA-DASG synthetic data generator")
    add_version_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for name in COMMANDS:  # imported here, not at the top: `python -m cadasg_dist.cli.NAME` runs one alone
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(make_parser().parse_args(argv))


__all__ = ["COMMANDS", "EXIT_USAGE", "main", "make_parser"]
