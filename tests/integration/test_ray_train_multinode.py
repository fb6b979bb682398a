"""The real 2-worker run: two worker nodes and a head (``ray.cluster_utils.Cluster``), a small table
read from Parquet parts, one worker per node. Checks that gradients kept the workers in sync and
that the merged cache equals the single-process cache of the same table.

The cluster runs in a subprocess: the test session's own Ray (``ray_session``) may already be
running in this process, and one process can be connected to only one Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from types import SimpleNamespace
    import numpy as np, pandas as pd, ray, torch
    from ray.cluster_utils import Cluster
    from cadasg_dist.config import CADASGConfig, ContextConfig, ModelConfig, TrainConfig
    from cadasg_dist.context import ContextCache
    from cadasg_dist.distributed.trainer import fit_distributed
    from cadasg_dist.synthesizer import CADASG
    from cadasg_dist.train.fit import final_cache_pass

    tmp = Path(sys.argv[1])
    # Continuous columns without ties (their encoding has no randomness), contexts of 500/200/100
    # rows (the largest must be split across the two workers) and a binary target.
    rng = np.random.default_rng(0)
    n = 800
    group = np.repeat(["big", "mid", "small"], [500, 200, 100])[rng.permutation(n)]
    x = rng.normal(size=n) + (group == "mid")
    df = pd.DataFrame({"group": group, "x": x, "y": 2 * x + rng.normal(size=n),
                       "label": np.where(x + rng.normal(scale=0.5, size=n) > 0.3, "yes", "no")})
    parts = tmp / "parts"
    parts.mkdir()
    for i, start in enumerate(range(0, n, 300)):
        df.iloc[start:start + 300].to_parquet(parts / f"part-{i}.parquet", index=False)

    # The head takes no training work, so each worker must land on one of the two worker nodes.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        cfg = CADASGConfig(target="label", context=ContextConfig(columns=("group",)),
                           model=ModelConfig(latent_dim=4, hidden=(32,), critic_hidden=(32,), utility_hidden=(16,)),
                           train=TrainConfig(epochs=2, batch_size=128, seed=0))
        cfg = cfg.replace(**{"distributed.num_workers": 2, "distributed.merge_every": 3,
                             "distributed.storage_path": str(tmp / "ray")})
        plans = []
        model = fit_distributed(CADASG(cfg), parts, on_plan=plans.append)
        meta = model.meta["distributed"]
        # The single-process final pass over the whole table with the trained networks.
        xs = torch.from_numpy(model.transformer.encode(df, seed=0).astype(np.float32))
        cs = torch.from_numpy(model.extractor.ids(df))
        run_cfg = model.config  # resolved: the profile's cache and model sizes
        single = ContextCache(model.cache.n_contexts, xs.shape[1], run_cfg.model.latent_dim, run_cfg.cache,
                              model.cache.strata)
        final_cache_pass(run_cfg, SimpleNamespace(nets=model.nets, generator=torch.Generator()), single, xs, cs)
        gap = max(float((getattr(model.cache.stats, k) - v).abs().max() / (v.abs().max() + 1e-12))
                  for k, v in single.stats.state_dict().items())
        rows = model.sample(300, seed=0)
        print("RESULT " + json.dumps({
            "nodes": sorted(w["node"] for w in meta["worker_fingerprints"]),
            "worker_nodes": sorted(nd.node_id for nd in nodes),
            "params": [w["params"] for w in meta["worker_fingerprints"]],
            "rows_per_worker": [w["rows"] for w in meta["worker_fingerprints"]],
            "bytes_per_step": meta["bytes_per_step"], "plan": plans[0], "epochs": len(model.history),
            "cache_relative_gap": gap, "groups": sorted(set(rows["group"]))}))
    finally:
        ray.shutdown()
        cluster.shutdown()
''')


def test_two_workers_on_two_nodes_stay_in_sync_and_merge_caches_exactly(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=420)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    r = json.loads(lines[-1][len("RESULT "):])
    # One worker per worker node: the run crossed nodes (gloo over TCP between raylets).
    assert r["nodes"] == r["worker_nodes"]
    # The plan split "big" (500 rows > the even share of 400) and kept the others whole; routing by
    # row hash gave every row to exactly one worker.
    assert "split group=big (500 rows)" in r["plan"] and sum(r["rows_per_worker"]) == 800
    assert r["epochs"] == 2 and r["groups"] == ["big", "mid", "small"]
    # Gradients were all-reduced before every optimizer step: both workers hold the same weights.
    assert r["params"][0] == pytest.approx(r["params"][1], rel=1e-9)
    assert r["bytes_per_step"]["gradients"] > 0 and r["bytes_per_step"]["cache"] > 0
    # The merged final cache (no noise here) equals the single-process cache of the whole table.
    assert r["cache_relative_gap"] < 1e-6
