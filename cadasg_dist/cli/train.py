"""``cadasg train``: a generator trained on a CSV/Parquet table, written to a model directory.

    cadasg train DATA --target COL --context COL[,COL] [--epochs N] [--epsilon E] [--config FILE]
                 [--codebook FILE] --out DIR [--force] [--num-workers N [--use-gpu] [--address auto|ray://HOST:PORT]]

``--codebook`` (``cadasg schema``, confirmed by the data owner) declares column kinds, category
sets and bounds, public and free; the config's own ``data.columns`` entries win.

``--num-workers N`` (N >= 1) trains on Ray Train (``distributed.fit.fit_on_ray``; the shard plan goes
to stderr); ``--num-workers 0`` or none trains in this process. ``--target``, the workers and ``--out``
are checked before the table is read; an existing model directory is replaced only with ``--force``.
A non-private run prints warnings about the schema it infers (``data.inspect``); a private run's
schema comes from declarations and DP releases and is not inspected.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cadasg_dist.cli.common import (
    CONTEXT_HELP,
    TARGET_HELP,
    Progress,
    add_address_flag,
    add_config_flags,
    add_force_flag,
    add_num_workers_flag,
    build_config,
    check_num_workers,
    check_overwrite,
    plain_doc,
    privacy_line,
    require_target,
)
from cadasg_dist.errors import ConfigError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a generator on a CSV/Parquet table", description=plain_doc(__doc__))
    p.add_argument("data", help="CSV or Parquet file (or a directory of Parquet parts)")
    p.add_argument("--target", metavar="COL", help=TARGET_HELP)
    p.add_argument("--context", metavar="COL[,COL]", help=CONTEXT_HELP)
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    add_force_flag(p)
    add_num_workers_flag(p, "Ray Train workers, each on a shard of contexts (default: 0, train in this process)")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per Ray worker")
    add_address_flag(p, "Ray cluster to train on, with --num-workers N")
    add_config_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    require_target(cfg, "the column whose relationship to the others must be kept")
    check_num_workers(args.num_workers)
    on_ray = bool(args.num_workers)
    if not on_ray and (args.address or args.use_gpu):
        raise ConfigError("--address and --use-gpu go with --num-workers N (N >= 1); "
                          "without it (or with 0) training runs in this process")
    check_overwrite(args.out, args.force)
    progress = Progress()
    if on_ray:
        from cadasg_dist.distributed.fit import fit_on_ray

        progress.stage(f"training on Ray Train with {args.num_workers} workers: reading {args.data} ...")
        model = fit_on_ray(cfg, args.data, num_workers=args.num_workers, use_gpu=args.use_gpu,
                           address=args.address, on_plan=lambda text: print(text, file=sys.stderr, flush=True))
    else:
        model = fit_here(cfg, args.data, progress)
    out = model.save(args.out)
    print(f"trained on {model.meta['training_rows']} rows in {model.meta['fit_seconds']:.1f}s; "
          f"{len(model.contexts)} contexts; {privacy_line(model.ledger)}")
    print(f"model written to {out}")
    return 0


def fit_here(cfg: Any, data: str, progress: Progress) -> Any:
    """Train in this process, saying what happens before the first epoch: reading, preparing, and
    (non-private) the schema's warnings."""
    import time

    from cadasg_dist.train.progress import preparing_line, reading_line

    start = time.perf_counter()
    progress.stage(reading_line(data))
    from cadasg_dist.data.io import read_table
    from cadasg_dist.synthesizer import CADASG

    df = read_table(data)
    progress.stage(preparing_line(len(df), cfg.private))
    model = CADASG(cfg)
    prepared = model.prepare(df)
    if not prepared.config.private:  # a private run's schema is declared or DP-released: nothing to inspect
        from cadasg_dist.data.inspect import schema_warnings

        for line in schema_warnings(df, prepared.schema, context=prepared.config.context.columns,
                                    n_contexts=prepared.extractor.n_contexts):
            print(f"cadasg: warning: {line}", file=sys.stderr, flush=True)
    return model.fit_prepared(prepared, progress, started=start)
