"""Validation and policy checks for rendered Kubernetes objects (the chart, the kustomize overlays).

No API server can run here, so objects are validated against the real schemas: core kinds with
kubernetes-validate (Kubernetes' own OpenAPI schemas, strict: unknown fields fail), custom resources with
jsonschema against the CRDs' `openAPIV3Schema` (copied into tests/data/crds from the projects' releases).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

KUBE_VERSION = "1.31.0"  # the oldest minor the chart's kubeVersion and the CRDs are checked against
CRDS = Path(__file__).parent / "data" / "crds"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)
ENV_REFERENCE = re.compile(r"^[^$]*(\$\([A-Z_][A-Z0-9_]*\)[^$]*)+$")  # `$(VAR)` expands another env var


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    out = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            out[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return out


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def validate(obj: dict) -> None:
    """Raise when `obj` does not validate against its kind's schema (CRD or core)."""
    schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
    if schema is not None:
        jsonschema.validate(obj, schema)
        return
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod-spec-like dict) for every place `obj` defines pods' containers."""
    kind, spec = obj["kind"], obj.get("spec", {})
    name = f"{kind}/{obj['metadata']['name']}"
    if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        yield name, spec["template"]["spec"]
    elif kind == "PyTorchJob":
        for role, replica in spec["pytorchReplicaSpecs"].items():
            yield f"{name}/{role}", replica["template"]["spec"]
    elif kind == "ServingRuntime":
        yield name, spec


def _security_violations(where: str, pod: dict, container: dict) -> list[str]:
    pod_sc, sc = pod.get("securityContext") or {}, container.get("securityContext") or {}
    who = f"{where}/{container['name']}"
    out = []
    if not (sc.get("runAsNonRoot") or (pod_sc.get("runAsNonRoot") and sc.get("runAsNonRoot") is not False)):
        out.append(f"{who}: runAsNonRoot is not set")
    if sc.get("runAsUser") == 0 or pod_sc.get("runAsUser") == 0:
        out.append(f"{who}: runs as UID 0")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{who}: allowPrivilegeEscalation is not false")
    if sc.get("privileged"):
        out.append(f"{who}: privileged")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        out.append(f"{who}: capabilities are not all dropped")
    if (sc.get("capabilities") or {}).get("add"):
        out.append(f"{who}: adds capabilities")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        out.append(f"{who}: seccomp profile is {seccomp!r}, not RuntimeDefault")
    if sc.get("readOnlyRootFilesystem") is not True:
        out.append(f"{who}: root filesystem is writable")
    return out


def _resource_violations(who: str, resources: dict | None) -> list[str]:
    out = []
    for section in ("requests", "limits"):
        have = (resources or {}).get(section) or {}
        out += [f"{who}: no {section}.{k}" for k in ("cpu", "memory") if k not in have]
    return out


def _env_violations(who: str, env: list | None) -> list[str]:
    out = []
    for var in env or []:
        value = var.get("value")
        if value is not None and SECRET_NAME.search(var["name"]) and not ENV_REFERENCE.match(str(value)):
            out.append(f"{who}: env {var['name']} holds a plaintext value")
    return out


def policy_violations(objects: list[dict]) -> list[str]:
    """Every container: non-root, no escalation, capabilities dropped, seccomp RuntimeDefault, read-only
    root, requests and limits; no credential as a plain env value anywhere. Empty when all pass."""
    out = []
    for obj in objects:
        for where, pod in pod_specs(obj):
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                who = f"{where}/{container['name']}"
                out += _security_violations(where, pod, container)
                out += _resource_violations(who, container.get("resources"))
                out += _env_violations(who, container.get("env"))
        if obj["kind"] == "InferenceService":  # its model container is merged into the runtime's container
            predictor = obj["spec"]["predictor"]
            who = f"InferenceService/{obj['metadata']['name']}"
            if not (predictor.get("securityContext") or {}).get("runAsNonRoot"):
                out.append(f"{who}: predictor pods may run as root")
            out += _resource_violations(who, predictor["model"].get("resources"))
            out += _env_violations(who, predictor["model"].get("env"))
    return out
