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
            model_sc = predictor["model"].get("securityContext") or {}  # Serverless: container-level only
            if not (
                (predictor.get("securityContext") or {}).get("runAsNonRoot") or model_sc.get("runAsNonRoot")
            ):
                out.append(f"{who}: predictor pods may run as root")
            out += _resource_violations(who, predictor["model"].get("resources"))
            out += _env_violations(who, predictor["model"].get("env"))
    return out


# --- Knative Serving (KServe's Serverless mode) -----------------------------------------------------------
# In Serverless mode KServe turns an InferenceService (with its ServingRuntime merged in) into a Knative
# Service, whose webhook rejects every pod or container field its feature flags leave Disabled. No Knative
# webhook runs here, so this is a port of its rules at knative/serving knative-v1.15.2 (what KServe 0.15 and
# 0.16's hack/quick_install.sh install): the defaults are parsed from tests/data/knative/features.go, the
# rules below from pkg/apis/serving/fieldmask.go and k8s_validation.go.

KNATIVE = Path(__file__).parent / "data" / "knative"
K8S_SCHEMAS = (
    Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBE_VERSION}-local-strict"
)

# fieldmask.go PodSpecMask: always allowed (automountServiceAccountToken only as false) ...
KNATIVE_POD_FIELDS = {
    "serviceAccountName",
    "containers",
    "volumes",
    "imagePullSecrets",
    "enableServiceLinks",
    "automountServiceAccountToken",
}
# ... and allowed only when the flag (config-features key) is not Disabled
KNATIVE_POD_FLAGS = {
    "affinity": "kubernetes.podspec-affinity",
    "topologySpreadConstraints": "kubernetes.podspec-topologyspreadconstraints",
    "hostAliases": "kubernetes.podspec-hostaliases",
    "nodeSelector": "kubernetes.podspec-nodeselector",
    "runtimeClassName": "kubernetes.podspec-runtimeclassname",
    "tolerations": "kubernetes.podspec-tolerations",
    "securityContext": "kubernetes.podspec-securitycontext",
    "shareProcessNamespace": "kubernetes.podspec-shareprocessnamespace",
    "priorityClassName": "kubernetes.podspec-priorityclassname",
    "schedulerName": "kubernetes.podspec-schedulername",
    "initContainers": "kubernetes.podspec-init-containers",
    "dnsPolicy": "kubernetes.podspec-dnspolicy",
    "dnsConfig": "kubernetes.podspec-dnsconfig",
}
# ContainerMask, SecurityContextMask, ProbeMask, VolumeMountMask
KNATIVE_CONTAINER_FIELDS = {
    "name",
    "args",
    "command",
    "env",
    "workingDir",
    "envFrom",
    "image",
    "imagePullPolicy",
    "livenessProbe",
    "ports",
    "readinessProbe",
    "resources",
    "securityContext",
    "startupProbe",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "volumeMounts",
}
KNATIVE_SECURITY_FIELDS = {
    "capabilities",
    "readOnlyRootFilesystem",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "allowPrivilegeEscalation",
    "seccompProfile",
}
KNATIVE_PROBE_FIELDS = {
    "httpGet",
    "tcpSocket",
    "exec",
    "grpc",
    "initialDelaySeconds",
    "timeoutSeconds",
    "periodSeconds",
    "successThreshold",
    "failureThreshold",
}
KNATIVE_MOUNT_FIELDS = {"name", "readOnly", "mountPath", "subPath"}
# k8s_validation.go: reserved names; ports of queue-proxy (knative.dev/networking pkg/apis/networking
# BackendHTTPPort 8012, BackendHTTP2Port 8013, QueueAdminPort 8022, AutoscalingQueueMetricsPort 9090,
# UserQueueMetricsPort 9091) and knative.dev/pkg profiling.ProfilingPort 8008
KNATIVE_RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
KNATIVE_RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}
KNATIVE_RESERVED_PATHS = {"/", "/dev", "/dev/log"}
KNATIVE_PORT_NAMES = {"", "h2c", "http1"}


@cache
def knative_default_features() -> dict[str, str]:
    """config-features key -> Enabled / Disabled / Allowed, as Knative starts without a ConfigMap entry
    (`defaultFeaturesConfig()` of the copied features.go, each field mapped to its key by `asFlag`)."""
    src = (KNATIVE / "features.go").read_text()
    body = src[src.index("func defaultFeaturesConfig") :]
    body = body[: body.index("\n}\n")]
    defaults = dict(re.findall(r"^\s+(\w+):\s+(Enabled|Disabled|Allowed),$", body, re.M))
    keys = {field: key for key, field in re.findall(r'asFlag\("([^"]+)",\s*&nc\.(\w+)\)', src)}
    return {keys[field]: value for field, value in defaults.items()}


@cache
def _k8s_fields(kind: str) -> frozenset[str]:
    import json

    return frozenset(json.loads((K8S_SCHEMAS / f"{kind}-v1.json").read_text())["properties"])


