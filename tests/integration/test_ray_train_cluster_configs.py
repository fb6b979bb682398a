"""cluster/: the launcher config passes Ray's own schema; the KubeRay manifests and the local script
parse and hold what the cluster guide (docs/guides/cluster.md) promises (token authentication
everywhere, no public endpoint)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def test_aws_launcher_config_passes_rays_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    config = prepare_config(raw)  # what `ray up` does first: defaults merged, no cloud call
    validate_config(config)  # ray/autoscaler/ray-schema.json, then Ray's own cross-field checks
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] == 1 and workers["max_workers"] == config["max_workers"] == 8
    assert config["provider"]["use_internal_ips"] is True
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in cmd for cmd in starts if cmd.strip().split()[:2] != ["ray", "stop"])
    assert "--include-dashboard=false" in " ".join(config["head_start_ray_commands"])


def _documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]


def _containers(job: dict) -> list[dict]:
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    pods.append(job["spec"]["submitterPodTemplate"])
    return [c for pod in pods for c in pod["spec"]["containers"]]


def test_kuberay_rayjob_is_well_formed_and_authenticated():
    docs = _documents("kuberay-rayjob.yaml")
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == "2.55.1"
    assert "cadasg train" in spec["entrypoint"] and "--num-workers 2" in spec["entrypoint"]
    assert "--address auto" in spec["entrypoint"]
    gpu = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert gpu["replicas"] == 2 and gpu["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] == "1"
    for container in _containers(job):  # every Ray process and the submitter check the token
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "cadasg-ray-token"
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app": "cadasg-ray"}
    claim = _documents("kuberay-pvc.yaml")[0]
    assert claim["kind"] == "PersistentVolumeClaim" and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert not any(d.get("kind") == "Service" and d["spec"].get("type") == "LoadBalancer" for d in docs)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_local_three_node_script_parses_and_starts_a_head_and_two_workers():
    script = CLUSTER / "local-3-nodes.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "launch head --head" in text and 'for i in 1 2; do' in text
    assert "RAY_AUTH_MODE=token" in text and "ray stop" not in text.replace("never `ray stop`", "")
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "start|status|stop" in usage.stderr


def test_readme_documents_every_config_and_the_traffic_protection():
    readme = (CLUSTER.parent / "docs" / "guides" / "cluster.md").read_text()
    for name in ("aws-gpu.yaml", "kuberay-rayjob.yaml", "local-3-nodes.sh", "RAY_AUTH_MODE=token", "private"):
        assert name in readme
