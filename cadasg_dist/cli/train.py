"""``cadasg train``: a generator trained on a CSV/Parquet table, written to a model directory.

    cadasg train DATA --target COL --context COL[,COL] [--epochs N] [--epsilon E] [--config FILE]
                 [--codebook FILE] --out DIR [--num-workers N [--use-gpu] [--address auto|ray://HOST:PORT]]

``--codebook`` (``cadasg schema``, confirmed by the data owner) declares column kinds, category
sets and bounds, public and free; the config's own ``data.columns`` entries win.

``--num-workers`` trains on Ray Train (``distributed.fit.fit_on_ray``); the shard plan goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cadasg_dist.cli.common import Progress, add_config_flags, build_config, privacy_line
from cadasg_dist.errors import CADASGError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a generator on a CSV/Parquet table")
    p.add_argument("data", help="CSV or Parquet file (or a directory of Parquet parts)")
    p.add_argument("--target", help="target column (its relationship to the rest is kept)")
    p.add_argument("--context", help="context column(s), comma-separated")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--num-workers", type=int, help="train on Ray Train with N workers, each on a shard of contexts")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per Ray worker")
    p.add_argument("--address", help="Ray cluster to join: auto or ray://HOST:PORT (default: start a local Ray)")
    add_config_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    if cfg.target is None:
        raise CADASGError("--target is required: the column whose relationship to the others must be kept")
    if args.num_workers is not None:
        from cadasg_dist.distributed.fit import fit_on_ray

        model = fit_on_ray(cfg, args.data, num_workers=args.num_workers, use_gpu=args.use_gpu,
                           address=args.address, on_plan=lambda text: print(text, file=sys.stderr, flush=True))
    else:
        from cadasg_dist.synthesizer import CADASG  # late: fit_on_ray checks the run before torch loads

        model = CADASG(cfg).fit(args.data, progress=Progress())
    out = model.save(args.out)
    print(f"trained on {model.meta['training_rows']} rows in {model.meta['fit_seconds']:.1f}s; "
          f"{len(model.contexts)} contexts; {privacy_line(model.ledger)}")
    print(f"model written to {out}")
    return 0
