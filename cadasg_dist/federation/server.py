"""The server's side of a federated run: rounds, aggregation, cache merge, dropouts, the artifact.

Each round the server sends the global model to every connected silo, waits ``round_timeout``
seconds, and aggregates the replies that came back: parameters by FedAvg (weighted by each silo's
weight: its noisy count in a private run, its rows otherwise; the
FedProx strategy only adds the proximal weight to the config), cache statistics by an exact sum.
A round with fewer than ``min_clients`` replies is logged and skipped (the model is kept). After
the last round a "final-cache" round asks every silo for one noisy release of its statistics under
the final encoder; their sum is the global cache, so a context held by one silo only is in it.
The rounds travel the plain route or, with ``federated.secagg``, Flower's SecAgg+
(``federation.routes``); the aggregation is in ``federation.strategies``.

What the server learns, either way: the global model and cache (each silo's contribution is
(epsilon, delta)-DP on its own when training is private), each silo's weight (a noisy count when
private, its exact rows otherwise), metrics, epsilon and ledger. Without SecAgg+ it also sees each
silo's own (noisy) update. The artifact's guarantee composes the silos' ledgers unless the silos are
declared disjoint in units (``federation.accounting.run_guarantee``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Context
from flwr.serverapp import Grid

from cadasg_dist.context.cache import CacheStats
from cadasg_dist.errors import CADASGError
from cadasg_dist.federation.accounting import run_guarantee
from cadasg_dist.federation.config import FederatedConfig
from cadasg_dist.federation.plan import FederationPlan
from cadasg_dist.federation.records import model_arrays, summed_noise
from cadasg_dist.federation.routes import MeteredGrid, PlainRoute, RoundOutcome, SecureRoute
from cadasg_dist.federation.strategies import FedAvgWithCache
from cadasg_dist.model.networks import CADASGNetworks
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.train.loop import new_cache
from cadasg_dist.train.step import TrainState

# The aggregation strategy is importable beside the entry points that drive it (the federated tests do).
__all__ = ["FedAvgWithCache", "ServerSettings", "assemble_model", "initial_weights", "run_server", "server_step",
           "wait_for_nodes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    plan: FederationPlan
    fed: FederatedConfig
    num_silos: int  # silos to wait for before the first round
    sources: list[dict[str, Any]] | None = None  # simulation only: where each silo's rows are
    out: Path | None = None


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise CADASGError(f"only {len(nodes)} of {count} silos connected within {timeout:g}s")
        time.sleep(0.5)
    return sorted(nodes)


def server_step(weights: OrderedDict[str, torch.Tensor], mean: OrderedDict[str, torch.Tensor], lr: float
                ) -> OrderedDict[str, torch.Tensor]:
    """The global model after a round: ``weights + lr * (mean - weights)``, where ``mean`` is the
    silos' weighted mean model (FedAvg's aggregate; ``lr = 1`` returns it). Post-processing of what
    the silos sent, so it spends no privacy."""
    if lr == 1.0:
        return mean
    return OrderedDict((k, w + lr * (mean[k] - w)) for k, w in weights.items())


def initial_weights(plan: FederationPlan) -> OrderedDict[str, torch.Tensor]:
    return model_arrays(TrainState.create(plan.dims, plan.config).nets)


def run_server(grid: Grid, context: Context, settings: ServerSettings) -> dict[str, Any]:
    """The whole run; writes the artifact to ``settings.out`` and returns the run summary."""
    plan, fed = settings.plan, settings.fed
    started = time.perf_counter()
    metered = MeteredGrid(grid)
    nodes = wait_for_nodes(metered, max(settings.num_silos, fed.min_clients), fed.connect_timeout)
    route = SecureRoute(metered, context, plan, fed, nodes) if fed.secagg else PlainRoute(metered, plan, fed)
    base = {"plan": plan.to_json(), "federated": fed.to_json(), "sources": json.dumps(settings.sources or [])}
    weights = initial_weights(plan)
    rounds, last_cache = [], None
    latest: dict[str, dict[str, Any]] = {}  # silo -> its last reply's metrics; ledgers alike
    ledgers: dict[str, str] = {}
    for rnd in range(1, fed.rounds + 1):
        outcome = route.round(rnd, "train", weights, base)
        latest.update(outcome.silos)
        ledgers.update(outcome.ledgers)
        ok = outcome.replied >= fed.min_clients and outcome.weights is not None
        if ok:
            weights, last_cache = server_step(weights, outcome.weights, fed.server_lr), outcome.cache
        _log_round(outcome, ok, fed)
        rounds.append(outcome.summary(ok))
    final = route.round(fed.rounds + 1, "final-cache", weights, base)
    latest.update(final.silos)
    ledgers.update(final.ledgers)
    _log_round(final, final.cache is not None, fed)
    rounds.append(final.summary(final.cache is not None))
    cache = final.cache if final.cache is not None else last_cache
    # the final releases' noise, summed over the silos that sent one (a fallback cache: unknown, exact)
    noise_var = summed_noise(list(final.silos.values()) if final.cache is not None else [])
    if cache is None:
        reasons = [f for r in rounds for f in r["failures"]][:3]
        raise CADASGError("no silo returned cache statistics, the run produced no model; first failures: "
                          + ("; ".join(reasons) or "none reported"))
    rows_key = "noisy_rows" if plan.config.private else "rows"  # a private silo sends only its noisy count
    summary = {"rounds": rounds, "secagg": route.secure, "strategy": fed.strategy, "federated": fed.to_dict(),
               "silos": {name: {rows_key: int(m.get("num-examples", 0)), "epsilon": _eps(m.get("epsilon"))}
                         for name, m in sorted(latest.items())},
               "silo_ledgers": {name: json.loads(text) for name, text in sorted(ledgers.items())},
               "final_cache_silos": sorted(final.silos), "schema_ledger": plan.schema_ledger,
               "seconds": round(time.perf_counter() - started, 3)}
    if settings.out is not None:
        model = assemble_model(plan, weights, cache, ledgers, summary, noise_var, disjoint=fed.disjoint_units)
        model.save(settings.out)
        log.info("federated model written to %s", settings.out)
    return summary


def _eps(value: Any) -> float | None:
    """A silo's epsilon for the summary; None when it trained without DP (JSON has no infinity)."""
    return None if value is None or float(value) < 0 else float(value)


