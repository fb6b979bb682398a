"""Training on Ray Train from a config and a worker count: what ``cadasg train --num-workers N``
and ``cadasg demo`` run. The shard plan goes to ``on_plan`` as text (the CLI prints it).

Everything that can be checked without Ray (config, privacy settings, the table's source and
columns, a private run's declarations) is checked first (``preflight.check_before_ray``): a bad run
fails in a moment, not after Ray's start-up and a pass over the data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cadasg_dist.config import CADASGConfig

if TYPE_CHECKING:
    import pandas as pd

    from cadasg_dist.synthesizer import CADASG


def fit_on_ray(cfg: CADASGConfig, data: str | Path | pd.DataFrame, *, num_workers: int,
               use_gpu: bool | None = None, address: str | None = None,
               on_plan: Callable[[str], None] | None = None) -> CADASG:
    """A model trained by ``num_workers`` Ray Train workers; ``use_gpu`` and ``address`` left
    ``None`` keep ``cfg.distributed``'s values. Rank 0 prints the epochs live, through Ray's log relay.

    Raises ``ConfigError`` or ``InvalidDataError`` before Ray is imported or started for whatever
    ``preflight.check_before_ray`` finds."""
    from cadasg_dist.distributed.preflight import check_before_ray

    overrides: dict[str, Any] = {"distributed.num_workers": num_workers}
    if use_gpu is not None:
        overrides["distributed.use_gpu"] = use_gpu
    if address is not None:
        overrides["distributed.address"] = address
    cfg = cfg.replace(**overrides)  # validated: a bad worker count fails here
    check_before_ray(cfg, data)

    from cadasg_dist.distributed.trainer import fit_distributed  # late: Ray is heavy
    from cadasg_dist.synthesizer import CADASG

    return fit_distributed(CADASG(cfg), data, on_plan=on_plan)
