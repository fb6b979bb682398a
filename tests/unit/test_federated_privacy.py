"""A private federated run leaves no exact channel: silo names from the declaration, noisy silo
sizes, and the run's guarantee composed over the silos (issue 26, federated part).

No Flower runtime and no Ray: the real ClientApp answers in this process (``LocalGrid``), with the
secret noise seed fixed (``privacy.entropy.secret_seed`` replaced by a counter), so two runs on
neighbouring tables can be compared.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from cadasg_dist.config import CADASGConfig
from cadasg_dist.errors import ConfigError
from cadasg_dist.federation.accounting import (
    COUNT,
    DISJOINT,
    SPANNING,
    count_sigma,
    release_count,
    run_guarantee,
)
from cadasg_dist.federation.config import FederatedConfig
from cadasg_dist.federation.plan import build_plan, encode_silo
from cadasg_dist.federation.server import ServerSettings, run_server
from cadasg_dist.federation.silo import SiloTrainer
from cadasg_dist.federation.simulation import prepare_run, silo_sources
from cadasg_dist.privacy import entropy
from cadasg_dist.privacy.analysis import DEFAULT_RDP_ORDERS, compose_rdp, rdp_to_epsilon, recompute_epsilon
from cadasg_dist.privacy.ledger import Mechanism, PrivacyLedger

SILOS = ["s1", "s2", "s3", "s4"]  # s4 is declared and holds no row
FED = FederatedConfig(rounds=2, local_epochs=1, schema_epsilon=10.0, round_timeout=30.0, secagg=False)


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """What the Flower runtime sets in a ServerApp process before messages can be created."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def fixed_entropy(monkeypatch) -> None:
    """The secret seeds as a counter: a run's noise is replayed exactly by the next run."""
    counter = itertools.count(1)
    monkeypatch.setattr(entropy, "secret_seed", lambda bits=63: next(counter) * 7919 % 2**bits)


def private_config(tiny_config: CADASGConfig, silos: list[str] | None = SILOS, epsilon: float = 2.0) -> CADASGConfig:
    raw = tiny_config.to_dict()
    site = {"kind": "identifier"} if silos is None else {"kind": "identifier", "categories": silos}
    # everything declared (a codebook's job), so that no bound release can fail at this small epsilon
    raw["data"]["columns"] = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]},
                              "count": {"min": 0, "max": 40}, "amount": {"min": 0, "max": 5000},
                              "score": {"min": -10, "max": 10}, "level": {"categories": [1, 2, 3]},
                              "when": {"kind": "identifier"}, "site": site}
    raw["privacy"]["epsilon"] = epsilon
    return CADASGConfig.from_dict(raw)


@pytest.fixture(scope="module")
def silo_table(mixed_table):
    rng = np.random.default_rng(1)
    df = mixed_table.copy()
    df["site"] = np.where(df["group"] == "rare", "s3", np.where(rng.random(len(df)) < 0.5, "s1", "s2"))
    return df


@pytest.fixture(scope="module")
def tables(silo_table, tmp_path_factory):
    """D, and D plus one row whose silo value ('s9') is not declared."""
    d = tmp_path_factory.mktemp("neighbours")
    odd = silo_table.iloc[[0]].copy()
    odd["site"] = "s9"
    paths = d / "d.parquet", d / "d_plus.parquet"
    silo_table.to_parquet(paths[0])
    pd.concat([silo_table, odd], ignore_index=True).to_parquet(paths[1])
    return paths


class LocalGrid:
    """Delivers messages to the real ClientApp in this process, one persistent Context per silo."""

    def __init__(self, n: int) -> None:
        from federated.client_app import app

        self.app = app
        self.contexts = {100 + i: Context(run_id=1, node_id=100 + i, node_config={"partition-id": i},
                                          state=RecordDict(), run_config={}) for i in range(n)}
        self.run = SimpleNamespace(run_id=1)

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []  # in node order, so that fixed seeds reach the same silos in every run
        for m in sorted(messages, key=lambda m: m.metadata.dst_node_id):
            try:
                replies.append(self.app(copy.deepcopy(m), self.contexts[m.metadata.dst_node_id]))
            except Exception as exc:  # what the runtime turns an exception into
                replies.append(Message(Error(code=0, reason=repr(exc)), reply_to=m))
        return replies


class Recorder(logging.Handler):
    """The library's log lines of one run."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def private_run(plan, path, out, cfg, fed=FED):
    sources, _ = silo_sources(path, "site", None, cfg)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    settings = ServerSettings(plan=plan, fed=fed, num_silos=len(sources), sources=sources, out=out)
    return run_server(LocalGrid(len(sources)), context, settings)


def masked(text: str) -> str:
    """Printed or logged text with every number replaced (and the padding that aligns numbers)."""
    return re.sub(r"\s+", " ", re.sub(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", "#", text))


def shape(value):
    """A JSON document's structure: keys kept, numbers masked (in text too: a time stamp)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, str):
        return masked(value)
    return "#" if isinstance(value, int | float) and not isinstance(value, bool) else value


