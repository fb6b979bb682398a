"""The federated plan round: each silo's noisy statistics, summed under pairwise masks, build the
plan; no row leaves its silo and deployment never pools a table (issue 31, a plan without pooling).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cadasg_dist.errors import CADASGError
from cadasg_dist.federation.accounting import release_count as silo_count
from cadasg_dist.federation.config import FederatedConfig
from cadasg_dist.federation.plan import FederationPlan, build_plan, build_round_plan
from cadasg_dist.federation.plan_round import FIXED_POINT, PlanParty, SecureSum, noise_share
from cadasg_dist.privacy.ledger import Mechanism
from cadasg_dist.private.releases import release_count
from tests.neighbours import exact_channels, seeded_secrets
from tests.unit.test_federated_privacy import FED, SILOS, private_config


@pytest.fixture(scope="module")
def silo_table(mixed_table):
    """The mixed table in silos s1..s3 (s4 declared, empty), as in test_federated_privacy."""
    rng = np.random.default_rng(1)
    df = mixed_table.copy()
    df["site"] = np.where(df["group"] == "rare", "s3", np.where(rng.random(len(df)) < 0.5, "s1", "s2"))
    return df


def parties_of(table: pd.DataFrame, seed: int = 0) -> list[PlanParty]:
    return [PlanParty(s, table[table["site"] == s].reset_index(drop=True), rng=np.random.default_rng([seed, i]))
            for i, s in enumerate(SILOS)]


def test_the_server_sees_each_silo_masked_and_only_the_total_in_the_clear(silo_table, tiny_config):
    cfg = private_config(tiny_config)
    parties = parties_of(silo_table)
    channel = SecureSum(parties)
    for p in parties:
        p.start(cfg, [], noise_share("split", len(parties)))
    exact = sum(p.statistic("count", {"rows_per_unit": 1}) for p in parties)
    assert exact[0] == (silo_table["site"].isin(SILOS)).sum()
    quiet = Mechanism(name="preprocess/count", noise_multiplier=1e-9, sample_rate=1.0)
    answers = [p.answer("count", quiet, {"rows_per_unit": 1}) for p in parties]
    # each answer is masked by uniform 64-bit noise: nothing near the silo's count
    assert all(abs(int(a.view(np.int64)[0]) / FIXED_POINT) > 1e6 for a in answers)
    total = channel.total("count", quiet, {"rows_per_unit": 1})
    assert total[0] == pytest.approx(exact[0], abs=1e-3)
    assert [m.name for m in parties[0].spent] == ["preprocess/count"] * 2  # each answer recorded
    assert noise_share("split", 4) == 0.25 and noise_share("full", 4) == 1.0


def test_split_noise_sums_to_the_release_sd_and_full_noise_to_sqrt_k_times(silo_table, tiny_config):
    cfg = private_config(tiny_config)
    mech = Mechanism(name="preprocess/count", noise_multiplier=10.0, sample_rate=1.0)
    spread = {}
    for mode in ("split", "full"):
        totals = []
        for seed in range(120):
            parties = parties_of(silo_table, seed)
            for p in parties:
                p.start(cfg, [], noise_share(mode, len(parties)))
            totals.append(SecureSum(parties).total("count", mech, {"rows_per_unit": 1})[0])
        spread[mode] = float(np.std(totals))
    assert spread["split"] == pytest.approx(10.0, rel=0.25)
    assert spread["full"] == pytest.approx(10.0 * math.sqrt(len(SILOS)), rel=0.25)


def test_a_silo_that_cannot_answer_stops_the_round_by_name_only(silo_table, tiny_config):
    cfg = private_config(tiny_config)
    broken = parties_of(silo_table)
    broken[1] = PlanParty("s2", silo_table.assign(amount="secret-value-7"), rng=np.random.default_rng(1))
    with pytest.raises(CADASGError) as err:
        build_round_plan(broken, cfg.replace(**{"data.columns.amount.kind": "continuous"}), FED)
    assert "s2" in str(err.value) and "secret-value-7" not in str(err.value)


def test_the_round_plan_has_the_pooled_plans_structure_and_every_silo_recorded_its_releases(silo_table,
                                                                                           tiny_config):
    cfg = private_config(tiny_config, epsilon=8.0)
    cfg = cfg.replace(**{"data.columns.score.min": None, "data.columns.score.max": None})  # a bounds release too
    parties = parties_of(silo_table)
    plan = build_round_plan(parties, cfg, FED)
    pooled = build_plan(silo_table[silo_table["site"].isin(SILOS)], cfg, FED)
    assert [m.name for m in plan.preprocessing] == [m.name for m in pooled.preprocessing]
    assert "preprocess/bounds" in [m.name for m in plan.preprocessing]
    assert [(c.name, c.kind, c.categories) for c in plan.schema.columns] == \
        [(c.name, c.kind, c.categories) for c in pooled.schema.columns]
    assert plan.dims.to_dict().keys() == pooled.dims.to_dict().keys()
    assert plan.transformer.class_marginals is not None and plan.transformer.context_marginals is not None
    for p in parties:  # a silo's ledger starts from what it answered: the plan's releases
        assert [m.to_dict() for m in p.spent] == [m.to_dict() for m in plan.preprocessing]
    assert FederationPlan.from_json(plan.to_json()).to_json() == plan.to_json()


def test_the_one_count_release_serves_a_central_run_and_a_silo(tiny_config):
    for units in (None, 80):
        central = release_count(200, units, sigma=3.0, rows_per_unit=2, rng=np.random.default_rng(5))
        noisy, mech = silo_count(200, units, 2, 3.0, np.random.default_rng(5))
        assert (noisy.rows, noisy.units, mech.sensitivity) == central
    assert release_count(0, None, sigma=1000.0, rows_per_unit=1, rng=np.random.default_rng(3))[:2] >= (1, 1)


def plan_view(table: pd.DataFrame, cfg, seed: int) -> dict:
    with seeded_secrets(seed):
        parties = [PlanParty(s, table[table["site"] == s].reset_index(drop=True)) for s in SILOS]
        return json.loads(build_round_plan(parties, cfg, FED).to_json())


def test_an_odd_row_in_a_silo_changes_nothing_of_the_plan_but_noisy_numbers(silo_table, tiny_config):
    cfg = private_config(tiny_config, epsilon=8.0)  # kinds declared, as a codebook does
    cfg = cfg.replace(**{"data.columns.score.min": None, "data.columns.score.max": None,
                         "data.columns.count.kind": "integer", "data.columns.score.kind": "continuous"})
    odd = silo_table.iloc[[0]].copy()
    odd["site"], odd["group"], odd["count"], odd["score"], odd["level"] = "s1", "A ", 2.5, 1e9, np.nan
    neighbour = pd.concat([silo_table, odd], ignore_index=True)
    base, plus, reseeded = plan_view(silo_table, cfg, 1), plan_view(neighbour, cfg, 1), plan_view(silo_table, cfg, 2)
    found = exact_channels(base, plus, reseeded)
    assert found == [], found[:8]
    assert base != plus  # the row is counted: the noisy numbers move


def test_deployment_builds_the_plan_from_each_silo_file_alone(tmp_path, silo_table, tiny_config, monkeypatch):
    """``federated/deploy.py``'s plan step opens every silo file once, on its own, and no other
    table; the simulation's pooling helpers are never called."""
    import cadasg_dist.data.io as io
    import cadasg_dist.federation.simulation as simulation
    from federated.deploy import build_plan_file

    silo_dir = tmp_path / "silos"
    silo_dir.mkdir()
    files = []
    for s in SILOS:
        path = silo_dir / f"{s}.parquet"
        silo_table[silo_table["site"] == s].reset_index(drop=True).to_parquet(path)
        files.append((s, path))
    opened = []
    real = io.read_table

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return real(path, *args, **kwargs)

    def never(*args, **kwargs):
        raise AssertionError("deployment pooled a table")

    monkeypatch.setattr(io, "read_table", spy)
    for name in ("silo_sources", "_directory_sources", "prepare_run", "read_table"):
        monkeypatch.setattr(simulation, name, never)
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(private_config(tiny_config).to_dict()))
    args = _args(config)
    path = build_plan_file(args, files, tmp_path)
    assert sorted(opened) == sorted(str(p) for _, p in files)  # each silo file once, nothing else
    plan = FederationPlan.from_json(path.read_text())
    assert [m.name for m in plan.preprocessing][0] == "preprocess/count"


