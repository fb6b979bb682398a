"""The fields and types of the Kubernetes objects ``cluster/`` ships, stated for ``check.py``.

Written from KubeRay's ``ray.io/v1`` Go types (``RayJobSpec``, ``RayClusterSpec``, ``HeadGroupSpec``,
``WorkerGroupSpec``, ``AuthOptions``; operator 1.6+) and the core ``v1`` / ``networking.k8s.io/v1``
types. KubeRay's own objects are closed: a key they do not define is an error (the API server
would drop it silently). Kubernetes' core objects are large, so only the fields these manifests use
are typed and other keys are allowed.

A spec is one of: a type name (``"str"``, ``"int"``, ``"num"``, ``"bool"``, ``"quantity"``: a string or
a number, as Kubernetes quantities are), ``("enum", values)``, ``("map", spec)`` (string keys),
``[spec]`` (a list of items), or ``Obj(fields, required, closed)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Obj:
    fields: dict[str, Any]
    required: tuple[str, ...] = ()
    closed: bool = True


STR_MAP = ("map", "str")
META = Obj({"name": "str", "namespace": "str", "labels": STR_MAP, "annotations": STR_MAP}, closed=False)
RESOURCES = Obj({"requests": ("map", "quantity"), "limits": ("map", "quantity")})
SECRET_REF = Obj({"name": "str", "key": "str", "optional": "bool"}, ("key",))
ENV = Obj({"name": "str", "value": "str", "valueFrom": Obj({"secretKeyRef": SECRET_REF}, closed=False)}, ("name",))
CONTAINER = Obj({
    "name": "str", "image": "str", "command": ["str"], "args": ["str"], "env": [ENV],
    "ports": [Obj({"containerPort": "int", "name": "str", "protocol": ("enum", ("TCP", "UDP", "SCTP"))},
                  ("containerPort",))],
    "resources": RESOURCES,
    "volumeMounts": [Obj({"name": "str", "mountPath": "str", "readOnly": "bool", "subPath": "str"},
                         ("name", "mountPath"))],
}, ("name",), closed=False)
VOLUME = Obj({"name": "str", "persistentVolumeClaim": Obj({"claimName": "str", "readOnly": "bool"}, ("claimName",))},
             ("name",), closed=False)
POD_TEMPLATE = Obj({
    "metadata": META,
    "spec": Obj({"containers": [CONTAINER], "volumes": [VOLUME], "serviceAccountName": "str",
                 "restartPolicy": ("enum", ("Always", "OnFailure", "Never")), "nodeSelector": STR_MAP},
                ("containers",), closed=False),
})

AUTH_OPTIONS = Obj({"mode": ("enum", ("disabled", "token")), "secretName": "str", "enableK8sTokenAuth": "bool"})
HEAD_GROUP = Obj({
    "template": POD_TEMPLATE, "headService": Obj({}, closed=False), "enableIngress": "bool",
    "ingressOptions": Obj({}, closed=False), "resources": STR_MAP, "labels": STR_MAP,
    "rayStartParams": STR_MAP, "serviceType": ("enum", ("ClusterIP", "NodePort", "LoadBalancer")),
}, ("template",))
WORKER_GROUP = Obj({
    "suspend": "bool", "groupName": "str", "replicas": "int", "minReplicas": "int", "maxReplicas": "int",
    "idleTimeoutSeconds": "int", "priority": "int", "resources": STR_MAP, "labels": STR_MAP,
    "rayStartParams": STR_MAP, "template": POD_TEMPLATE, "scaleStrategy": Obj({"workersToDelete": ["str"]}),
    "numOfHosts": "int",
}, ("groupName", "template"))
RAY_CLUSTER_SPEC = Obj({
    "upgradeStrategy": Obj({"type": ("enum", ("Recreate", "None"))}), "authOptions": AUTH_OPTIONS,
    "suspend": "bool", "managedBy": "str", "autoscalerOptions": Obj({}, closed=False),
    "headServiceAnnotations": STR_MAP, "enableInTreeAutoscaling": "bool",
    "gcsFaultToleranceOptions": Obj({}, closed=False), "networkPolicy": Obj({}, closed=False),
    "tlsOptions": Obj({"enabled": "bool"}), "headGroupSpec": HEAD_GROUP, "rayVersion": "str",
    "workerGroupSpecs": [WORKER_GROUP],
}, ("headGroupSpec",))
RAY_JOB_SPEC = Obj({
    "activeDeadlineSeconds": "int", "backoffLimit": "int", "rayClusterSpec": RAY_CLUSTER_SPEC,
    "submitterPodTemplate": POD_TEMPLATE, "metadata": STR_MAP, "clusterSelector": STR_MAP,
    "submitterConfig": Obj({"backoffLimit": "int"}), "managedBy": "str", "deletionStrategy": Obj({}, closed=False),
    "entrypoint": "str", "runtimeEnvYAML": "str", "jobId": "str",
    "submissionMode": ("enum", ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")),
    "entrypointResources": "str", "entrypointNumCpus": "num", "entrypointNumGpus": "num",
    "ttlSecondsAfterFinished": "int", "preRunningDeadlineSeconds": "int", "shutdownAfterJobFinishes": "bool",
    "suspend": "bool",
})
KUBERAY = Obj({"apiVersion": ("enum", ("ray.io/v1",)), "kind": ("enum", ("RayJob",)), "metadata": META,
               "spec": RAY_JOB_SPEC}, ("apiVersion", "kind", "metadata", "spec"))

PEER = Obj({"podSelector": Obj({"matchLabels": STR_MAP}, closed=False),
            "namespaceSelector": Obj({"matchLabels": STR_MAP}, closed=False),
            "ipBlock": Obj({"cidr": "str", "except": ["str"]})})
NETWORK_POLICY = Obj({
    "apiVersion": ("enum", ("networking.k8s.io/v1",)), "kind": ("enum", ("NetworkPolicy",)), "metadata": META,
    "spec": Obj({"podSelector": Obj({"matchLabels": STR_MAP}, closed=False),
                 "policyTypes": [("enum", ("Ingress", "Egress"))],
                 "ingress": [Obj({"from": [PEER], "ports": [Obj({"protocol": ("enum", ("TCP", "UDP", "SCTP")),
                                                                  "port": "quantity", "endPort": "int"})]})],
                 "egress": [Obj({}, closed=False)]}, ("podSelector",)),
}, ("apiVersion", "kind", "metadata", "spec"))
PVC = Obj({
    "apiVersion": ("enum", ("v1",)), "kind": ("enum", ("PersistentVolumeClaim",)), "metadata": META,
    "spec": Obj({"accessModes": [("enum", ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"))],
                 "resources": RESOURCES, "storageClassName": "str", "volumeMode": "str"}, ("accessModes",)),
}, ("apiVersion", "kind", "metadata", "spec"))

_SCALARS = {"str": str, "int": int, "num": (int, float), "bool": bool, "quantity": (str, int, float)}


def check_fields(value: Any, spec: Any, path: str = "") -> list[str]:
    """Every place ``value`` departs from ``spec``, as ``path: problem`` lines."""
    where = path or "(top)"
    if isinstance(spec, str):
        ok = isinstance(value, _SCALARS[spec]) and not (spec != "bool" and isinstance(value, bool))
        return [] if ok else [f"{where}: expected {spec}, got {type(value).__name__}"]
    if isinstance(spec, tuple) and spec[0] == "enum":
        return [] if value in spec[1] else [f"{where}: {value!r} is not one of {list(spec[1])}"]
    if isinstance(spec, tuple) and spec[0] == "map":
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping"]
        return [p for k, v in value.items() for p in check_fields(v, spec[1], f"{path}.{k}")]
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [p for i, v in enumerate(value) for p in check_fields(v, spec[0], f"{path}[{i}]")]
    if not isinstance(value, dict):
        return [f"{where}: expected a mapping"]
    problems = [f"{path}.{k}".lstrip(".") + ": required" for k in spec.required if k not in value]
    for key, item in value.items():
        sub = f"{path}.{key}".lstrip(".")
        if key in spec.fields:
            problems += check_fields(item, spec.fields[key], sub)
        elif spec.closed:
            problems.append(f"{sub}: not a field of this object (a typo would be dropped silently)")
    return problems