def _knative_pod(who: str, spec: dict, on) -> list[str]:
    out = []
    for field in sorted(set(spec) & _k8s_fields("podspec")):
        if field in KNATIVE_POD_FIELDS:
            if field == "automountServiceAccountToken" and spec[field] is not False:
                out.append(f"{who}: automountServiceAccountToken may only be false")
        elif field == "securityContext" and not on("kubernetes.podspec-securitycontext"):
            # SecurePodDefaults lets seccompProfile through alone (PodSecurityContextMask)
            extra = set(spec[field]) - ({"seccompProfile"} if on("secure-pod-defaults") else set())
            if extra:
                out.append(
                    f"{who}: pod securityContext {sorted(extra)} needs kubernetes.podspec-securitycontext"
                )
        elif field in KNATIVE_POD_FLAGS:
            if not on(KNATIVE_POD_FLAGS[field]):
                out.append(f"{who}: pod {field} needs {KNATIVE_POD_FLAGS[field]}")
        else:
            out.append(f"{who}: pod {field} is not allowed by Knative")
    for volume in spec.get("volumes") or []:
        sources = set(volume) - {"name"}
        allowed = {"secret", "configMap", "projected"}
        allowed |= {"emptyDir"} if on("kubernetes.podspec-volumes-emptydir") else set()
        allowed |= {"persistentVolumeClaim"} if on("kubernetes.podspec-persistent-volume-claim") else set()
        if sources - allowed:
            out.append(f"{who}: volume {volume['name']} of kind {sorted(sources - allowed)} is not allowed")
        if (volume.get("emptyDir") or {}).get("medium", "") not in ("", "Memory"):
            out.append(f"{who}: volume {volume['name']}: emptyDir medium must be empty or Memory")
    return out


def _knative_container(who: str, c: dict, on) -> list[str]:
    unknown = (set(c) & _k8s_fields("container")) - KNATIVE_CONTAINER_FIELDS
    out = [f"{who}: container field {f} is not allowed" for f in sorted(unknown)]
    sc = c.get("securityContext") or {}
    out += [f"{who}: securityContext.{f} is not allowed" for f in sorted(set(sc) - KNATIVE_SECURITY_FIELDS)]
    add = (sc.get("capabilities") or {}).get("add")
    secure_default = on("secure-pod-defaults") and add == ["NET_BIND_SERVICE"]
    if add and not (on("kubernetes.containerspec-addcapabilities") or secure_default):
        out.append(f"{who}: capabilities.add needs kubernetes.containerspec-addcapabilities")
    for e in c.get("env") or []:
        if e["name"] in KNATIVE_RESERVED_ENV:
            out.append(f"{who}: env {e['name']} is reserved")
        refs = set(e.get("valueFrom") or {}) & {"fieldRef", "resourceFieldRef"}
        if refs and not on("kubernetes.podspec-fieldref"):  # EnvVarSourceMask
            out.append(f"{who}: env {e['name']} {sorted(refs)[0]} needs kubernetes.podspec-fieldref")
    ports = c.get("ports") or []
    for port in ports:
        if port.get("containerPort") in KNATIVE_RESERVED_PORTS:
            out.append(f"{who}: port {port['containerPort']} is reserved")
    if ports and ports[0].get("name", "") not in KNATIVE_PORT_NAMES:
        out.append(f"{who}: port name {ports[0]['name']!r} is not one of h2c, http1")
    if ports and ports[0].get("protocol", "TCP") != "TCP":
        out.append(f"{who}: port protocol must be TCP")
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(kind)
        if probe is None:
            continue
        out += [f"{who}: {kind}.{f} is not allowed" for f in sorted(set(probe) - KNATIVE_PROBE_FIELDS)]
        for action in ("httpGet", "tcpSocket"):
            port = (probe.get(action) or {}).get("port")
            if isinstance(port, str) and ports and port != ports[0].get("name"):
                out.append(f"{who}: {kind} port {port!r} must match the container port")
    for mount in c.get("volumeMounts") or []:
        out += [f"{who}: volumeMount.{f} is not allowed" for f in sorted(set(mount) - KNATIVE_MOUNT_FIELDS)]
        if mount["mountPath"].rstrip("/") in {p.rstrip("/") for p in KNATIVE_RESERVED_PATHS}:
            out.append(f"{who}: mountPath {mount['mountPath']} is reserved")
    return out


def knative_violations(objects: list[dict], enabled: tuple[str, ...] = ()) -> list[str]:
    """What Knative Serving's webhook would reject in the pods KServe's Serverless mode builds from these
    InferenceServices and ServingRuntimes, under Knative's default feature flags plus the `enabled`
    config-features keys. Empty when Knative accepts them."""
    flags = {**knative_default_features(), **{key: "Enabled" for key in enabled}}

    def on(key: str) -> bool:
        return flags.get(key, "Disabled") != "Disabled"

    out = []
    for obj in objects:
        who = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "InferenceService":
            predictor = obj["spec"]["predictor"]
            out += _knative_pod(who, predictor, on)
            for container in [predictor.get("model") or {}, *(predictor.get("containers") or [])]:
                out += _knative_container(f"{who}/{container.get('name', 'model')}", container, on)
        elif obj["kind"] == "ServingRuntime":
            out += _knative_pod(who, obj["spec"], on)
            for container in obj["spec"]["containers"]:
                out += _knative_container(f"{who}/{container['name']}", container, on)
    return out
