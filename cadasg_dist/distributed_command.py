"""CLI glue for ``cadasg train --num-workers N [--use-gpu] [--address A]``: flags into
``cfg.distributed``, then ``fit_distributed``; the shard plan is printed to stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cadasg_dist.config import CADASGConfig


def fit_on_ray(cfg: CADASGConfig, args: argparse.Namespace) -> Any:
    from cadasg_dist.distributed.trainer import fit_distributed
    from cadasg_dist.synthesizer import CADASG

    overrides: dict[str, Any] = {"distributed.num_workers": args.num_workers}
    if args.use_gpu is not None:
        overrides["distributed.use_gpu"] = args.use_gpu
    if args.address is not None:
        overrides["distributed.address"] = args.address
    cfg = cfg.replace(**overrides)
    return fit_distributed(CADASG(cfg), args.data,
                           on_plan=lambda text: print(text, file=sys.stderr, flush=True))
