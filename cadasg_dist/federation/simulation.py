"""The settings of a federated run: silo sources, the plan, the Flower run config.

``cadasg federated`` (``cadasg_dist/cli/federated.py``) and ``flwr run .`` (through the
ServerApp of ``federation.apps``) both end up in ``run_server``; this module turns their inputs (a
table split by a column, or a directory with one file per silo) into ``ServerSettings``.
``federation.apps.run_simulation`` runs them on the simulation engine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadasg_dist.config import CADASGConfig, flag_overrides
from cadasg_dist.data.io import read_table
from cadasg_dist.errors import ConfigError, InvalidDataError
from cadasg_dist.federation.config import FederatedConfig, check_silo_count, load_configs
from cadasg_dist.federation.plan import FederationPlan, build_round_plan
from cadasg_dist.federation.server import ServerSettings

log = logging.getLogger(__name__)

SILO_SUFFIXES = (".csv", ".parquet", ".pq")
# Flower run-config keys that name files or directories.
RUN_CONFIG_PATHS = ("config", "data", "silos", "plan")


def silo_sources(data: str | Path | None, silo_column: str | None, silos: str | Path | None,
                 cfg: CADASGConfig | None = None) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """One source per silo and the table they come from (split into one plan party per silo by
    ``plan_parties``: the plan round reads each silo's rows on its own).

    ``silos`` alone: a directory, a silo per file (its name is the file's: public by construction).
    ``data`` + ``silo_column``: a silo per name of ``silo_names`` (``silos`` may list them); the
    pooled table holds only the rows of those silos, so a row whose silo is outside the declared set
    is neither trained on nor named.
    """
    if silo_column is None:
        if silos is None:
            raise ConfigError("give either DATA with --silo-column COL, or --silos DIR (one file per silo)")
        return _directory_sources(Path(silos))
    if data is None:
        raise ConfigError("--silo-column needs the DATA table to split")
    names = silo_names(cfg or CADASGConfig(), silo_column, silos)  # before reading a row
    df = read_table(data)
    if silo_column not in df.columns:
        raise InvalidDataError(f"unknown silo column {silo_column!r}; columns: {', '.join(map(str, df.columns))}")
    if names is None:  # a non-private run without declared silos: the observed values, as before
        if df[silo_column].isna().any():
            raise InvalidDataError(f"silo column {silo_column!r} has missing values: every row must belong to a silo")
        values: list[Any] = sorted(df[silo_column].astype(str).unique())
        if len(values) < 2:
            raise InvalidDataError(f"silo column {silo_column!r} has a single value: a federation needs two silos "
                                   "or more")
        names = [(str(v), v) for v in values]
    else:
        df = df[silo_rows(df[silo_column], [v for _, v in names])].reset_index(drop=True)
    path = str(Path(data).resolve())
    return [{"name": n, "kind": "column", "path": path, "column": silo_column, "value": v} for n, v in names], df


def silo_names(cfg: CADASGConfig, silo_column: str, listed: str | Path | None) -> list[tuple[str, Any]] | None:
    """(name, value) of every silo of a table split by ``silo_column``, from the declaration only:
    ``listed`` (``--silos a,b,c``), else the column's declared category set
    (``data.columns.COL.categories``, config or codebook). None when neither is given in a
    non-private run (the observed values are used); a private run refuses, naming the fix."""
    if listed is not None:
        values: list[Any] = [v.strip() for v in str(listed).split(",") if v.strip()]
    else:
        override = cfg.data.columns.get(silo_column)
        if override is None or override.categories is None:
            if not cfg.private:
                return None
            raise ConfigError(f"a private federated run takes its silo names from a declaration, never from the "
                              f"data: declare data.columns.{silo_column}.categories (the list of silos) in the config "
                              f"or codebook, or pass --silos NAME,NAME,...")
        values = list(override.categories)
    names = [str(v) for v in values]
    if len(set(names)) != len(names):
        raise ConfigError(f"the silos of {silo_column!r} are declared twice under one name: {names}")
    if len(names) < 2:
        raise ConfigError(f"silo column {silo_column!r} declares {len(names)} silo(s): a federation needs two or more")
    return list(zip(names, values))


def silo_rows(s: pd.Series, values: list[Any]) -> np.ndarray:
    """(N,) bool: the rows whose silo value is one of ``values``, compared by value (1, 1.0, "1"
    are one silo; a missing value is in none)."""
    from cadasg_dist.data.values import CategoryMatcher

    matcher = CategoryMatcher(values)
    return ~(s.isna().to_numpy() | matcher.outside(s))


def _directory_sources(d: Path) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in SILO_SUFFIXES) if d.is_dir() else []
    if len(files) < 2:
        raise InvalidDataError(f"--silos {d} must be a directory with two or more .csv/.parquet files, one per silo")
    frames = [read_table(p) for p in files]
    if len({tuple(f.columns) for f in frames}) != 1:
        raise InvalidDataError(f"the silo files in {d} do not have the same columns")
    sources = [{"name": p.stem, "kind": "file", "path": str(p.resolve())} for p in files]
    return sources, pd.concat(frames, ignore_index=True)


def plan_parties(sources: list[dict[str, Any]], table: pd.DataFrame) -> list[Any]:
    """One plan party per silo, each holding that silo's rows only (``federation.plan_round``):
    its own file, or its rows of the table split by a column (matched by value)."""
    from cadasg_dist.federation.plan_round import PlanParty

    parties = []
    for source in sources:
        if source["kind"] == "file":
            frame = read_table(source["path"], allow_empty=True)  # a declared silo may hold no row
        else:
            frame = table[silo_rows(table[source["column"]], [source["value"]])].reset_index(drop=True)
        parties.append(PlanParty(str(source["name"]), frame))
    return parties


def prepare_run(cfg: CADASGConfig, fed: FederatedConfig, *, data: str | Path | None = None,
                silo_column: str | None = None, silos: str | Path | None = None,
                plan_path: str | Path | None = None, out: str | Path | None = None) -> ServerSettings:
    """Settings of a simulated run: the silos (``silo_sources``), and the plan (read from
    ``plan_path``, whose engine config is then the run's, or built by a plan round over the silos:
    ``build_round_plan``)."""
    plan = FederationPlan.from_json(Path(plan_path).read_text()) if plan_path else None
    sources, pooled = silo_sources(data, silo_column, silos, cfg if plan is None else plan.config)
    check_silo_count(fed, len(sources))  # before the plan's releases and before Ray or Flower start
    if plan is None:
        plan = _declared_plan(plan_parties(sources, pooled), cfg, fed)
    del pooled
    return ServerSettings(plan=plan, fed=fed, num_silos=len(sources), sources=sources,
                          out=Path(out) if out else None)


def _declared_plan(parties: list[Any], cfg: CADASGConfig, fed: FederatedConfig) -> FederationPlan:
    """``build_round_plan``; a missing declaration in a run without --epsilon says why it is needed."""
    try:
        return build_round_plan(parties, cfg, fed)
    except ConfigError as err:
        if cfg.private:
            raise
        raise ConfigError(f"a federation releases its shared schema with DP (federated.schema_epsilon="
                          f"{fed.schema_epsilon:g}) even when training is not private, so it reads no category set "
                          f"from the data either: {err}") from err


def anchor_app_paths(run_config: Mapping[str, Any], app_root: Path) -> dict[str, Any]:
    """The run config with each relative path that is not under the working directory but is under
    ``app_root`` (where the Flower app's ``federated/`` is) made absolute there.

    ``flwr run`` unpacks the app (its FAB) away from the working directory, so ``federated/demo.yaml``
    must resolve against the app; the working directory still comes first, as in ``resolve_path``.
    """
    rc = dict(run_config)
    for key in RUN_CONFIG_PATHS:
        value = rc.get(key)
        if not value or Path(str(value)).is_absolute() or (Path.cwd() / str(value)).exists():
            continue
        if (app_root / str(value)).exists():
            rc[key] = str(app_root / str(value))
    return rc


def resolve_path(value: str | Path) -> Path:
    """A run-config path: absolute as is; relative against the working directory, then the installed
    library's project root (the ServerApp of ``flwr run`` anchors the app's own first:
    ``anchor_app_paths``)."""
    p = Path(value)
    if p.is_absolute():
        return p
    from cadasg_dist._version import PROJECT_ROOT

    roots = (Path.cwd(), PROJECT_ROOT)
    for root in roots:
        if (root / p).exists():
            return root / p
    raise ConfigError(f"{value} not found in {', '.join(str(r) for r in roots)}")


def settings_from_run_config(run_config: dict[str, Any]) -> ServerSettings:
    """``ServerSettings`` from a Flower run config (``flwr run . --run-config 'k=v ...'``).

    Empty strings mean "not given": every default comes from the config dataclasses.
    """
    rc = {k: v for k, v in run_config.items() if v != ""}
    for key in RUN_CONFIG_PATHS:
        if key in rc and not (key == "silos" and "silo-column" in rc):  # with a column, silos lists names
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
                           silos=rc.get("silos"), plan_path=rc.get("plan"), out=out)
    return settings
