"""The Flower strategies of a federated run: FedAvg or FedProx over the silos' parameters, plus
the exact sum of their cache statistics.

The plain route aggregates with ``FedAvgWithCache`` / ``FedProxWithCache`` (Message API). The
SecAgg+ route goes through Flower's legacy workflow, which calls a legacy strategy; there
``LegacyCapture`` only sends the round's config to every silo it is given (the live ones) and keeps
the results, whose parameters SecAgg+ has already replaced by the secure weighted average.

Dropouts under SecAgg+: ``secagg_parameters`` sets the shares and the reconstruction threshold of a
round so that it survives losing ``federated.max_dropouts`` silos, and ``DropoutTolerantSecAggPlus``
forgets a silo that left before sharing its keys (flwr 1.41's workflow would ask for that silo's
shares in the unmask stage, which nobody holds, and halt the round).
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedProx
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords, aggregate_metricrecords

from cadasg_dist.context.cache import CacheStats
from cadasg_dist.errors import ConfigError
from cadasg_dist.federation.config import SECAGG_MODULUS, SECAGG_QUANTIZATION, FederatedConfig
from cadasg_dist.federation.records import record_cache, sum_caches


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


def _legacy_strategy_base() -> type:
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    return LegacyFedAvg


class LegacyCapture(_legacy_strategy_base()):  # type: ignore[misc]
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


def secagg_parameters(fed: FederatedConfig, sampled: int) -> tuple[int, int]:
    """(shares per silo, reconstruction threshold) of a SecAgg+ round over ``sampled`` silos.

    Privacy first: the threshold is how many silos must collude with the server to unmask one
    silo's update; a higher one protects more and tolerates fewer dropouts. Each silo's key is
    split among its ``shares`` neighbours (itself included, Flower's ring); losing ``d`` of them
    leaves ``shares - d`` shares, so the threshold is ``round(secagg_threshold * shares)`` lowered to
    ``shares - max_dropouts`` when that asks for more (never below 2, Flower's floor). Shares follow
    Flower's own rounding of ``secagg_shares`` (odd below ``sampled``, all silos when 2 or fewer).
    """
    if sampled * SECAGG_QUANTIZATION >= SECAGG_MODULUS:
        raise ConfigError(f"SecAgg+ sums {sampled} silos' values in [0, 2^22) modulo 2^32: at most "
                          f"{SECAGG_MODULUS // SECAGG_QUANTIZATION - 1} silos per round")
    shares = round(fed.secagg_shares * sampled)
    if shares < sampled and shares % 2 == 0:
        shares += 1
    if shares <= 2:
        shares = sampled
    shares = min(shares, sampled)
    threshold = max(2, min(round(fed.secagg_threshold * shares), shares - fed.max_dropouts))
    return shares, threshold


def _secagg_workflow_base() -> type:
    from flwr.server.workflow import SecAggPlusWorkflow

    return SecAggPlusWorkflow


class DropoutTolerantSecAggPlus(_secagg_workflow_base()):  # type: ignore[misc]
    """Flower's SecAgg+ workflow, except that a silo gone before it shared its key shares (stages 0
    and 1) leaves the round: no survivor masked its vector with it (a silo masks only against the
    silos whose shares it received), so the unmask stage must not ask for its shares either. A silo
    lost later (training, stage 2) is unmasked from its neighbours' shares, as in Flower."""

    def setup_stage(self, grid: Any, context: Any, state: Any) -> bool:
        super().setup_stage(grid, context, state)
        return self._forget_gone(state)

    def share_keys_stage(self, grid: Any, context: Any, state: Any) -> bool:
        super().share_keys_stage(grid, context, state)
        return self._forget_gone(state)

    def _forget_gone(self, state: Any) -> bool:
        alive = set(state.active_node_ids)
        if len(alive) < 2:
            return False
        state.sampled_node_ids = alive
        state.nid_to_neighbours = {n: nb & alive for n, nb in state.nid_to_neighbours.items() if n in alive}
        return self._check_threshold(state)
