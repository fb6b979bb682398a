"""The server's side of a federated run: rounds, aggregation, cache merge, dropouts, the artifact.

Each round the server sends the global model to every connected silo, waits ``round_timeout``
seconds, and aggregates the replies that came back: parameters by FedAvg (weighted by rows; the
FedProx strategy only adds the proximal weight to the config), cache statistics by an exact sum.
A round with fewer than ``min_clients`` replies is logged and skipped (the model is kept). After
the last round a "final-cache" round asks every silo for one noisy release of its statistics under
the final encoder; their sum is the global cache, so a context held by one silo only is in it.

Two routes, one protocol:

* plain: the Message API (``flwr.serverapp.strategy.FedAvg`` / ``FedProx`` and ``Grid``);
* ``federated.secagg``: Flower's SecAgg+ (``SecAggPlusWorkflow``), which exists only on the legacy
  workflow API in flwr 1.41; the server then sees only the weighted sum of the silos' parameters
  and the sum of their statistics, never one silo's.

What the server learns, either way: the global model and cache (each silo's contribution is
(epsilon, delta)-DP on its own when training is private), each silo's row count, run metrics of
generated data, epsilon and ledger. Without SecAgg+ it also sees each silo's own (noisy) update.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords, aggregate_metricrecords

from cadasg_dist.context.cache import CacheStats
from cadasg_dist.errors import CADASGError, InvalidDataError
from cadasg_dist.federation.config import SECAGG_MODULUS, SECAGG_QUANTIZATION, FederatedConfig
from cadasg_dist.federation.plan import FederationPlan
from cadasg_dist.federation.records import (
    check_payload,
    expected_shapes,
    model_arrays,
    payload_bytes,
    record_cache,
    secagg_unpack,
    sum_caches,
    summed_noise,
)
from cadasg_dist.model.networks import CADASGNetworks
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.train.loop import new_cache
from cadasg_dist.train.step import TrainState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    plan: FederationPlan
    fed: FederatedConfig
    num_silos: int  # silos to wait for before the first round
    sources: list[dict[str, Any]] | None = None  # simulation only: where each silo's rows are
    out: Path | None = None


@dataclass
class RoundOutcome:
    round: int
    phase: str
    sampled: int
    silos: dict[str, dict[str, float]]  # silo name -> its metrics
    seconds: float
    bytes_up: dict[int, int]  # node -> bytes it sent this round (all SecAgg+ stages included)
    bytes_down: dict[int, int]
    weights: OrderedDict[str, torch.Tensor] | None = None
    cache: CacheStats | None = None
    ledgers: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    exchanges: list[float] = field(default_factory=list)  # seconds of each message exchange

    @property
    def replied(self) -> int:
        return len(self.silos)

    def summary(self, aggregated: bool) -> dict[str, Any]:
        up = [b for b in self.bytes_up.values() if b]
        return {"round": self.round, "phase": self.phase, "sampled": self.sampled, "replied": self.replied,
                "dropped": self.sampled - self.replied, "aggregated": aggregated, "seconds": round(self.seconds, 3),
                "bytes_up_per_client": int(np.mean(up)) if up else 0,
                "bytes_down_per_client": int(np.mean(list(self.bytes_down.values()))) if self.bytes_down else 0,
                "exchange_seconds": [round(x, 3) for x in self.exchanges],
                "silos": self.silos, "failures": self.failures}


class MeteredGrid:
    """A Grid that counts the payload bytes of what it sends and receives, per node."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.up: dict[int, int] = defaultdict(int)
        self.down: dict[int, int] = defaultdict(int)
        self.exchanges: list[float] = []  # seconds of each send_and_receive (SecAgg+ makes 4 a round)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        for m in messages:
            self.down[m.metadata.dst_node_id] += payload_bytes(m.content)
        start = time.perf_counter()
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.exchanges.append(time.perf_counter() - start)
        for r in replies:
            if not r.has_error():
                self.up[r.metadata.src_node_id] += payload_bytes(r.content)
        return replies

    def take(self) -> tuple[dict[int, int], dict[int, int], list[float]]:
        up, down, exchanges = dict(self.up), dict(self.down), list(self.exchanges)
        self.up.clear()
        self.down.clear()
        self.exchanges.clear()
        return up, down, exchanges


class _MergeCaches:
    """Aggregation of replies carrying a model ("arrays", FedAvg's weighted mean) and cache
    statistics ("cache", summed). ``merged_cache`` holds the last sum."""

    merged_cache: CacheStats | None = None
    weighted_by_key: str
    train_metrics_aggr_fn: Any

    def aggregate_train(self, server_round: int, replies: Any) -> tuple[ArrayRecord | None, Any]:
        valid = [m for m in replies if not m.has_error()]
        self.merged_cache = sum_caches([record_cache(m.content["cache"]) for m in valid])
        models = [RecordDict({"arrays": m.content["arrays"], "metrics": m.content["metrics"]})
                  for m in valid if "arrays" in m.content.array_records]
        if not models:
            return None, None
        return (aggregate_arrayrecords(models, self.weighted_by_key),
                aggregate_metricrecords(models, self.weighted_by_key))


