"""A node lost mid-training (``ray.cluster_utils.Cluster``: a head and one worker node, one CPU
each, so the two workers run one per node). When a node with the same room joins, the run resumes
from its last checkpoint and ends with the uninterrupted run's ledger; when none does, it stops
within a bounded wait with a message that says what the cluster lacks and what to do.

The cluster runs in a subprocess: the test session's own Ray (``ray_session``) may already be
running in this process, and one process can be connected to only one Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import json, os, signal, sys, threading, time
    from pathlib import Path
    import numpy as np, pandas as pd, ray
    from ray.cluster_utils import Cluster
    from cadasg_dist.config import CADASGConfig, ContextConfig, ModelConfig, TrainConfig
    from cadasg_dist.distributed.trainer import DistributedRunError, fit_distributed
    from cadasg_dist.synthesizer import CADASG
    from tests.neighbours import seeded_secrets

    tmp = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    n = 1600
    group = rng.choice(["big", "mid", "small"], size=n, p=[0.6, 0.25, 0.15])
    x = rng.normal(size=n) + (group == "mid")
    df = pd.DataFrame({"group": group, "x": x, "y": 2 * x + rng.normal(size=n),
                       "label": np.where(x + rng.normal(scale=0.5, size=n) > 0.3, "yes", "no")})
    declared = {"group": {"categories": ["big", "mid", "small"]}, "label": {"categories": ["no", "yes"]}}

    def config(name):
        return CADASGConfig(
            target="label", context=ContextConfig(columns=("group",)),
            model=ModelConfig(latent_dim=4, hidden=(32,), critic_hidden=(32,), utility_hidden=(16,)),
            train=TrainConfig(epochs=2, batch_size=96, seed=0),
        ).replace(**{"privacy.epsilon": 4.0, "data.columns": declared, "distributed.num_workers": 2,
                     # run1 may see Ray cancel a restarted worker's actor once more while the new node
                     # settles ("The actor never ran"): room for that, the ledger must still match
                     "distributed.max_failures": 3 if name == "run1" else 1,
                     "distributed.storage_path": str(tmp / name)})

    def steps(trace):
        return sum(len((trace / f"rank{r}.steps").read_text().splitlines())
                   for r in range(2) if (trace / f"rank{r}.steps").exists())

    def train_in_thread(name, out):
        """The run in a thread: this (main) thread changes the cluster, which Ray does only here.
        Each step waits 0.15 s (the trace's pace): an epoch lasts longer than Ray Train takes to
        register the previous epoch's checkpoint, so the node is lost inside epoch 2."""
        (tmp / f"trace-{name}").mkdir(parents=True, exist_ok=True)
        (tmp / f"trace-{name}" / "pace").write_text("0.15")
        def run():
            try:
                with seeded_secrets(11):
                    out["model"] = fit_distributed(CADASG(config(name)), df, trace_dir=str(tmp / f"trace-{name}"))
            except DistributedRunError as exc:
                out["error"] = str(exc)
                out["failed_at"] = time.monotonic()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def on_node(pid, node):
        """True when process ``pid`` runs under ``node``'s raylet."""
        import psutil
        raylet = node.all_processes["raylet"][0].process.pid
        try:
            return any(p.pid == raylet for p in psutil.Process(pid).parents())
        except psutil.NoSuchProcess:
            return False

    def lose_node(cluster, node, name, spe, replace, out):
        """Remove ``node`` two steps into epoch 2, once epoch 1's checkpoint is registered; with
        ``replace``, a node of the same size joins at once. The node's worker is frozen (SIGSTOP)
        the moment the trigger fires, so epoch 2 cannot finish while the removal lands, and killed
        (SIGKILL) with the node: a frozen process would not see its raylet die."""
        trace, storage = tmp / f"trace-{name}", tmp / name
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = any("epoch_00001" in p.read_text() for p in storage.glob("*/checkpoint_manager_snapshot.json"))
            if done and steps(trace) >= 2 * (spe + 2):
                pids = [int((trace / f"rank{r}.pid").read_text()) for r in range(2)]
                frozen = [pid for pid in pids if on_node(pid, node)]
                for pid in frozen:
                    os.kill(pid, signal.SIGSTOP)
                out["frozen"], out["frozen_at_steps"] = len(frozen), steps(trace)
                cluster.remove_node(node, allow_graceful=False)
                for pid in frozen:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                out["removed_at"] = time.monotonic()
                if replace:
                    out["new_node"] = cluster.add_node(num_cpus=1).node_id
                return
            time.sleep(0.01)

    # The GCS declares a silent node dead after 3 missed health checks of 1 s (Ray's default: 5 of
    # 3 s): while it still counts the lost node alive, a restarted group may place Ray Train's
    # synchronisation actor there, and that attempt fails at its next report after training on.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False,
        "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}})
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    result = {}
    try:
        with seeded_secrets(11):
            reference = CADASG(config("reference")).fit(df)
        spe = reference.meta["privacy"]["steps_taken"] // 2
        result["reference"] = {"epsilon": reference.epsilon, "steps": reference.meta["privacy"]["steps_taken"],
                               "ledger": [[e.name, e.noise_multiplier, e.sample_rate, e.steps]
                                          for e in reference.ledger.mechanisms]}
        # 1. The worker node dies; a node of the same size replaces it.
        event = {}
        thread = train_in_thread("run1", event)
        lose_node(cluster, node, "run1", spe, True, event)
        thread.join(400)
        if "model" not in event:
            raise SystemExit(f"run1 returned no model: {event.get('error')}")
        model = event["model"]
        meta = model.meta
        result["replaced"] = {
            "removed": "removed_at" in event, "new_node": event.get("new_node"),
            "frozen": event.get("frozen"), "frozen_at_steps": event.get("frozen_at_steps"), "steps_per_epoch": spe,
            "nodes": sorted(w["node"] for w in meta["distributed"]["worker_fingerprints"]),
            "resumed_from": meta["distributed"]["resumed_from_epoch"], "epochs": [h["epoch"] for h in model.history],
            "epsilon": model.epsilon, "steps": meta["privacy"]["steps_taken"],
            "lost": meta["privacy"]["steps_lost_to_failures"],
            "ledger": [[e.name, e.noise_multiplier, e.sample_rate, e.steps] for e in model.ledger.mechanisms]}
        # 2. The replacement dies too, and no node joins: the two workers no longer fit.
        event = {}
        gone = [n for n in cluster.worker_nodes if n.node_id == result["replaced"]["new_node"]][0]
        thread = train_in_thread("run2", event)
        lose_node(cluster, gone, "run2", spe, False, event)
        thread.join(300)
        result["unreplaced"] = {"error": event.get("error"),
                                "wait_s": event.get("failed_at", time.monotonic()) - event["removed_at"]}
    finally:
        ray.shutdown()
        cluster.shutdown()
    print("RESULT " + json.dumps(result))
''')


def test_lost_node_resumes_on_a_replacement_and_fails_clearly_without_one(tmp_path):
    # Ray Train waits this long for room for the workers per try (two tries: distributed.max_failures = 1).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "20",
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}  # checkpoints registered within half a second
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=590, env=env, cwd=ROOT)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    r = json.loads(lines[-1][len("RESULT "):])
    ref, replaced, unreplaced = r["reference"], r["replaced"], r["unreplaced"]
    # 1. Resumed from the epoch-1 checkpoint with a worker on the new node, both epochs done, and
    # the steps begun on the lost node counted once: the uninterrupted run's ledger and ε.
    assert replaced["removed"] and replaced["new_node"] in replaced["nodes"], replaced
    # the lost node's worker stopped inside epoch 2 (the two ranks' steps are summed)
    assert replaced["frozen"] == 1 and replaced["frozen_at_steps"] < 4 * replaced["steps_per_epoch"], replaced
    assert replaced["resumed_from"] == 1 and replaced["epochs"] == [1, 2], json.dumps(replaced)
    assert replaced["lost"] >= 1
    assert replaced["ledger"] == ref["ledger"] and replaced["steps"] == ref["steps"]
    assert abs(replaced["epsilon"] - ref["epsilon"]) <= 1e-9
    # 2. No room for two workers: a bounded wait (two start-up timeouts of 20 s, plus the restarts),
    # then one message naming what the cluster has, what the run needs, the fix and the spend.
    message = unreplaced["error"]
    assert message is not None and unreplaced["wait_s"] < 150
    assert "The cluster now has 1 CPU(s) on 1 live node(s) for 2 workers needing one CPU each" in message
    assert "--num-workers 1" in message and "DP step(s) the workers began are spent" in message
    assert "No model was returned" in message
