"""Check the cluster configs before they reach a cloud: ``python cluster/check.py FILE...``.

* A Ray cluster launcher file (``provider:`` at the top) goes through Ray's own ``prepare_config`` and
  ``validate_config`` (what ``ray up`` runs first, no cloud call), then the rules this project's
  guide promises: every node type names its subnet and security group (left out, the launcher makes
  a group with SSH open to 0.0.0.0/0), no ``REPLACE-ME`` placeholder is left, internal IPs only,
  token authentication on every ``ray start``, the table synced to ``/mnt/data/table/``.
* A Kubernetes manifest (``apiVersion:``/``kind:`` documents) is checked against ``schema.KUBERAY``:
  the fields and types KubeRay's ``ray.io/v1`` RayJob and RayCluster types define (an API server
  with structural schemas drops unknown fields silently, so a misspelt field would be a setting
  that never applies), then the rules: token auth through ``authOptions``, a NetworkPolicy that
  admits this run's pods and the operator's dashboard polling, the data volume on every Ray pod,
  no LoadBalancer.

Every problem is printed, one line each, then the exit status is 2; 0 when the file is clean.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from schema import KUBERAY, NETWORK_POLICY, PVC, check_fields  # noqa: E402

PLACEHOLDER = "REPLACE-ME"
OPERATOR_LABEL = {"app.kubernetes.io/name": "kuberay-operator"}
DASHBOARD_PORT = 8265


def _placeholders(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _placeholders(v, f"{path}.{k}" if path else str(k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _placeholders(v, f"{path}[{i}]")]
    return [path] if isinstance(node, str) and PLACEHOLDER in node else []


def check_launcher(raw: dict) -> list[str]:
    """Problems of a Ray cluster launcher config (an empty list when it may go to ``ray up``)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        config = prepare_config(raw)
        validate_config(config)
    except Exception as exc:  # noqa: BLE001 - Ray raises several types; each is one line for the user
        return [f"Ray's launcher schema rejects the file: {str(exc).splitlines()[0]}"]
    problems = [f"{path} is unset (still {PLACEHOLDER}): fill it before `ray up`" for path in _placeholders(raw)]
    for name, node in config["available_node_types"].items():
        node_config = node.get("node_config", {})
        for key in ("SubnetIds", "SecurityGroupIds"):
            if not node_config.get(key):
                problems.append(f"available_node_types.{name}.node_config.{key} is missing: without it the "
                                "launcher picks any subnet / makes a group with SSH open to 0.0.0.0/0")
    if config["provider"].get("use_internal_ips") is not True:
        problems.append("provider.use_internal_ips must be True: nodes stay off the public internet")
    for rule in config["provider"].get("security_group", {}).get("IpPermissions", []):
        if any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", [])):
            problems.append("provider.security_group admits 0.0.0.0/0: admit your VPN/bastion range only")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for cmd in config[key]:
            if "ray start" in cmd and "RAY_AUTH_MODE=token" not in cmd:
                problems.append(f"{key}: `{cmd.strip()[:60]}` starts Ray without RAY_AUTH_MODE=token")
    if not any("/mnt/data/table" in cmd for cmd in config.get("setup_commands", [])):
        problems.append("setup_commands never puts the table at /mnt/data/table/, the path the run reads")
    return problems


def _ray_pods(job: dict) -> dict[str, dict]:
    spec = job["spec"]["rayClusterSpec"]
    pods = {"headGroupSpec": spec["headGroupSpec"]["template"]}
    pods.update({f"workerGroupSpecs.{g['groupName']}": g["template"] for g in spec.get("workerGroupSpecs", [])})
    return pods


def _admits(policy: dict, labels: dict, port: int | None) -> bool:
    """Whether an ingress rule of ``policy`` admits pods with ``labels`` (any namespace) on ``port``."""
    for rule in policy["spec"].get("ingress", []):
        ports = [p.get("port") for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        for peer in rule.get("from", []):
            want = peer.get("podSelector", {}).get("matchLabels", {})
            if all(labels.get(k) == v for k, v in want.items()) and ("namespaceSelector" in peer) == (
                    labels is OPERATOR_LABEL):
                return True
    return False


def check_kuberay(docs: list[dict]) -> list[str]:
    """Problems of the KubeRay manifests (RayJob, NetworkPolicy, PersistentVolumeClaim)."""
    schemas = {"RayJob": KUBERAY, "NetworkPolicy": NETWORK_POLICY, "PersistentVolumeClaim": PVC}
    problems: list[str] = []
    for doc in docs:
        kind = doc.get("kind")
        if kind not in schemas:
            problems.append(f"{kind}: not a kind this project ships (RayJob, NetworkPolicy, PersistentVolumeClaim)")
            continue
        problems += [f"{kind}: {p}" for p in check_fields(doc, schemas[kind])]
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    if problems or not jobs:  # a file of only a claim or a policy has nothing more to check
        return problems
    job = jobs[0]
    auth = job["spec"]["rayClusterSpec"].get("authOptions", {})
    if auth.get("mode") != "token" or not auth.get("secretName"):
        problems.append("RayJob: rayClusterSpec.authOptions must be "
                        "{mode: token, secretName: <a Secret with key auth_token>}")
    if job["spec"]["rayClusterSpec"]["headGroupSpec"].get("serviceType") in ("LoadBalancer", "NodePort"):
        problems.append("RayJob: the head's serviceType exposes it; keep ClusterIP and use kubectl port-forward")
    pods = _ray_pods(job)
    labels = [pod.get("metadata", {}).get("labels", {}) for pod in pods.values()]
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    if not policies:
        problems.append("no NetworkPolicy: every pod in the namespace could reach the Ray head")
    for policy in policies:
        if not all(_admits(policy, lab, 6379) for lab in labels):
            problems.append("NetworkPolicy: does not admit the run's own pods to each other")
        if not _admits(policy, OPERATOR_LABEL, DASHBOARD_PORT):
            problems.append(f"NetworkPolicy: does not admit the KubeRay operator to the dashboard port "
                            f"{DASHBOARD_PORT}; the RayJob would never see its job finish")
    for where, pod in pods.items():
        claims = [v for v in pod["spec"].get("volumes", []) if "persistentVolumeClaim" in v]
        mounts = [m["name"] for c in pod["spec"]["containers"] for m in c.get("volumeMounts", [])]
        if not claims or any(v["name"] not in mounts for v in claims):
            problems.append(f"RayJob: {where} does not mount the data volume")
    return problems


def check_file(path: Path) -> list[str]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    if len(docs) == 1 and "provider" in docs[0]:
        return check_launcher(docs[0])
    return check_kuberay(docs)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python cluster/check.py FILE.yaml [FILE.yaml ...]", file=sys.stderr)
        return 2
    status = 0
    for name in argv:
        problems = check_file(Path(name))
        for problem in problems:
            print(f"{name}: {problem}", file=sys.stderr)
        status = status or (2 if problems else 0)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