class FedAvgWithCache(_MergeCaches, FedAvg):
    """FedAvg over the silos' parameters, plus the exact sum of their cache statistics."""


class FedProxWithCache(_MergeCaches, FedProx):
    """FedProx (the silos add the proximal term) plus the exact sum of cache statistics."""


def make_strategy(fed: FederatedConfig) -> FedAvg:
    common = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_train_nodes": fed.min_clients,
              "min_available_nodes": fed.min_clients}
    if fed.strategy == "fedprox":
        return FedProxWithCache(proximal_mu=fed.proximal_mu, **common)
    return FedAvgWithCache(**common)


def _reply_silo(content: RecordDict) -> tuple[str, dict[str, float], str | None]:
    info = content["silo"]
    return str(info["name"]), dict(content["metrics"]), info.get("ledger")


class PlainRoute:
    """Rounds over the Message API."""

    secure = False

    def __init__(self, grid: MeteredGrid, plan: FederationPlan, fed: FederatedConfig) -> None:
        self.grid, self.plan, self.fed = grid, plan, fed
        self.strategy = make_strategy(fed)
        nets = CADASGNetworks(plan.dims, plan.config.model)
        self.shapes = expected_shapes(nets, plan.dims.contexts * plan.dims.strata)

    def round(self, rnd: int, phase: str, weights: OrderedDict[str, torch.Tensor], base: dict[str, Any]
              ) -> RoundOutcome:
        start = time.perf_counter()
        config = ConfigRecord({**base, "phase": phase})
        messages = list(self.strategy.configure_train(rnd, ArrayRecord(weights), config, self.grid))
        replies = self.grid.send_and_receive(messages, timeout=self.fed.round_timeout)
        valid, failures = [], []
        for r in replies:
            if r.has_error():
                failures.append(f"node {r.metadata.src_node_id}: {r.error.reason[:300]}")
                continue
            try:
                check_payload(r.content, self.shapes)
            except InvalidDataError as err:  # a malformed reply is refused like a failure
                failures.append(f"node {r.metadata.src_node_id}: {err}")
                continue
            valid.append(r)
        failures += [f"node {m.metadata.dst_node_id}: no reply within {self.fed.round_timeout:g}s"
                     for m in messages if m.metadata.dst_node_id not in {r.metadata.src_node_id for r in replies}]
        silos, ledgers = {}, {}
        for r in valid:
            name, metrics, ledger = _reply_silo(r.content)
            silos[name] = metrics
            if ledger:
                ledgers[name] = str(ledger)
        arrays, _ = self.strategy.aggregate_train(rnd, valid)
        up, down, exchanges = self.grid.take()
        return RoundOutcome(rnd, phase, len(messages), silos, time.perf_counter() - start, up, down,
                            weights=None if arrays is None else OrderedDict(arrays.to_torch_state_dict()),
                            cache=self.strategy.merged_cache if valid else None, ledgers=ledgers, failures=failures,
                            exchanges=exchanges)


class SecureRoute:
    """Rounds through Flower's SecAgg+ workflow (legacy API): the server gets sums only."""

    secure = True

    def __init__(self, grid: MeteredGrid, context: Context, plan: FederationPlan, fed: FederatedConfig,
                 nodes: list[int]) -> None:
        from flwr.server.client_manager import SimpleClientManager
        from flwr.server.compat.grid_client_proxy import GridClientProxy
        from flwr.server.compat.legacy_context import LegacyContext

        self.grid, self.plan, self.fed = grid, plan, fed
        manager = SimpleClientManager()
        for node in nodes:
            manager.register(GridClientProxy(node_id=node, grid=grid, run_id=grid.run.run_id))
        self.capture = _LegacyCapture()
        self.context = LegacyContext(context, strategy=self.capture, client_manager=manager)
        self.n_weights = len(list(CADASGNetworks(plan.dims, plan.config.model).parameters()))

    def round(self, rnd: int, phase: str, weights: OrderedDict[str, torch.Tensor], base: dict[str, Any]
              ) -> RoundOutcome:
        import flwr.compat.common.recorddict_compat as compat
        from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.server.workflow import SecAggPlusWorkflow
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD

        start = time.perf_counter()
        fed = self.fed
        config = {**base, "phase": phase, "round": rnd}
        if fed.strategy == "fedprox":
            config["proximal-mu"] = fed.proximal_mu
        self.capture.prepare(config)
        state = self.context.state
        state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({"current_round": rnd})
        params = ndarrays_to_parameters([w.numpy() for w in weights.values()])
        state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params, keep_input=True)
        SecAggPlusWorkflow(num_shares=fed.secagg_shares, reconstruction_threshold=fed.secagg_threshold,
                           max_weight=fed.secagg_max_weight, clipping_range=fed.secagg_clip,
                           quantization_range=SECAGG_QUANTIZATION, modulus_range=SECAGG_MODULUS,
                           timeout=fed.round_timeout)(self.grid, self.context)
        results = self.capture.results
        silos, ledgers = {}, {}
        for _, res in results:
            metrics = dict(res.metrics)
            name = str(metrics.pop("silo"))
            if "ledger" in metrics:
                ledgers[name] = str(metrics.pop("ledger"))
            silos[name] = {"num-examples": float(res.num_examples), **metrics}
        failures = [f"node {n}: dropped out of SecAgg+" for n in self.capture.sampled
                    if n not in {p.node_id for p, _ in results}]
        outcome = RoundOutcome(rnd, phase, len(self.capture.sampled), silos, 0.0, {}, {}, ledgers=ledgers,
                               failures=failures)
        if results:
            average = parameters_to_ndarrays(results[0][1].parameters)
            n_weights = self.n_weights if phase == "train" else 0
            mean, cache = secagg_unpack(average, n_weights, [r.num_examples for _, r in results], fed,
                                        self.plan.config.cache)
            if phase == "train":
                outcome.weights = OrderedDict((k, torch.from_numpy(np.asarray(a, dtype=np.float32)))
                                              for k, a in zip(weights, mean))
            outcome.cache = cache
        outcome.bytes_up, outcome.bytes_down, outcome.exchanges = self.grid.take()
        outcome.seconds = time.perf_counter() - start
        return outcome


