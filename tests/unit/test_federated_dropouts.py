"""Dropouts in a federated run: live sampling, SecAgg+ parameters, retries and a clean stop.

The silos run in this process (``InProcessGrid`` of ``test_federated``); a silo "dies" by leaving
the grid's connected nodes before a chosen message exchange (SecAgg+ makes four a round: setup,
share keys, collect masked vectors with the training, unmask), so every stage is hit on purpose.
"""

from __future__ import annotations

import pytest
from test_federated import FED, SILOS, InProcessGrid, _run, declared, plan, silo_table, table_path, task_identity

from cadasg_dist.errors import ConfigError
from cadasg_dist.federation.config import FederatedConfig, check_silo_count
from cadasg_dist.federation.server import RunStopped
from cadasg_dist.federation.strategies import secagg_parameters

__all__ = ["declared", "plan", "silo_table", "table_path", "task_identity"]  # fixtures used from test_federated

SECURE = FED.replace(rounds=3, secagg=True, secagg_max_weight=1000.0, max_dropouts=1)


class DyingGrid(InProcessGrid):
    """Nodes leave before the ``at``-th message exchange (1-based): gone from ``get_node_ids`` and
    silent, as a SIGKILLed SuperNode once the SuperLink has noticed. ``mute``: connected but silent
    for the exchanges listed (a slow silo that misses one attempt)."""

    def __init__(self, n: int, kill: dict[int, int] | None = None, mute: dict[int, set[int]] | None = None) -> None:
        super().__init__(n)
        self.kill, self.mute, self.exchange = kill or {}, mute or {}, 0

    def send_and_receive(self, messages, *, timeout=None):
        self.exchange += 1
        self.down |= {node for node, at in self.kill.items() if self.exchange >= at}
        silent = {node for node, at in self.mute.items() if self.exchange in at}
        replies = super().send_and_receive([m for m in messages if m.metadata.dst_node_id not in silent],
                                           timeout=timeout)
        return replies


@pytest.mark.parametrize(("sampled", "fed", "expected"), [
    (4, FederatedConfig(max_dropouts=1), (4, 3)),
    (3, FederatedConfig(max_dropouts=1), (3, 2)),
    (4, FederatedConfig(max_dropouts=2), (4, 2)),
    (4, FederatedConfig(max_dropouts=0), (4, 3)),  # secagg_threshold 0.67 of 4 shares
    (10, FederatedConfig(max_dropouts=1), (10, 7)),
    (10, FederatedConfig(max_dropouts=1, secagg_shares=0.5), (5, 3)),
    (2, FederatedConfig(max_dropouts=1), (2, 2)),  # Flower's floor: a secure sum of two needs both
])
def test_secagg_parameters_survive_max_dropouts(sampled, fed, expected):
    shares, threshold = secagg_parameters(fed, sampled)
    assert (shares, threshold) == expected
    if shares - fed.max_dropouts >= 2:  # the neighbours left after losing max_dropouts can still unmask
        assert shares - fed.max_dropouts >= threshold


def test_dropout_settings_are_checked_before_a_run():
    with pytest.raises(ConfigError, match="max_dropouts must be >= 0"):
        FederatedConfig(max_dropouts=-1)
    with pytest.raises(ConfigError, match="min_clients >= 2"):
        FederatedConfig(min_clients=1)
    FederatedConfig(min_clients=1, secagg=False)  # the plain route aggregates one silo
    with pytest.raises(ConfigError, match="need at least 4 silos, there are 3: lower federated.max_dropouts"):
        check_silo_count(FederatedConfig(min_clients=3, max_dropouts=1), 3)
    check_silo_count(FederatedConfig(min_clients=2, max_dropouts=1), 3)