@pytest.fixture(scope="module")
def neighbour_runs(silo_table, tables, tiny_config, tmp_path_factory):
    """Private runs on D and on D plus a row of an undeclared silo, each with its own plan built by
    the plan round over its silos (``prepare_run``: no pooled release), the secret seeds fixed, the
    printed lines and logs (the plan round's included) kept."""
    from cadasg_dist.cli.federated import report

    cfg = private_config(tiny_config)
    out_dir = tmp_path_factory.mktemp("runs")
    runs = []
    for i, path in enumerate(tables):
        with pytest.MonkeyPatch.context() as mp:
            fixed_entropy(mp)
            for key in ("_run_id", "_task_id"):  # a module fixture runs before the autouse one
                mp.setattr(TaskIdentity, key, 1)
            mp.setattr(TaskIdentity, "_node_id", 0)
            handler = Recorder()
            lib = logging.getLogger("cadasg_dist")
            lib.addHandler(handler)
            old = lib.level
            lib.setLevel(logging.INFO)
            try:
                plan = prepare_run(cfg, FED, data=path, silo_column="site").plan
                summary = private_run(plan, path, out_dir / f"m{i}", cfg)
            finally:
                lib.removeHandler(handler)
                lib.setLevel(old)
        runs.append({"summary": summary, "out": out_dir / f"m{i}", "logs": handler.lines, "report": report,
                     "plan": plan.to_json()})
    return runs, silo_table


def whole_numbers(value):
    """Every int, and every float with no fraction, in a JSON document (but the accountant's Renyi
    orders: the same constants in every ledger)."""
    if isinstance(value, dict):
        return [x for k, v in value.items() if k != "rdp_orders" for x in whole_numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in whole_numbers(v)]
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value == int(value):
        return [int(value)]
    return []


def privacy_main(argv: list[str]) -> int:
    from cadasg_dist.cli import main

    return main(["privacy", *argv])


def printed(capsys, fn, *args) -> list[str]:
    fn(*args)
    return capsys.readouterr().out.splitlines()


# --- silo names ----------------------------------------------------------------------------------

