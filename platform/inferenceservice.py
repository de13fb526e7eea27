"""Deploying on the cluster: the promoted pair served by a KServe InferenceService, through the kserve SDK.

The InferenceService names the project's ServingRuntime (`duogen`, installed by the chart) and serves the
registry alias itself: the predictor runs with `--model models:/NAME@ALIAS` (no storage initializer: none
can read an alias, and the MLflow server proxies the artifacts), loads the version the alias points at and
follows it (`--reload-interval`). Deploying a newly promoted version therefore rolls out the chart's
InferenceService (`ServingSettings.name`): a patch of its predictor's pod annotation
`duogen.dev/model-version` starts new pods in both deployment modes; the step waits until the controller
has seen that generation and reports Ready, and fails naming the last not-ready condition. Without a
chart the step creates the service. An `s3://` folder (a pinned pair) goes to KServe's storage
initializer as `storageUri` instead.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from typing import Any

from kubernetes import client as k8s

from duogen.model.errors import DuoGenInputError

from .k8s_security import pod_security

VERSION_ANNOTATION = "duogen.dev/model-version"
MODES = ("RawDeployment", "Serverless")


@dataclass
class ServingSettings:
    name: str = "duogen"  # the InferenceService (the chart's `serving.name`)
    namespace: str = "duogen"
    deployment_mode: str = "RawDeployment"  # or Serverless (Knative): no pod-level security context then
    runtime: str = "duogen"
    service_account: str | None = "duogen-s3"
    gpus: int = 0
    cpu: str = "4"
    memory: str = "16Gi"
    min_replicas: int = 1
    max_replicas: int = 1
    timeout: int = 300  # seconds per request (KServe's component timeout)
    auth_secret: str | None = None  # a Secret with key `token`: clients send `Authorization: Bearer <token>`
    tracking_uri: str | None = None  # the MLflow the predictor resolves the alias with (default: the step's)
    reload_interval: int = 60  # seconds between the predictor's checks of the alias
    ready_timeout: float = 1800.0

    def __post_init__(self) -> None:
        for f in fields(self):  # KFP hands dict parameters back with every number a float (60 -> 60.0)
            value = getattr(self, f.name)
            if f.type == "int" and isinstance(value, float) and value.is_integer():
                setattr(self, f.name, int(value))
        if self.deployment_mode not in MODES:
            raise DuoGenInputError(f"deployment_mode must be one of {MODES}, got {self.deployment_mode!r}")


def build(model_uri: str, s: ServingSettings):
    """The InferenceService serving `model_uri`: a `models:/NAME@ALIAS` (the predictor follows it) or an
    `s3://` folder (KServe's storage initializer fetches it)."""
    from kserve import (
        V1beta1InferenceService,
        V1beta1InferenceServiceSpec,
        V1beta1ModelFormat,
        V1beta1ModelSpec,
        V1beta1PredictorSpec,
    )

    limits = {"cpu": s.cpu, "memory": s.memory}
    if s.gpus:
        limits["nvidia.com/gpu"] = str(s.gpus)
    env = []
    if s.tracking_uri:
        env.append(k8s.V1EnvVar(name="MLFLOW_TRACKING_URI", value=s.tracking_uri))
    if s.auth_secret:
        ref = k8s.V1SecretKeySelector(name=s.auth_secret, key="token")
        env.append(k8s.V1EnvVar(name="DUOGEN_AUTH_TOKEN", value_from=k8s.V1EnvVarSource(secret_key_ref=ref)))
    registry = model_uri.startswith("models:/")
    model = V1beta1ModelSpec(
        model_format=V1beta1ModelFormat(name="duogen"),
        runtime=s.runtime,
        storage_uri=None if registry else model_uri,
        args=[f"--model={model_uri}", f"--reload-interval={s.reload_interval}"] if registry else None,
        resources=k8s.V1ResourceRequirements(requests=dict(limits), limits=limits),
        env=env or None,
    )
    raw = s.deployment_mode == "RawDeployment"
    predictor = V1beta1PredictorSpec(
        model=model,
        min_replicas=s.min_replicas,
        max_replicas=s.max_replicas,
        timeout=s.timeout,
        service_account_name=s.service_account,
        # Knative refuses a pod-level securityContext unless its feature flag is on (off by default); the
        # runtime's container carries the container-level settings in both modes.
        security_context=pod_security() if raw else None,
    )
    return V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1",
        kind="InferenceService",
        metadata=k8s.V1ObjectMeta(
            name=s.name,
            namespace=s.namespace,
            labels={"app.kubernetes.io/part-of": "duogen"},
            annotations={"serving.kserve.io/deploymentMode": s.deployment_mode},
        ),
        spec=V1beta1InferenceServiceSpec(predictor=predictor),
    )