def _log_round(o: RoundOutcome, aggregated: bool, fed: FederatedConfig) -> None:
    up = [b for b in o.bytes_up.values() if b]
    log.info("round %d (%s): %d/%d silos replied in %.1fs, %s; %.0f bytes up per silo%s", o.round, o.phase, o.replied,
             o.sampled, o.seconds, "aggregated" if aggregated else
             f"NOT aggregated (fewer than min_clients={fed.min_clients})", np.mean(up) if up else 0,
             "; failures: " + "; ".join(o.failures) if o.failures else "")


def assemble_model(plan: FederationPlan, weights: dict[str, torch.Tensor], cache_stats: CacheStats,
                   ledgers: dict[str, str], summary: dict[str, Any], noise_var: torch.Tensor | None = None, *,
                   disjoint: bool = False) -> Any:
    """A ``CADASG`` from the global weights and cache. In a private run its ledger is the run's
    guarantee (``run_guarantee``: every silo's releases composed, or with ``disjoint`` units the
    largest silo's), recorded with its assumption in ``meta["federated"]["guarantee"]``; every silo's
    own ledger is in ``meta["federated"]["silo_ledgers"]``. Row figures are the silos' weights:
    noisy counts in a private run."""
    from cadasg_dist.federation.records import load_model_arrays
    from cadasg_dist.synthesizer import CADASG

    cfg, dims = plan.config, plan.dims
    nets = CADASGNetworks(dims, cfg.model)
    load_model_arrays(nets, weights)
    cache = new_cache(dims, cfg)
    cache.stats = cache_stats
    if noise_var is not None:
        cache.noise_var = noise_var
    model = CADASG(cfg)
    model.schema, model.transformer, model.extractor = plan.schema, plan.transformer, plan.extractor
    if cfg.private:
        parsed = {name: PrivacyLedger.from_json(text) for name, text in ledgers.items()}
        ledger, summary["guarantee"] = run_guarantee(parsed, plan.preprocessing, disjoint)
    else:
        ledger = PrivacyLedger.non_private()
    rows = sum(s.get("rows", s.get("noisy_rows", 0)) for s in summary["silos"].values())
    model.assemble(nets, cache, [r for r in summary["rounds"] if r["phase"] == "train"], ledger=ledger,
                   seconds=summary["seconds"], rows=rows)
    model.meta["federated"] = summary
    return model
