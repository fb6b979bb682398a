"""Driving a federated run: silo sources, the plan, the Flower run config, the simulation engine.

``cadasg federated`` (``cadasg_dist/cli/federated.py``) and ``flwr run .`` (through
``federated/server_app.py``) both end up in ``run_server``; this module turns their inputs (a table
split by a column, or a directory with one file per silo) into ``ServerSettings``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from cadasg_dist.config import CADASGConfig, flag_overrides
from cadasg_dist.data.io import read_table
from cadasg_dist.errors import ConfigError, InvalidDataError
from cadasg_dist.federation.config import FederatedConfig, load_configs
from cadasg_dist.federation.plan import FederationPlan, build_plan
from cadasg_dist.federation.server import ServerSettings

log = logging.getLogger(__name__)

SILO_SUFFIXES = (".csv", ".parquet", ".pq")


def silo_sources(data: str | Path | None, silo_column: str | None, silos_dir: str | Path | None
                 ) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """One source per silo and the pooled table (which only ``build_plan`` reads, through DP).

    ``data`` + ``silo_column``: a silo per value of the column; ``silos_dir``: a silo per file.
    """
    if (silo_column is None) == (silos_dir is None):
        raise ConfigError("give either DATA with --silo-column COL, or --silos DIR (one file per silo)")
    if silos_dir is not None:
        d = Path(silos_dir)
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in SILO_SUFFIXES) if d.is_dir() else []
        if len(files) < 2:
            raise InvalidDataError(f"--silos {d} must be a directory with two or more .csv/.parquet files, "
                                   "one per silo")
        frames = [read_table(p) for p in files]
        if len({tuple(f.columns) for f in frames}) != 1:
            raise InvalidDataError(f"the silo files in {d} do not have the same columns")
        sources = [{"name": p.stem, "kind": "file", "path": str(p.resolve())} for p in files]
        return sources, pd.concat(frames, ignore_index=True)
    if data is None:
        raise ConfigError("--silo-column needs the DATA table to split")
    df = read_table(data)
    if silo_column not in df.columns:
        raise InvalidDataError(f"unknown silo column {silo_column!r}; columns: {', '.join(map(str, df.columns))}")
    if df[silo_column].isna().any():
        raise InvalidDataError(f"silo column {silo_column!r} has missing values: every row must belong to a silo")
    values = sorted(df[silo_column].astype(str).unique())
    if len(values) < 2:
        raise InvalidDataError(f"silo column {silo_column!r} has a single value: a federation needs two silos or more")
    path = str(Path(data).resolve())
    return [{"name": v, "kind": "column", "path": path, "column": silo_column, "value": v} for v in values], df


def prepare_run(cfg: CADASGConfig, fed: FederatedConfig, *, data: str | Path | None = None,
                silo_column: str | None = None, silos_dir: str | Path | None = None,
                plan_path: str | Path | None = None, out: str | Path | None = None) -> ServerSettings:
    """Settings of a simulated run: the silos, and the plan (read from ``plan_path`` or built)."""
    sources, pooled = silo_sources(data, silo_column, silos_dir)
    if plan_path:
        plan = FederationPlan.from_json(Path(plan_path).read_text())
    else:
        plan = build_plan(pooled, cfg, fed)
    del pooled
    if fed.min_clients > len(sources):
        raise ConfigError(f"federated.min_clients={fed.min_clients} but there are only {len(sources)} silos")
    return ServerSettings(plan=plan, fed=fed, num_silos=len(sources), sources=sources,
                          out=Path(out) if out else None)


def resolve_path(value: str | Path) -> Path:
    """A run-config path: absolute as is; relative against the working directory, then the app's
    root (where ``federated/`` is), then the installed library's project root."""
    p = Path(value)
    if p.is_absolute():
        return p
    import cadasg_dist
    import federated

    roots = (Path.cwd(), Path(federated.__file__).resolve().parents[1], Path(cadasg_dist.__file__).resolve().parents[1])
    for root in roots:
        if (root / p).exists():
            return root / p
    raise ConfigError(f"{value} not found in {', '.join(str(r) for r in roots)}")


def settings_from_run_config(run_config: dict[str, Any]) -> ServerSettings:
    """``ServerSettings`` from a Flower run config (``flwr run . --run-config 'k=v ...'``).

    Empty strings mean "not given": every default comes from the config dataclasses.
    """
    rc = {k: v for k, v in run_config.items() if v != ""}
    for key in ("config", "data", "silos", "plan"):
        if key in rc:
            rc[key] = str(resolve_path(rc[key]))
    # The run config's keys are the `cadasg federated` flags, hyphens for underscores (config.flags).
    cfg, fed = load_configs(rc.get("config"), flag_overrides({k.replace("-", "_"): v for k, v in rc.items()}))
    out = rc.get("out")
    if "plan" in rc and "data" not in rc and "silos" not in rc:  # deployment: silos bring their own rows
        plan = FederationPlan.from_json(Path(rc["plan"]).read_text())
        if "num-silos" not in rc:
            raise ConfigError("with a plan and no data, give num-silos: the number of SuperNodes to wait for")
        return ServerSettings(plan=plan, fed=fed, num_silos=int(rc["num-silos"]), out=Path(out) if out else None)
    settings = prepare_run(cfg, fed, data=rc.get("data"), silo_column=rc.get("silo-column"),
                           silos_dir=rc.get("silos"), plan_path=rc.get("plan"), out=out)
    return settings


def run_simulation(settings: ServerSettings, *, ray_address: str | None = None, num_cpus: int | None = None,
                   verbose: bool = False) -> None:
    """One simulated SuperNode per silo on the Flower simulation engine (Ray).

    ``ray_address`` joins a running Ray cluster (its own processes then survive the run: Flower's
    Ray backend calls ``ray.shutdown()`` at the end, which only disconnects this driver); without
    it a local Ray is started with ``num_cpus`` CPUs (all by default).
    """
    from flwr.simulation import run_simulation as flwr_run_simulation

    from federated.client_app import app as client_app
    from federated.server_app import build_server_app

    init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": verbose}
    if ray_address:
        init["address"] = ray_address
    else:
        init["address"] = "local"
        if num_cpus:
            init["num_cpus"] = num_cpus
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init}
    flwr_run_simulation(server_app=build_server_app(settings), client_app=client_app,
                        num_supernodes=settings.num_silos, backend_config=backend, verbose_logging=verbose)