@pytest.mark.parametrize("at", [6, 7, 8], ids=["share-keys", "training", "unmask"])
def test_secagg_round_survives_a_silo_lost_mid_round(plan, table_path, tmp_path, at):
    """Silo s2 (node 101) leaves during round 2 at each stage; later rounds go to the live silos only."""
    from cadasg_dist.synthesizer import CADASG

    summary, out = _run(plan, SECURE, table_path, tmp_path, DyingGrid(3, kill={101: at}))
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4] and all(r["aggregated"] for r in rounds)
    assert [r["sampled"] for r in rounds] == [3, 3, 2, 2]  # never sampled again once gone
    # in the unmask stage s2's masked update is already in the sum: it contributed to round 2
    in_round_2 = {"s1", "s2", "s3"} if at == 8 else {"s1", "s3"}
    assert set(rounds[1]["contributors"]) == in_round_2
    assert summary["contributions"]["s2"] == ([1, 2] if at == 8 else [1])
    assert summary["contributions"]["s1"] == summary["contributions"]["s3"] == [1, 2, 3]
    assert summary["final_cache_silos"] == ["s1", "s3"] and summary["missing_from_final_cache"] == ["s2"]
    assert set(summary["silo_ledgers"]) == set(SILOS)  # the dead silo's ledger is kept
    assert summary["silo_ledgers"]["s2"]["mechanisms"] or not CADASG.load(out).ledger.private
    assert CADASG.load(out).meta["federated"]["contributions"] == summary["contributions"]


def test_a_round_is_retried_over_the_silos_still_there(plan, table_path, tmp_path):
    fed = FED.replace(rounds=2, min_clients=3, max_dropouts=0, round_retries=1)
    summary, _ = _run(plan, fed, table_path, tmp_path, DyingGrid(3, mute={102: {2}}))  # s3 misses round 2 once
    assert [(r["round"], r["attempt"], r["aggregated"]) for r in summary["rounds"]] == [
        (1, 1, True), (2, 1, False), (2, 2, True), (3, 1, True)]
    assert summary["contributions"] == {"s1": [1, 2], "s2": [1, 2], "s3": [1, 2]}


def test_too_many_dropouts_stop_the_run_and_write_nothing(plan, table_path, tmp_path):
    fed = SECURE.replace(connect_timeout=1.0)
    with pytest.raises(RunStopped, match=r"for round 2 \(train\).*wrote no model|round 2 \(train\) could not"):
        _run(plan, fed, table_path, tmp_path, DyingGrid(3, kill={101: 7, 102: 7}))
    assert not (tmp_path / "model").exists()


def test_a_context_held_only_by_a_lost_silo_is_sampled_from_the_shared_prior(plan, table_path, tmp_path):
    """s3 (node 102) holds every 'rare' row and dies in round 2: the model's cache has no 'rare' cell,
    the artifact says so, and a 'rare' request is still answered."""
    from cadasg_dist.synthesizer import CADASG

    summary, out = _run(plan, SECURE, table_path, tmp_path, DyingGrid(3, kill={102: 7}))
    assert summary["missing_from_final_cache"] == ["s3"] and summary["contributions"]["s3"] == [1]
    model = CADASG.load(out)
    rare = int(model.extractor.resolve({"group": "rare"})[0])
    assert model.cache.counts()[rare] == 0
    rows = model.sample(30, context={"group": "rare"}, seed=2)
    assert len(rows) == 30 and set(rows["group"]) == {"rare"}


def test_cadasg_federated_checks_the_federation_before_the_plan(table_path, tiny_config, monkeypatch):
    """``prepare_run`` (what ``cadasg federated`` calls before Ray starts) refuses too few silos for
    ``max_dropouts`` before any DP release, and says why a run without epsilon needs declarations."""
    from cadasg_dist.federation import simulation

    def no_plan(*args, **kwargs):
        raise AssertionError("the plan was built before the federation was checked")

    with monkeypatch.context() as m:
        m.setattr(simulation, "build_round_plan", no_plan)
        with pytest.raises(ConfigError, match="max_dropouts=2 need at least 4 silos, there are 3"):
            simulation.prepare_run(declared(tiny_config), FED.replace(max_dropouts=2), data=table_path,
                                   silo_column="site")
    with pytest.raises(ConfigError, match=r"shared schema with DP \(federated.schema_epsilon=10\).*declare them"):
        simulation.prepare_run(tiny_config, FED, data=table_path, silo_column="site")
