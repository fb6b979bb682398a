"""The data plane under a tight memory budget stays bounded: a 2-worker run over a table of many
Parquet parts (one read task per part: with zero-CPU tasks and no cap, Ray would start a worker
process for each) and a 2-worker ``sample_on_ray``, while a thread counts the raylet's worker
processes. Bounded means at most the training workers plus a fixed number (Ray Train's controller
and helper actors, two data tasks per pass, Ray's idle pool and agents).

The run starts its own small Ray (2 CPUs, a 96 MB object store) in a subprocess: the session's Ray
may be running in this process, and one process can connect to one Ray only."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

# Processes besides the training workers: agents, controller, journal, cleaner, synchronisation,
# stats and autoscaling actors, Ray's idle pool, and the data plane's two tasks (or two samplers).
FIXED_PROCESSES = 14

SCRIPT = textwrap.dedent('''
    import json, os, sys, threading, time
    from pathlib import Path
    import numpy as np, pandas as pd, ray
    from cadasg_dist.config import CADASGConfig, ContextConfig, ModelConfig, TrainConfig
    from cadasg_dist.distributed.sampling import sample_on_ray
    from cadasg_dist.distributed.trainer import fit_distributed
    from cadasg_dist.synthesizer import CADASG

    tmp = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    n = 24_000
    region = rng.choice(["north", "south", "east", "west", "centre", "islands"], size=n, p=[.3, .2, .2, .15, .1, .05])
    x = rng.normal(size=n) + (region == "west")
    df = pd.DataFrame({"region": region, "x": x, "y": x + rng.normal(size=n),
                       "label": np.where(x + rng.normal(size=n) > 0, "yes", "no")})
    parts = tmp / "parts"
    parts.mkdir()
    for i in range(48):  # 48 parts: 48 read tasks without a cap
        df.iloc[i * 500:(i + 1) * 500].to_parquet(parts / f"part-{i:03d}.parquet", index=False)

    ray.init(address="local", num_cpus=2, object_store_memory=96 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid

    def children():
        count = 0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == raylet:
                    count += 1
        return count

    peak = {"fit": 0, "sample": 0}
    phase = ["fit"]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[phase[0]] = max(peak[phase[0]], children())
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    try:
        cfg = CADASGConfig(target="label", context=ContextConfig(columns=("region",)),
                           model=ModelConfig(latent_dim=4, hidden=(32,), critic_hidden=(32,), utility_hidden=(16,)),
                           train=TrainConfig(epochs=1, batch_size=2000, seed=0))
        cfg = cfg.replace(**{"distributed.num_workers": 2, "distributed.storage_path": str(tmp / "ray"),
                             "distributed.max_failures": 0})
        model = fit_distributed(CADASG(cfg), parts)
        model.save(tmp / "model")
        rows = [w["rows"] for w in model.meta["distributed"]["worker_fingerprints"]]
        phase[0] = "sample"
        paths = sample_on_ray(tmp / "model", 30_000, tmp / "out", num_workers=2, seed=3, conditions=None)
        sampled = pd.concat([pd.read_parquet(p) for p in paths])
        west = sample_on_ray(tmp / "model", 2_000, tmp / "west", num_workers=2, seed=3, conditions={"region": "west"})
        west_regions = sorted(set(pd.concat([pd.read_parquet(p) for p in west])["region"]))
        print("RESULT " + json.dumps({"peak": peak, "rows": rows, "sampled": len(sampled), "parts": len(paths),
                                      "regions": sorted(set(sampled["region"])), "west": west_regions,
                                      "leftover": sorted(p.name for p in (tmp / "out").iterdir() if p.is_dir())}))
    finally:
        done.set()
        ray.shutdown()
''')


def test_data_plane_keeps_ray_worker_processes_bounded(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=480)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert sum(result["rows"]) == 24_000
    assert 0 < result["peak"]["fit"] <= 2 + FIXED_PROCESSES, result["peak"]
    assert 0 < result["peak"]["sample"] <= 2 + FIXED_PROCESSES, result["peak"]
    assert result["sampled"] == 30_000 and result["parts"] >= 2
    assert len(result["regions"]) == 6
    assert result["west"] == ["west"]
    assert result["leftover"] == []  # the staging directory is gone
