"""The server's side of a federated run: rounds, aggregation, cache merge, dropouts, the artifact.

Each round the server sends the global model to every connected silo, waits ``round_timeout``
seconds, and aggregates the replies that came back: parameters by FedAvg (weighted by each silo's
weight: its noisy count in a private run, its rows otherwise; the
FedProx strategy only adds the proximal weight to the config), cache statistics by an exact sum.
Each round goes to the silos connected when it starts. A round with fewer than ``min_clients``
replies (or a SecAgg+ round that halted) is retried ``round_retries`` times over the silos then
connected; after that the run stops (``RunStopped``: a non-zero exit, no model written). After
the last round a "final-cache" round asks every connected silo for one noisy release of its
statistics under the final encoder (retried alike; a silo asked twice sends the same release);
their sum is the global cache, so a context held by one silo only is in it, unless that silo is
gone by then. The artifact lists per round the silos it aggregated (``contributors``), per silo the
rounds it contributed to (``contributions``), and every silo's last ledger.
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
from cadasg_dist.federation.config import FederatedConfig, check_silo_count
from cadasg_dist.federation.plan import FederationPlan
from cadasg_dist.federation.records import model_arrays, summed_noise
from cadasg_dist.federation.routes import MeteredGrid, PlainRoute, RoundOutcome, SecureRoute
from cadasg_dist.federation.strategies import FedAvgWithCache
from cadasg_dist.model.networks import CADASGNetworks
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.train.loop import new_cache
from cadasg_dist.train.step import TrainState

# The aggregation strategy is importable beside the entry points that drive it (the federated tests do).
__all__ = ["FedAvgWithCache", "RunStopped", "ServerSettings", "assemble_model", "initial_weights", "run_server",
           "server_step", "wait_for_nodes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    plan: FederationPlan
    fed: FederatedConfig
    num_silos: int  # silos to wait for before the first round
    sources: list[dict[str, Any]] | None = None  # simulation only: where each silo's rows are
    out: Path | None = None


class RunStopped(CADASGError):
    """A round could not be aggregated, even retried: the run stops and writes no model."""


def wait_for_nodes(grid: Grid, count: int, timeout: float, what: str = "before the first round") -> list[int]:
    """The connected silos once ``count`` are; raises ``RunStopped`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise RunStopped(f"only {len(nodes)} of the {count} silos needed were connected {what} "
                             f"(waited federated.connect_timeout={timeout:g}s); the run stopped and wrote no model")
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


class RunRecord:
    """What the rounds left for the artifact: every attempt's summary, each silo's last metrics and
    ledger (every silo that sent anything, contributing or not: what the server saw is what the
    guarantee covers), and the rounds each silo contributed to."""

    def __init__(self) -> None:
        self.rounds: list[dict[str, Any]] = []
        self.latest: dict[str, dict[str, Any]] = {}
        self.ledgers: dict[str, str] = {}
        self.contributions: dict[str, list[int]] = {}

    def add(self, outcome: RoundOutcome, aggregated: bool, attempt: int) -> None:
        self.latest.update(outcome.silos)
        self.ledgers.update(outcome.ledgers)
        self.rounds.append({**outcome.summary(aggregated), "attempt": attempt})
        if aggregated and outcome.phase == "train":
            for name in outcome.silos:
                self.contributions.setdefault(name, []).append(outcome.round)


def play_round(route: PlainRoute | SecureRoute, grid: MeteredGrid, rnd: int, phase: str,
               weights: OrderedDict[str, torch.Tensor], base: dict[str, Any], fed: FederatedConfig,
               record: RunRecord) -> RoundOutcome:
    """One round over the silos connected now, retried ``round_retries`` times (each over the silos
    then connected) until ``min_clients`` replies are aggregated; else ``RunStopped``."""
    attempts = fed.round_retries + 1
    for attempt in range(1, attempts + 1):
        wait_for_nodes(grid, fed.min_clients, fed.connect_timeout, f"for round {rnd} ({phase})")
        outcome = route.round(rnd, phase, weights, base)
        done = outcome.weights if phase == "train" else outcome.cache
        ok = outcome.replied >= fed.min_clients and done is not None
        _log_round(outcome, ok, fed, attempt)
        record.add(outcome, ok, attempt)
        if ok:
            return outcome
    raise RunStopped(f"round {rnd} ({phase}) could not be aggregated in {attempts} attempt(s): "
                     f"{outcome.replied} of {outcome.sampled} silos replied, federated.min_clients={fed.min_clients}; "
                     "the run stopped and wrote no model. Last failures: "
                     + ("; ".join(outcome.failures[:3]) or "none"))


def run_server(grid: Grid, context: Context, settings: ServerSettings) -> dict[str, Any]:
    """The whole run; writes the artifact to ``settings.out`` and returns the run summary. Raises
    ``RunStopped`` (and writes nothing) when a round cannot be aggregated after its retries."""
    plan, fed = settings.plan, settings.fed
    check_silo_count(fed, settings.num_silos)
    started = time.perf_counter()
    metered = MeteredGrid(grid)
    wait_for_nodes(metered, settings.num_silos, fed.connect_timeout)
    route = SecureRoute(metered, context, plan, fed) if fed.secagg else PlainRoute(metered, plan, fed)
    base = {"plan": plan.to_json(), "federated": fed.to_json(), "sources": json.dumps(settings.sources or [])}
    weights = initial_weights(plan)
    record = RunRecord()
    for rnd in range(1, fed.rounds + 1):
        outcome = play_round(route, metered, rnd, "train", weights, base, fed, record)
        weights = server_step(weights, outcome.weights, fed.server_lr)
    final = play_round(route, metered, fed.rounds + 1, "final-cache", weights, base, fed, record)
    noise_var = summed_noise(list(final.silos.values()))  # the final releases' noise, summed over the silos
    gone = sorted(set(record.latest) - set(final.silos))
    if gone:  # their rows shaped the weights, but their cache cells are not in the model's cache
        log.warning("silo(s) %s sent no final cache: contexts only they hold fall back to the shared prior",
                    ", ".join(gone))
    rows_key = "noisy_rows" if plan.config.private else "rows"  # a private silo sends only its noisy count
    summary = {"rounds": record.rounds, "secagg": route.secure, "strategy": fed.strategy, "federated": fed.to_dict(),
               "silos": {name: {rows_key: int(m.get("num-examples", 0)), "epsilon": _eps(m.get("epsilon"))}
                         for name, m in sorted(record.latest.items())},
               "silo_ledgers": {name: json.loads(text) for name, text in sorted(record.ledgers.items())},
               "contributions": dict(sorted(record.contributions.items())),
               "final_cache_silos": sorted(final.silos), "missing_from_final_cache": gone,
               "schema_ledger": plan.schema_ledger,
               "seconds": round(time.perf_counter() - started, 3)}
    if settings.out is not None:
        model = assemble_model(plan, weights, final.cache, record.ledgers, summary, noise_var,
                               disjoint=fed.disjoint_units)
        model.save(settings.out)
        log.info("federated model written to %s", settings.out)
    return summary


def _eps(value: Any) -> float | None:
    """A silo's epsilon for the summary; None when it trained without DP (JSON has no infinity)."""
    return None if value is None or float(value) < 0 else float(value)


def _log_round(o: RoundOutcome, aggregated: bool, fed: FederatedConfig, attempt: int) -> None:
    up = [b for b in o.bytes_up.values() if b]
    log.info("round %d (%s, attempt %d of %d): %d/%d silos replied in %.1fs, %s; %.0f bytes up per silo%s", o.round,
             o.phase, attempt, fed.round_retries + 1, o.replied, o.sampled, o.seconds, "aggregated" if aggregated else
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
