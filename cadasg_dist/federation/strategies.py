"""The Flower strategies of a federated run: FedAvg or FedProx over the silos' parameters, plus
the exact sum of their cache statistics.

The plain route aggregates with ``FedAvgWithCache`` / ``FedProxWithCache`` (Message API). The
SecAgg+ route goes through Flower's legacy workflow, which calls a legacy strategy; there
``LegacyCapture`` only sends the round's config to every silo and keeps the results, whose
parameters SecAgg+ has already replaced by the secure weighted average.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedProx
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords, aggregate_metricrecords

from cadasg_dist.context.cache import CacheStats
from cadasg_dist.federation.config import FederatedConfig
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
