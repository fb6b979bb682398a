"""cluster/: the configs pass ``cluster/check.py`` (Ray's launcher schema for the AWS file; the
RayJob/RayCluster fields KubeRay defines, stated in ``cluster/schema.py``, for the manifests) and hold
what the cluster guide promises; the checker itself refuses each unsafe or misspelt variant."""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def _load(name: str):
    sys.path.insert(0, str(CLUSTER))
    try:
        spec = importlib.util.spec_from_file_location(f"cluster_{name}", CLUSTER / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(CLUSTER))


check = _load("check")


def _aws() -> dict:
    return yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())


def _filled(raw: dict) -> dict:
    """The AWS file as a user fills it: a private subnet, their own group, their bucket."""
    text = yaml.safe_dump(raw).replace("subnet-REPLACE-ME", "subnet-0a1b2c3d").replace(
        "sg-REPLACE-ME", "sg-0a1b2c3d").replace("REPLACE-ME-bucket", "hospital-tables")
    return yaml.safe_load(text)


def test_shipped_aws_config_fails_until_subnet_group_and_table_are_filled():
    problems = check.check_launcher(_aws())
    unset = [p for p in problems if "REPLACE-ME" in p]
    assert len(unset) == len(problems) == 5  # 2 node types x (subnet, group) + the table's URI
    assert check.check_launcher(_filled(_aws())) == []


def test_filled_aws_config_passes_rays_own_validator_and_keeps_its_promises():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(_filled(_aws()))  # what `ray up` does first: defaults merged, no cloud call
    validate_config(config)  # ray/autoscaler/ray-schema.json, then Ray's own cross-field checks
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] == 1 and workers["max_workers"] == config["max_workers"] == 8
    assert "--include-dashboard=false" in " ".join(config["head_start_ray_commands"])


@pytest.mark.parametrize("breakage, words", [
    (lambda c: c["available_node_types"]["head"]["node_config"].pop("SecurityGroupIds"), "0.0.0.0/0"),
    (lambda c: c["available_node_types"]["gpu_worker"]["node_config"].pop("SubnetIds"), "SubnetIds"),
    (lambda c: c["provider"].update(use_internal_ips=False), "use_internal_ips"),
    (lambda c: c["provider"].update(security_group={"GroupName": "g", "IpPermissions": [
        {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}), "0.0.0.0/0"),
    (lambda c: c.update(worker_start_ray_commands=["ray start --address=$RAY_HEAD_IP:6379"]), "RAY_AUTH_MODE"),
    (lambda c: c.update(setup_commands=["pip install -e ~/cadasg"]), "/mnt/data/table"),
    (lambda c: c.update(max_workers="eight"), "schema"),
])
def test_aws_checker_refuses_each_unsafe_variant(breakage, words):
    config = _filled(_aws())
    breakage(config)
    problems = check.check_launcher(config)
    assert problems and any(words in p for p in problems), problems


def _kuberay() -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text()) if d]


def test_kuberay_manifests_match_the_crd_fields_and_keep_their_promises():
    docs = _kuberay()
    assert check.check_kuberay(docs) == []
    assert check.check_kuberay([d for d in yaml.safe_load_all((CLUSTER / "kuberay-pvc.yaml").read_text())]) == []
    job = next(d for d in docs if d["kind"] == "RayJob")
    spec = job["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == "2.55.1"  # token auth needs Ray >= 2.52
    assert "cadasg train" in spec["entrypoint"] and "--num-workers 2" in spec["entrypoint"]
    gpu = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert gpu["replicas"] == 2 and gpu["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] == "1"
    # the operator injects the token from the Secret; no hand-written token variables remain
    assert "RAY_AUTH_TOKEN" not in (CLUSTER / "kuberay-rayjob.yaml").read_text().split("apiVersion", 1)[1]


def _job(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "RayJob")


@pytest.mark.parametrize("breakage, words", [
    (lambda d: _job(d)["spec"]["rayClusterSpec"].pop("authOptions"), "authOptions"),
    (lambda d: _job(d)["spec"]["rayClusterSpec"]["authOptions"].update(mode="tokens"), "not one of"),
    (lambda d: _job(d)["spec"]["rayClusterSpec"].update(workerGroupSpec=[]), "not a field"),
    (lambda d: _job(d)["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas="2"), "expected int"),
    (lambda d: _job(d)["spec"]["rayClusterSpec"]["headGroupSpec"].update(serviceType="LoadBalancer"), "ClusterIP"),
    (lambda d: _job(d)["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"].pop("volumes"),
     "data volume"),
    (lambda d: d[1]["spec"]["ingress"].pop(1), "operator"),
    (lambda d: d.pop(1), "NetworkPolicy"),
])
def test_kuberay_checker_refuses_each_unsafe_or_misspelt_variant(breakage, words):
    docs = copy.deepcopy(_kuberay())
    breakage(docs)
    problems = check.check_kuberay(docs)
    assert problems and any(words in p for p in problems), problems


def test_checker_cli_names_every_problem_and_exits_2():
    run = subprocess.run([sys.executable, str(CLUSTER / "check.py"), str(CLUSTER / "aws-gpu.yaml"),
                          str(CLUSTER / "kuberay-rayjob.yaml")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith(str(CLUSTER))]
    assert len(lines) == 5 and all("aws-gpu.yaml" in ln and "REPLACE-ME" in ln for ln in lines)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_local_three_node_script_parses_and_starts_a_head_and_two_workers():
    script = CLUSTER / "local-3-nodes.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "launch head --head" in text and 'for i in 1 2; do' in text
    assert "RAY_AUTH_MODE=token" in text and "ray stop" not in text.replace("never `ray stop`", "")
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "start|status|stop" in usage.stderr


def test_guides_document_every_config_and_the_walkthrough():
    guide = (CLUSTER.parent / "docs" / "guides" / "cluster.md").read_text()
    for name in ("aws-gpu.yaml", "kuberay-rayjob.yaml", "local-3-nodes.sh", "RAY_AUTH_MODE=token", "private",
                 "cluster/check.py"):
        assert name in guide
    walkthrough = (CLUSTER / "README.md").read_text()
    for step in ("helm install", "kubectl create secret", "kuberay-pvc.yaml", "kubectl cp",
                 "kuberay-rayjob.yaml", "SUCCEEDED", "cluster/check.py"):
        assert step in walkthrough
