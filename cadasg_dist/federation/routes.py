"""How one round reaches the silos and comes back: the plain route and the SecAgg+ route.

Two routes, one protocol:

* plain: the Message API (``flwr.serverapp.strategy.FedAvg`` / ``FedProx`` and ``Grid``);
* ``federated.secagg``: Flower's SecAgg+ (``SecAggPlusWorkflow``), which exists only on the legacy
  workflow API in flwr 1.41; the server then sees only the weighted sum of the silos' parameters
  and the sum of their statistics, never one silo's.

Each round goes to the silos connected when it starts (``grid.get_node_ids()``: the SuperLink drops
a SuperNode whose heartbeats stopped), never to a list fixed at the first round.

Either route returns a ``RoundOutcome``: the replies' metrics and ledgers, the aggregated model and
cache (or None), the failures, and the bytes each node sent and received (``MeteredGrid``).
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid

from cadasg_dist.context.cache import CacheStats
from cadasg_dist.errors import InvalidDataError
from cadasg_dist.federation.config import SECAGG_MODULUS, SECAGG_QUANTIZATION, FederatedConfig
from cadasg_dist.federation.plan import FederationPlan
from cadasg_dist.federation.records import check_payload, expected_shapes, payload_bytes, secagg_unpack
from cadasg_dist.federation.strategies import DropoutTolerantSecAggPlus, LegacyCapture, make_strategy, secagg_parameters
from cadasg_dist.model.networks import CADASGNetworks


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
                "contributors": sorted(self.silos) if aggregated else [], "silos": self.silos,
                "failures": self.failures}


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
        # an error the SuperLink makes for a dead node comes from the SuperLink: name the node it was for
        sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
        answered = {sent_to.get(r.metadata.reply_to_message_id, r.metadata.src_node_id) for r in replies}
        for r in replies:
            if r.has_error():
                node = sent_to.get(r.metadata.reply_to_message_id, r.metadata.src_node_id)
                failures.append(f"node {node}: {r.error.reason[:300]}")
                continue
            try:
                check_payload(r.content, self.shapes)
            except InvalidDataError as err:  # a malformed reply is refused like a failure
                failures.append(f"node {r.metadata.src_node_id}: {err}")
                continue
            valid.append(r)
        failures += [f"node {m.metadata.dst_node_id}: no reply within {self.fed.round_timeout:g}s"
                     for m in messages if m.metadata.dst_node_id not in answered]
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

    def __init__(self, grid: MeteredGrid, context: Context, plan: FederationPlan, fed: FederatedConfig) -> None:
        from flwr.server.client_manager import SimpleClientManager
        from flwr.server.compat.legacy_context import LegacyContext

        self.grid, self.plan, self.fed = grid, plan, fed
        self.capture = LegacyCapture()
        self.context = LegacyContext(context, strategy=self.capture, client_manager=SimpleClientManager())
        self.n_weights = len(list(CADASGNetworks(plan.dims, plan.config.model).parameters()))

    def sample_live(self) -> int:
        """Register exactly the silos connected now (the legacy client manager would otherwise keep
        a dead one and SecAgg+ would wait for it every round); returns how many."""
        from flwr.server.compat.grid_client_proxy import GridClientProxy

        manager, live = self.context.client_manager, set(self.grid.get_node_ids())
        for proxy in list(manager.all().values()):
            if proxy.node_id not in live:
                manager.unregister(proxy)
        known = {p.node_id for p in manager.all().values()}
        for node in sorted(live - known):
            manager.register(GridClientProxy(node_id=node, grid=self.grid, run_id=self.grid.run.run_id))
        return len(live)

    def round(self, rnd: int, phase: str, weights: OrderedDict[str, torch.Tensor], base: dict[str, Any]
              ) -> RoundOutcome:
        import flwr.compat.common.recorddict_compat as compat
        from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
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
        sampled = self.sample_live()
        if sampled < 2:  # gone between the server's wait and this round: nothing a secure sum can do
            up, down, exchanges = self.grid.take()
            return RoundOutcome(rnd, phase, sampled, {}, time.perf_counter() - start, up, down, exchanges=exchanges,
                                failures=[f"only {sampled} silo connected: SecAgg+ needs 2 or more"])
        shares, threshold = secagg_parameters(fed, sampled)
        # as fractions, which Flower turns back into these integers (it refuses an integer threshold equal
        # to the shares, and integer shares of 2)
        DropoutTolerantSecAggPlus(num_shares=shares / sampled, reconstruction_threshold=threshold / shares,
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
        if not results:
            failures.append(f"SecAgg+ halted ({shares} shares, threshold {threshold}); see the Flower log above")
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