def as_dict(isvc) -> dict[str, Any]:
    return k8s.ApiClient().sanitize_for_serialization(isvc)


class DeployFailed(RuntimeError):
    pass


def _not_ready(isvc: dict) -> str:
    conditions = (isvc.get("status") or {}).get("conditions") or []
    bad = [c for c in conditions if str(c.get("status")).lower() != "true"]
    return (
        "; ".join(f"{c.get('type')}: {c.get('reason', '')} {c.get('message', '')}".strip() for c in bad)
        or "no status"
    )


def _ready(isvc: dict) -> bool:
    status = isvc.get("status") or {}
    seen = status.get("observedGeneration")
    current = (isvc.get("metadata") or {}).get("generation")
    if seen is not None and current is not None and seen < current:
        return False  # the controller has not acted on the rollout yet: Ready is the old pods'
    return any(
        c.get("type") == "Ready" and str(c.get("status")).lower() == "true"
        for c in status.get("conditions", [])
    )


def url_of(isvc: dict) -> str:
    """Where in-cluster callers reach the service: `status.address.url` (the cluster-local address);
    `status.url` is the external domain in Serverless mode, which a pipeline pod may not resolve."""
    status = isvc.get("status") or {}
    return (status.get("address") or {}).get("url") or status.get("url", "")


def deploy(
    model_uri: str,
    s: ServingSettings,
    version: str | None = None,
    config_dict: dict | None = None,
    poll_seconds: float = 10.0,
    log=print,
) -> str:
    """Roll out `version` on the InferenceService `s.name` (create it when missing), wait until Ready;
    returns its in-cluster URL. `config_dict` is a kubeconfig (default: the pod's service account, or
    ~/.kube/config)."""
    from kserve import KServeClient, constants

    if config_dict:
        client = KServeClient(config_dict=config_dict)
    elif os.environ.get("KUBECONFIG"):  # read now: the kubernetes client reads it once, at import
        client = KServeClient(config_file=os.environ["KUBECONFIG"])
    else:
        client = KServeClient()
    where = f"InferenceService {s.namespace}/{s.name}"
    try:
        client.get(s.name, namespace=s.namespace)
        exists = True
    except RuntimeError as err:
        if getattr(err.__context__, "status", None) != 404:
            raise DeployFailed(f"reading {where} failed: {err}") from None
        exists = False
    try:
        if exists:  # the chart's service: only the rollout annotation changes (a JSON merge patch)
            patch = {"spec": {"predictor": {"annotations": {VERSION_ANNOTATION: str(version or "")}}}}
            client.api_instance.patch_namespaced_custom_object(
                constants.KSERVE_GROUP,
                "v1beta1",
                s.namespace,
                constants.KSERVE_PLURAL_INFERENCESERVICE,
                s.name,
                patch,
            )
            log(f"rolled out {where}: {model_uri} version {version}")
        else:
            isvc = build(model_uri, s)
            if version:
                isvc.spec.predictor.annotations = {VERSION_ANNOTATION: str(version)}
            client.create(isvc, namespace=s.namespace)
            log(f"created {where}: {model_uri} version {version}")
    except (RuntimeError, k8s.ApiException) as err:
        raise DeployFailed(f"applying {where} failed: {err}") from None
    deadline = time.monotonic() + s.ready_timeout
    while True:
        current = client.get(s.name, namespace=s.namespace)
        if _ready(current):
            return url_of(current)
        if time.monotonic() > deadline:
            raise DeployFailed(f"{where} not ready within {s.ready_timeout:.0f} s: {_not_ready(current)}")
        time.sleep(poll_seconds)
