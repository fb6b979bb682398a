"""A 2-worker run on a multi-node cluster (``ray.cluster_utils.Cluster``: a head and two worker nodes).

The cluster is started in a subprocess: the test session's own Ray (``ray_session``) may already be
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
    import numpy as np, pandas as pd, ray
    from ray.cluster_utils import Cluster
    from cadasg_dist.config import CADASGConfig, ContextConfig, ModelConfig, TrainConfig
    from cadasg_dist.distributed.trainer import fit_distributed
    from cadasg_dist.synthesizer import CADASG

    storage = sys.argv[1]
    # The head takes no training work, so each worker must land on one of the two worker nodes.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        rng = np.random.default_rng(0)
        n = 600
        df = pd.DataFrame({"group": rng.choice(["a", "b", "c"], size=n), "x": rng.normal(size=n)})
        df["label"] = np.where(df["x"] + rng.normal(size=n) > 0, "yes", "no")
        cfg = CADASGConfig(target="label", context=ContextConfig(columns=("group",)),
                           model=ModelConfig(latent_dim=4, hidden=(16,), critic_hidden=(16,), utility_hidden=(8,)),
                           train=TrainConfig(epochs=1, batch_size=100, seed=0))
        cfg = cfg.replace(**{"distributed.num_workers": 2, "distributed.storage_path": storage})
        model = fit_distributed(CADASG(cfg), df)
        meta = model.meta["distributed"]
        node_ids = sorted(n.node_id for n in nodes)
        print("RESULT " + json.dumps({"nodes": sorted(w["node"] for w in meta["worker_fingerprints"]),
                                      "worker_nodes": node_ids, "epochs": len(model.history),
                                      "rows": len(model.sample(50))}))
    finally:
        ray.shutdown()
        cluster.shutdown()
''')


def test_two_workers_on_two_nodes_of_a_local_cluster(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "ray")], capture_output=True, text=True,
                          timeout=420)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    # One worker per worker node: the run crossed nodes (gloo over TCP between raylets).
    assert result["nodes"] == result["worker_nodes"]
    assert result["epochs"] == 1 and result["rows"] == 50
