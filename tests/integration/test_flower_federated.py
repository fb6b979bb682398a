"""Federated runs on Flower's runtimes: the simulation engine (Ray) and deployment mode (TLS).

The simulation runs ``cadasg federated`` in a subprocess joined to the session's Ray cluster
(``ray_session``): Flower's Ray backend calls ``ray.shutdown()`` when a run ends, which in a
subprocess only disconnects that driver and leaves the session's Ray alone. Tiny models.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SILOS = ("s1", "s2", "s3")
CONFIG = """
target: label
context: {columns: [group]}
data:
  columns:
    group: {categories: [a, b, rare]}
    label: {categories: ["no", "yes"]}
    site: {kind: identifier, categories: [s1, s2, s3]}  # the silos' names: declared, never read from the data
model: {latent_dim: 4, hidden: [32], critic_hidden: [32], utility_hidden: [16]}
train: {batch_size: 128, seed: 0}
federated: {rounds: 2, local_epochs: 1, schema_epsilon: 10.0, round_timeout: 120, secagg_max_weight: 1000}
"""

# The dropout runs: 3 rounds, a round survives losing one silo, silos get 150 s to connect (at the start
# and before a retry: a loaded machine starts a SuperNode slowly).
# The plain route: deployed, each message starts a ClientApp process that imports torch, and SecAgg+'s
# four exchanges a round made one run take over 10 minutes on 2 shared cores. SecAgg+ under a silo
# lost at each of its stages is tested in process (tests/unit/test_federated_dropouts.py).
DROPOUTS = """
federated: {rounds: 3, local_epochs: 1, schema_epsilon: 10.0, round_timeout: 120, secagg_max_weight: 1000,
            secagg: false, min_clients: 2, max_dropouts: 1, round_retries: 1, connect_timeout: 150}
"""

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def silo_inputs(mixed_table, tmp_path_factory):
    """Three non-IID silos: s1 mostly group 'a', s2 mostly 'b', s3 every 'rare' row and only those."""
    rng = np.random.default_rng(1)
    df = mixed_table.copy()
    major = np.where(df["group"] == "a", "s1", "s2")
    minor = np.where(df["group"] == "a", "s2", "s1")
    df["site"] = np.where(df["group"] == "rare", "s3", np.where(rng.random(len(df)) < 0.8, major, minor))
    d = tmp_path_factory.mktemp("flower")
    df.to_parquet(d / "table.parquet")
    (d / "tiny.yaml").write_text(CONFIG)
    (d / "dropouts.yaml").write_text(CONFIG.split("federated:")[0] + DROPOUTS)
    # no retry: the run stops at the first round that cannot be aggregated (a retry's wait for silos
    # that never come back is federated.connect_timeout; tested in process, test_federated_dropouts.py)
    # and a round waits 75 s for replies, not 120: the silos killed in round 2 never send one
    no_retry = DROPOUTS.replace("round_retries: 1", "round_retries: 0")
    no_retry = no_retry.replace("round_timeout: 120", "round_timeout: 75")
    (d / "no-retry.yaml").write_text(CONFIG.split("federated:")[0] + no_retry)
    return d, df


def cadasg_federated(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cadasg_dist.cli", "federated", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out


@pytest.fixture(scope="module")
def simulated(silo_inputs, ray_session):
    """ONE simulation for the two tests below (each costs ~40 s of Ray actors starting and importing
    torch): 3 non-IID silos, DP (epsilon 20 per silo), SecAgg+, 3 rounds, silo index 1 ('s2')
    failing in round 2."""
    from cadasg_dist.synthesizer import CADASG

    d, df = silo_inputs
    out = d / "model-dp"
    run = cadasg_federated([str(d / "table.parquet"), "--silo-column", "site", "--config", str(d / "tiny.yaml"),
                            "--epsilon", "20", "--secagg", "--rounds", "3",
                            "--set", "federated.inject_failure=1:2:raise",
                            "--address", ray_session.get_runtime_context().gcs_address, "--out", str(out)])
    return CADASG.load(out), run, df


def _train_steps(ledger_state: dict) -> int:
    return sum(m["steps"] for m in ledger_state["mechanisms"] if m["name"].startswith("train_step"))


def test_simulation_three_non_iid_silos_dp_secagg(simulated):
    model, _, df = simulated
    meta = model.meta["federated"]
    assert meta["secagg"] and set(meta["silos"]) == set(SILOS)
    # one ledger per silo, spanning every round, with its noisy count; the model carries them composed
    for name, state in meta["silo_ledgers"].items():
        names = [m["name"] for m in state["mechanisms"]]
        assert names[0].startswith("preprocess/") and "silo/count" in names and names[-1] == "cache/final", name
        assert 0 < meta["silos"][name]["epsilon"] <= 20.0 and set(meta["silos"][name]) == {"noisy_rows", "epsilon"}
    assert model.ledger.private and meta["guarantee"]["assumption"] == "units may span silos"
    assert model.epsilon == meta["guarantee"]["epsilon"] > max(s["epsilon"] for s in meta["silos"].values())
    # the 'rare' context lives in silo s3 only, and survives into the global cache
    rare = int(model.extractor.resolve({"group": "rare"})[0])
    assert model.cache.counts()[rare] > 0
    rows = model.sample(40, context={"group": "rare"}, seed=3)
    assert set(rows["group"]) == {"rare"} and list(rows.columns) == [c for c in df.columns if c != "site"]


def test_simulation_survives_a_dropout(simulated):
    model, run, _ = simulated
    meta = model.meta["federated"]
    rounds = meta["rounds"]
    assert [r["replied"] for r in rounds] == [3, 2, 3, 3]  # 3 training rounds, then the final cache
    assert all(r["aggregated"] for r in rounds) and rounds[1]["dropped"] == 1
    assert "dropped out of SecAgg+" in rounds[1]["failures"][0]
    assert "1 silo dropouts" in run.stdout
    # s2 released nothing in round 2, so its ledger holds two rounds of steps, s1's three
    steps = {name: _train_steps(state) for name, state in meta["silo_ledgers"].items()}
    s1_per_round = steps["s1"] / 3
    assert steps["s2"] < steps["s1"] and abs(steps["s2"] / 2 - rounds[0]["silos"]["s2"]["steps"]) < 1e-9
    assert s1_per_round == rounds[0]["silos"]["s1"]["steps"]


def deploy_and_kill(d: Path, tmp_path: Path, victims: list[str], port: int, config: str = "dropouts.yaml"
                    ) -> tuple[subprocess.CompletedProcess, Path]:
    """``federated/deploy.py`` over the three silos; once round 1 is aggregated (round 2 starting),
    SIGKILL the process group of each victim's SuperNode (its ClientApp included) from outside."""
    work, out = tmp_path / "work", tmp_path / "model"
    cmd = [sys.executable, str(ROOT / "federated" / "deploy.py"), str(d / "table.parquet"), "--silo-column", "site",
           "--config", str(d / config), "--out", str(out), "--workdir", str(work), "--port", str(port),
           "--node-port", str(port + 100), "--timeout", "720"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    log, deadline = work / "logs" / "flwr-run.log", time.monotonic() + 420
    try:
        while not (log.exists() and "round 1 (train" in log.read_text(errors="replace")):
            assert proc.poll() is None, "deploy.py ended before round 2: " + proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "round 1 never finished"
            time.sleep(0.5)
        groups = json.loads((work / "supernodes.json").read_text())
        for name in victims:
            os.killpg(groups[name], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=800)
    finally:
        if proc.poll() is None:  # a failed wait: stop deploy.py, which stops what it started
            proc.terminate()
            proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), out