def _args(config):
    import argparse

    args = argparse.Namespace(data=None, silo_column=None, silos=None, config=str(config), codebook=None, set=[])
    for name in ("target", "context", "epsilon", "delta", "privacy_unit", "seed", "local_epochs", "strategy",
                 "proximal_mu", "server_lr", "local_lr_scale", "min_clients", "round_timeout", "rounds", "secagg"):
        setattr(args, name, None)
    return args


def test_plan_noise_is_checked():
    from cadasg_dist.errors import ConfigError

    with pytest.raises(ConfigError, match="plan_noise"):
        FederatedConfig(plan_noise="half")


def test_a_unit_that_may_span_silos_scales_every_plan_release(silo_table, tiny_config):
    """Each silo caps a unit's rows on its own: a unit in every silo moves each total by k silos'
    worth, so the releases carry k times the sensitivity unless the units are declared disjoint."""
    table = silo_table.assign(pid=np.arange(len(silo_table)) % 150)  # persons with rows in several silos
    cfg = private_config(tiny_config, epsilon=8.0).replace(**{"privacy.unit": "pid", "privacy.max_rows_per_unit": 2})
    spanning = build_round_plan(parties_of(table), cfg, FED)
    disjoint = build_round_plan(parties_of(table), cfg, FederatedConfig(**{**FED.to_dict(), "disjoint_units": True}))
    pairs = list(zip(spanning.preprocessing, disjoint.preprocessing))
    assert [a.name for a, _ in pairs] == [b.name for _, b in pairs]
    assert all(a.sensitivity == pytest.approx(len(SILOS) * b.sensitivity) for a, b in pairs)
    assert disjoint.preprocessing[0].sensitivity == pytest.approx(math.sqrt(2))  # (units, rows / k)
