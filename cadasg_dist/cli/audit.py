"""The ``audit`` subcommand: attack a trained model with its real training and holdout rows.

    cadasg audit MODEL --train TRAIN --holdout HOLDOUT [--canaries M] [--shadows K] [--seed S] [--out FILE.json]

From the saved model alone it runs the distance attack (membership of training vs holdout rows,
read from the model's samples). ``--canaries`` and ``--shadows`` refit the model's own saved config
on TRAIN (the one-run canary audit, the shadow-model attack), each refit as long as the original fit.
The output describes real rows: it is NOT privacy-protected, and the printed summary says so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cadasg_dist.errors import CADASGError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``audit`` on an ``argparse`` subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "audit", help="membership attacks on a trained model, from its real training and holdout rows",
        description="Attack a trained model: a distance attack on its samples, and optionally a one-run canary "
                    "audit (an ε lower bound) and a shadow-model attack, both refitting the model's saved config. "
                    "The result describes real rows: it is NOT privacy-protected, keep it with the data owner.")
    p.add_argument("model", help="model directory written by `cadasg train`")
    p.add_argument("--train", required=True, metavar="TRAIN", help="the rows the model trained on (CSV/Parquet)")
    p.add_argument("--holdout", required=True, metavar="HOLDOUT",
                   help="real rows the model never saw, split by the privacy unit if it has one (CSV/Parquet)")
    p.add_argument("--canaries", type=int, default=0, metavar="M",
                   help="one-run canary audit with M canaries from HOLDOUT (200 in bench/privacy.py; 0: none); "
                        "refits the model's config once")
    p.add_argument("--shadows", type=int, default=0, metavar="K",
                   help="shadow-model attack with K >= 2 shadow refits on half of HOLDOUT (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples, the canaries and the shadows")
    p.add_argument("--out", metavar="FILE", help="write the result as JSON here")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; prints the results (and writes ``--out``), returns 0."""
    if args.canaries < 0:
        raise CADASGError(f"--canaries must be >= 0 (0: no canary audit), got {args.canaries}")
    if args.shadows < 0 or args.shadows == 1:
        raise CADASGError(f"--shadows must be 0 (no shadow attack) or at least 2, got {args.shadows}")
    from cadasg_dist.data.io import read_table, write_text
    from cadasg_dist.evaluate.audit import audit_model, describe

    train, holdout = read_table(args.train), read_table(args.holdout)
    report = audit_model(args.model, train, holdout, canaries=args.canaries, shadows=args.shadows, seed=args.seed)
    print(describe(report))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
        print(f"written to {out}")
    print("(the audit describes real rows: it is not privacy-protected, do not publish it)")
    return 0