def _legacy_strategy_base() -> type:
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    return LegacyFedAvg


class _LegacyCapture(_legacy_strategy_base()):  # type: ignore[misc]
    """The legacy strategy SecAgg+ calls: it sends our config to every registered silo and keeps the
    results (whose parameters SecAgg+ has replaced by the secure weighted average)."""

    def __init__(self) -> None:
        super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=2, min_available_clients=2)
        self.config: dict[str, Any] = {}
        self.results: list[Any] = []
        self.sampled: list[int] = []

    def prepare(self, config: dict[str, Any]) -> None:
        self.config, self.results, self.sampled = dict(config), [], []

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[Any]:
        from flwr.common import FitIns

        clients = list(client_manager.all().values())
        self.sampled = [c.node_id for c in clients]
        return [(c, FitIns(parameters, dict(self.config))) for c in clients]

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> tuple[None, dict]:
        self.results = list(results)
        return None, {}


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
    for rnd in range(1, fed.rounds + 1):
        outcome = route.round(rnd, "train", weights, base)
        ok = outcome.replied >= fed.min_clients and outcome.weights is not None
        if ok:
            weights, last_cache = server_step(weights, outcome.weights, fed.server_lr), outcome.cache
        _log_round(outcome, ok, fed)
        rounds.append(outcome.summary(ok))
    final = route.round(fed.rounds + 1, "final-cache", weights, base)
    _log_round(final, final.cache is not None, fed)
    rounds.append(final.summary(final.cache is not None))
    cache = final.cache if final.cache is not None else last_cache
    # the final releases' noise, summed over the silos that sent one (a fallback cache: unknown, exact)
    noise_var = summed_noise(list(final.silos.values()) if final.cache is not None else [])
    if cache is None:
        reasons = [f for r in rounds for f in r["failures"]][:3]
        raise CADASGError("no silo returned cache statistics, the run produced no model; first failures: "
                          + ("; ".join(reasons) or "none reported"))
    summary = {"rounds": rounds, "secagg": route.secure, "strategy": fed.strategy, "federated": fed.to_dict(),
               "silos": {name: {"rows": int(m.get("num-examples", 0)), "epsilon": _eps(m.get("epsilon"))}
                         for name, m in final.silos.items()},
               "silo_ledgers": {name: json.loads(text) for name, text in final.ledgers.items()},
               "final_cache_silos": sorted(final.silos), "schema_ledger": plan.schema_ledger,
               "seconds": round(time.perf_counter() - started, 3)}
    if settings.out is not None:
        model = assemble_model(plan, weights, cache, final.ledgers, summary, noise_var)
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
                   ledgers: dict[str, str], summary: dict[str, Any], noise_var: torch.Tensor | None = None) -> Any:
    """A ``CADASG`` from the global weights and cache. Its ledger is the silo ledger with the largest
    epsilon (the guarantee that holds for everyone); every silo's ledger is in ``meta["federated"]``."""
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
        parsed = [PrivacyLedger.from_json(text) for text in ledgers.values()]
        if not parsed:
            raise CADASGError("no silo ledger came back in the final round: the model's guarantee is unknown")
        ledger = max(parsed, key=lambda lg: lg.epsilon())
    else:
        ledger = PrivacyLedger.non_private()
    rows = sum(s["rows"] for s in summary["silos"].values())
    model.assemble(nets, cache, [r for r in summary["rounds"] if r["phase"] == "train"], ledger=ledger,
                   seconds=summary["seconds"], rows=rows)
    model.meta["federated"] = summary
    return model