def test_deployment_survives_a_supernode_killed_in_round_2(silo_inputs, tmp_path):
    """``federated/deploy.py``: certificates, a SuperLink with TLS, one SuperNode per silo, ``flwr
    run``; one SuperNode's process group SIGKILLed once round 1 is aggregated."""
    from cadasg_dist.synthesizer import CADASG

    d, _ = silo_inputs
    run, out = deploy_and_kill(d, tmp_path, ["s2"], 19591)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    work = tmp_path / "work"
    assert {"ca.crt", "server.pem", "server.key"} <= {p.name for p in (work / "certs").iterdir()}
    assert "Push replies" in (work / "logs" / "superlink.log").read_text()
    assert json.loads((work / "plan.json").read_text())["format"] == "cadasg-federation-plan"
    model = CADASG.load(out)
    assert len(model.sample(20, context={"group": "rare"})) == 20
    meta = model.meta["federated"]
    rounds = meta["rounds"]
    last = {r["round"]: r for r in rounds}  # a retried round: its aggregated attempt
    assert sorted(last) == [1, 2, 3, 4] and all(r["aggregated"] for r in last.values())
    assert last[1]["contributors"] == list(SILOS)
    assert set(last[2]["contributors"]) >= {"s1", "s3"}  # s2 too if it had replied before it died
    assert last[3]["contributors"] == ["s1", "s3"] and last[3]["sampled"] == 2  # the dead node is not sampled
    assert meta["final_cache_silos"] == ["s1", "s3"]
    assert meta["contributions"]["s1"] == meta["contributions"]["s3"] == [1, 2, 3]
    assert meta["contributions"]["s2"] in ([1], [1, 2])
    # every contributing silo's ledger is kept, the dead one's (as of its last reply) too
    assert set(meta["silo_ledgers"]) == set(SILOS)
    assert all(meta["silo_ledgers"][s]["format"] == meta["silo_ledgers"]["s1"]["format"] for s in SILOS)
    assert "NOT aggregated" not in (tmp_path / "work" / "logs" / "flwr-run.log").read_text(errors="replace")


def test_deployment_stops_when_too_many_supernodes_die(silo_inputs, tmp_path):
    d, _ = silo_inputs
    run, out = deploy_and_kill(d, tmp_path, ["s1", "s2"], 19691, "no-retry.yaml")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stderr.startswith("cadasg: federated run stopped:"), run.stderr[-3000:]
    assert "wrote no model" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1  # one clear line
    assert not (out / "meta.json").exists()