def test_a_private_run_refuses_an_undeclared_silo_column_before_reading_a_row(tables, tmp_path, monkeypatch,
                                                                               capsys):
    import cadasg_dist.federation.apps as apps
    import cadasg_dist.federation.simulation as simulation
    from cadasg_dist.cli.federated import main

    def never(*args, **kwargs):
        raise AssertionError("the refusal must come before any row is read or Ray/Flower starts")

    monkeypatch.setattr(simulation, "read_table", never)
    monkeypatch.setattr(apps, "run_simulation", never)
    config = tmp_path / "c.yaml"
    config.write_text("target: label\ncontext: {columns: [group]}\ndata: {columns: {group: {categories: [a, b, rare]},"
                      " label: {categories: ['no', 'yes']}, site: {kind: identifier}}}\n")
    rc = main([str(tables[0]), "--silo-column", "site", "--config", str(config), "--epsilon", "1",
               "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("cadasg: error: ")
    assert "data.columns.site.categories" in err[0] and "--silos NAME,NAME" in err[0]
    assert not (tmp_path / "m").exists()


def test_silo_names_come_from_the_declaration_and_undeclared_rows_go_nowhere(tables, tiny_config):
    cfg = private_config(tiny_config)
    sources, pooled = silo_sources(tables[1], "site", None, cfg)
    assert [s["name"] for s in sources] == SILOS  # s4 (no row) is a silo; s9 (one row) is none
    assert "s9" not in set(pooled["site"]) and len(pooled) == len(pd.read_parquet(tables[0]))
    listed, _ = silo_sources(tables[1], "site", "s2,s1", cfg)  # --silos NAMES wins over the declared set
    assert [s["name"] for s in listed] == ["s2", "s1"]
    with pytest.raises(ConfigError, match="a federation needs two or more"):
        silo_sources(tables[1], "site", "s1", cfg)
    # a non-private run without a declaration keeps the observed values
    observed, _ = silo_sources(tables[0], "site", None, private_config(tiny_config, None, math.inf))
    assert [s["name"] for s in observed] == ["s1", "s2", "s3"]


def test_silos_are_matched_by_value_whatever_the_spelling(tmp_path, tiny_config):
    path = tmp_path / "t.csv"
    pd.DataFrame({"region": [1.0, 2.0, 2.0, np.nan, 7.0], "x": range(5)}).to_csv(path, index=False)
    raw = tiny_config.to_dict()
    raw["data"]["columns"] = {"region": {"categories": [1, 2]}}
    raw["privacy"]["epsilon"] = 1.0
    sources, pooled = silo_sources(path, "region", None, CADASGConfig.from_dict(raw))
    assert [s["name"] for s in sources] == ["1", "2"] and list(pooled["x"]) == [0, 1, 2]


# --- the noisy count ------------------------------------------------------------------------------

def test_the_count_release_is_a_gaussian_mechanism_floored_at_one(tiny_config):
    cfg = private_config(tiny_config, epsilon=1.0).replace(**{"privacy.delta": 1e-6})
    sigma = count_sigma(cfg, 0.02)
    assert sigma > count_sigma(cfg.replace(**{"privacy.epsilon": 8.0}), 0.02) > 0  # more budget, less noise
    rng = np.random.default_rng(0)
    noisy, mech = release_count(500, None, 1, sigma, rng)
    assert (mech.name, mech.sample_rate, mech.steps, mech.sensitivity) == (COUNT, 1.0, 1, 1.0)
    assert noisy.rows == noisy.units and abs(noisy.rows - 500) < 6 * sigma
    empty, _ = release_count(0, None, 1, 1000.0, np.random.default_rng(3))
    assert empty.rows >= 1 and empty.units >= 1
    grouped, mech = release_count(500, 200, 3, sigma, rng)  # (units, rows / k): the central run's one release
    assert mech.sensitivity == pytest.approx(math.sqrt(2)) and grouped.rows >= grouped.units >= 1
    with pytest.raises(ConfigError, match="count_share"):
        FederatedConfig(count_share=0.0)


def test_a_private_silo_plans_with_its_noisy_count(silo_table, tiny_config, monkeypatch):
    fixed_entropy(monkeypatch)
    cfg = private_config(tiny_config)
    plan = build_plan(silo_table, cfg, FED)
    rows = silo_table[silo_table["site"] == "s1"]
    trainer = SiloTrainer(plan, FED, encode_silo(plan, rows), index=0)
    names = [m.name for m in trainer.ledger.mechanisms]
    assert names[:len(plan.preprocessing)] == [m.name for m in plan.preprocessing] and names[-1] == COUNT
    b = plan.config.train.batch_size
    assert trainer.budget.sample_rate == pytest.approx(b / trainer.count.rows)  # q = B / n-hat
    assert trainer.weight == trainer.count.rows != len(rows)  # seeds fixed: this draw is not exact
    assert trainer.dp.expected_units == pytest.approx(b)  # the gradient's divisor: q * n-hat, public
    # restored from its snapshot, the silo keeps its one release
    ledger_json, blob = trainer.snapshot()
    again = SiloTrainer.restore(plan, FED, trainer.data, index=0, ledger_json=ledger_json, blob=blob)
    assert again.count == trainer.count and [m.name for m in again.ledger.mechanisms].count(COUNT) == 1


def test_an_empty_declared_silo_trains_and_replies(silo_table, tiny_config):
    cfg = private_config(tiny_config)
    plan = build_plan(silo_table, cfg, FED)
    data = encode_silo(plan, silo_table.iloc[:0])
    assert data.n_rows == 0 and data.n_units == 0
    trainer = SiloTrainer(plan, FED, data, index=3)
    from cadasg_dist.federation.server import initial_weights

    report = trainer.train_round(initial_weights(plan))
    assert report.steps >= 1 and trainer.weight >= 1
    stats = trainer.final_release(initial_weights(plan))
    assert stats.n.shape[0] == plan.dims.contexts * plan.dims.strata


# --- neighbouring tables: a row of a new silo ----------------------------------------------------

def test_a_row_of_an_undeclared_silo_changes_nothing_that_leaves_the_run(neighbour_runs, capsys):
    runs, _ = neighbour_runs
    a, b = runs
    assert list(a["summary"]["silos"]) == list(b["summary"]["silos"]) == SILOS
    meta = [json.loads((r["out"] / "meta.json").read_text()) for r in runs]
    assert shape(meta[0]) == shape(meta[1])
    assert [masked(x) for x in a["logs"]] == [masked(x) for x in b["logs"]]
    lines = [[masked(x).replace(str(r["out"]), "OUT") for x in printed(capsys, r["report"], r["out"])] for r in runs]
    assert lines[0] == lines[1]
    shown = [[masked(x) for x in printed(capsys, privacy_main, [str(r["out"])])] for r in runs]
    assert shown[0] == shown[1]
    # the seeds are fixed and the declared silos hold the same rows: their noisy counts are the same,
    # and so is the plan the plan round released (the undeclared silo's row reached no party)
    assert a["summary"]["silos"] == b["summary"]["silos"]
    assert a["plan"] == b["plan"]
    assert any("plan round over 4 silos" in line for line in a["logs"])


def test_no_exact_silo_count_leaves_in_the_artifact(neighbour_runs):
    runs, table = neighbour_runs
    out = runs[0]["out"]
    exact = {name: int((table["site"] == name).sum()) for name in SILOS}
    meta = json.loads((out / "meta.json").read_text())
    fed = meta["federated"]
    assert all(set(s) == {"noisy_rows", "epsilon"} for s in fed["silos"].values())
    # every whole number the metadata and ledger hold (silo figures, steps, rounds, bytes...): no
    # silo's exact count among them (s4 holds none: its noisy count is floored at 1)
    numbers = set(itertools.chain.from_iterable(whole_numbers(json.loads((out / f).read_text()))
                                                for f in ("meta.json", "ledger.json")))
    for name, n in exact.items():
        if n:
            assert n not in numbers, (name, n)
    assert meta["training_rows"] != len(table)
    # every silo ledger's sampling rate is B / n-hat, never B / n
    b = json.loads((out / "config.json").read_text())["train"]["batch_size"]
    for name, state in fed["silo_ledgers"].items():
        rates = {m["sample_rate"] for m in state["mechanisms"] if m["name"].startswith("train_step")}
        assert rates == {min(1.0, b / fed["silos"][name]["noisy_rows"])}, name


def test_the_artifact_carries_the_guarantee_composed_over_silos(neighbour_runs, capsys):
    from cadasg_dist.synthesizer import CADASG

    runs, _ = neighbour_runs
    model = CADASG.load(runs[0]["out"])
    fed = model.meta["federated"]
    g = fed["guarantee"]
    silo_eps = {name: recompute_epsilon(state) for name, state in fed["silo_ledgers"].items()}
    assert g["assumption"] == SPANNING and set(g["silo_epsilons"]) == set(SILOS)
    assert all(g["epsilon"] >= e for e in silo_eps.values()) and g["epsilon"] > max(silo_eps.values())
    assert model.epsilon == pytest.approx(g["epsilon"])
    # recomputed: the plan's preprocessing once, then every silo's own releases, RDP curves summed
    plan_names = fed["silo_ledgers"]["s1"]["mechanisms"][:len(fed["schema_ledger"]["mechanisms"])]
    shared = len(plan_names)
    history = [(m["noise_multiplier"], m["sample_rate"], m["steps"]) for m in plan_names]
    for state in fed["silo_ledgers"].values():
        history += [(m["noise_multiplier"], m["sample_rate"], m["steps"]) for m in state["mechanisms"][shared:]]
    rdp = compose_rdp(history, orders=DEFAULT_RDP_ORDERS)
    eps, _ = rdp_to_epsilon(rdp=rdp, orders=DEFAULT_RDP_ORDERS, delta=g["delta"])
    assert g["epsilon"] == pytest.approx(eps, rel=1e-9)
    assert recompute_epsilon(model.ledger.state_dict()) == pytest.approx(eps, rel=1e-9)
    # `cadasg privacy` prints the composed guarantee beside each silo's epsilon
    out = printed(capsys, privacy_main, [str(runs[0]["out"])])
    assert out[0].startswith(f"(ε={g['epsilon']:.3f}")
    for name, e in silo_eps.items():
        assert f"  silo {name}: ε={e:.3f}" in out
    assert any(line.startswith("guarantee for a person whose rows may span silos") for line in out)


def test_declared_disjoint_units_give_the_largest_silo(neighbour_runs):
    runs, _ = neighbour_runs
    fed = json.loads((runs[0]["out"] / "meta.json").read_text())["federated"]
    ledgers = {name: PrivacyLedger.from_state_dict(state) for name, state in fed["silo_ledgers"].items()}
    shared = tuple(Mechanism.from_dict(m) for m in fed["silo_ledgers"]["s1"]["mechanisms"]
                   [:len(fed["schema_ledger"]["mechanisms"])])
    ledger, g = run_guarantee(ledgers, shared, disjoint=True)
    assert g["assumption"] == DISJOINT and g["epsilon"] == max(lg.epsilon() for lg in ledgers.values())
    spanning, _ = run_guarantee(ledgers, shared, disjoint=False)
    assert spanning.epsilon() > ledger.epsilon()
    from cadasg_dist.federation.accounting import guarantee_lines

    assert "federated.disjoint_units" in guarantee_lines({"guarantee": g}, ledger)[0]
