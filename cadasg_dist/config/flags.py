"""Flags and run-config keys -> dotted config keys: the one mapping the command line and Flower share.

``cadasg train`` / ``cadasg tune`` flags, ``cadasg federated`` flags and the Flower run config
(``[tool.flwr.app.config]``, its hyphens read as underscores) all name their values here. A
``federated.`` key belongs to ``FederatedConfig`` (``cadasg_dist.federation.config``), every other
key to ``CADASGConfig``. A value left out (``None``, or an empty column list) keeps the config's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FLAG_KEYS: dict[str, str] = {
    "target": "target",
    "context": "context.columns",
    "epochs": "train.epochs",
    "seed": "train.seed",
    "epsilon": "privacy.epsilon",
    "delta": "privacy.delta",
    "privacy_unit": "privacy.unit",
    "rounds": "federated.rounds",
    "local_epochs": "federated.local_epochs",
    "strategy": "federated.strategy",
    "proximal_mu": "federated.proximal_mu",
    "server_lr": "federated.server_lr",
    "local_lr_scale": "federated.local_lr_scale",
    "secagg": "federated.secagg",
    "min_clients": "federated.min_clients",
    "round_timeout": "federated.round_timeout",
    "schema_epsilon": "federated.schema_epsilon",
    "inject_failure": "federated.inject_failure",
}
# Given as one comma-separated text ("year,female").
LIST_KEYS = frozenset({"context.columns"})


def csv_list(value: Any) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [v.strip() for v in str(value).split(",") if v.strip()]


def flag_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted config keys set by ``values`` (flag or run-config names, e.g. ``vars(args)``);
    names outside ``FLAG_KEYS`` are not config values and are passed over."""
    out: dict[str, Any] = {}
    for name, key in FLAG_KEYS.items():
        value = values.get(name)
        if key in LIST_KEYS:
            if value:
                out[key] = csv_list(value)
        elif value is not None:
            out[key] = value
    return out


def split_section(dotted: Mapping[str, Any], section: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``dotted`` as (the keys outside ``section``, the keys of ``section`` without its prefix)."""
    prefix = section + "."
    inside = {k.removeprefix(prefix): v for k, v in dotted.items() if k.startswith(prefix)}
    return {k: v for k, v in dotted.items() if not k.startswith(prefix)}, inside
