"""Deploying on the cluster: the promoted pair as a KServe InferenceService, through the kserve SDK.

The InferenceService names the project's ServingRuntime (`duogen`, installed by the chart) and the pair's
`storageUri` (the registry resolves the alias to it: KServe's storage initializer cannot read an MLflow
alias); the ServiceAccount carries KServe's S3 annotations and Secret. A rerun patches the service it made
(the new version rolls out) instead of failing on "already exists"; the step waits for Ready with a timeout
and fails naming the service's last not-ready condition.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from .k8s_security import pod_security


@dataclass
class ServingSettings:
    namespace: str = "duogen"
    runtime: str = "duogen"
    service_account: str | None = "duogen-s3"
    gpus: int = 0
    cpu: str = "4"
    memory: str = "16Gi"
    min_replicas: int = 1
    max_replicas: int = 1
    timeout: int = 300  # seconds per request (KServe's component timeout)
    auth_secret: str | None = None  # a Secret with key `token`: clients send `Authorization: Bearer <token>`
    ready_timeout: float = 1800.0


def build(name: str, storage_uri: str, s: ServingSettings):
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
    if s.auth_secret:
        ref = k8s.V1SecretKeySelector(name=s.auth_secret, key="token")
        env.append(k8s.V1EnvVar(name="DUOGEN_AUTH_TOKEN", value_from=k8s.V1EnvVarSource(secret_key_ref=ref)))
    model = V1beta1ModelSpec(
        model_format=V1beta1ModelFormat(name="duogen"),
        runtime=s.runtime,
        storage_uri=storage_uri,
        resources=k8s.V1ResourceRequirements(requests=dict(limits), limits=limits),
        env=env or None,
    )
    predictor = V1beta1PredictorSpec(
        model=model,
        min_replicas=s.min_replicas,
        max_replicas=s.max_replicas,
        timeout=s.timeout,
        service_account_name=s.service_account,
        security_context=pod_security(),  # the runtime's container carries the container-level settings
    )
    return V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1",
        kind="InferenceService",
        metadata=k8s.V1ObjectMeta(
            name=name, namespace=s.namespace, labels={"app.kubernetes.io/part-of": "duogen"}
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


def deploy(
    name: str,
    storage_uri: str,
    s: ServingSettings,
    config_dict: dict | None = None,
    poll_seconds: float = 10.0,
    log=print,
) -> str:
    """Create or patch the InferenceService, wait until Ready; returns its URL (status.url).
    `config_dict` is a kubeconfig (default: the pod's service account, or ~/.kube/config)."""
    from kserve import KServeClient

    if config_dict:
        client = KServeClient(config_dict=config_dict)
    elif os.environ.get("KUBECONFIG"):  # read now: the kubernetes client reads it once, at import
        client = KServeClient(config_file=os.environ["KUBECONFIG"])
    else:
        client = KServeClient()
    isvc = build(name, storage_uri, s)
    try:
        client.get(name, namespace=s.namespace)
        exists = True
    except RuntimeError as err:
        if getattr(err.__context__, "status", None) != 404:
            raise DeployFailed(f"reading InferenceService {s.namespace}/{name} failed: {err}") from None
        exists = False
    try:
        if exists:
            client.patch(name, isvc, namespace=s.namespace)
            log(f"patched InferenceService {s.namespace}/{name} -> {storage_uri}")
        else:
            client.create(isvc, namespace=s.namespace)
            log(f"created InferenceService {s.namespace}/{name} -> {storage_uri}")
    except RuntimeError as err:
        raise DeployFailed(f"applying InferenceService {s.namespace}/{name} failed: {err}") from None
    deadline = time.monotonic() + s.ready_timeout
    while True:
        current = client.get(name, namespace=s.namespace)
        status = current.get("status") or {}
        if any(
            c.get("type") == "Ready" and str(c.get("status")).lower() == "true"
            for c in status.get("conditions", [])
        ):
            return status.get("url", "")
        if time.monotonic() > deadline:
            waited = f"not ready within {s.ready_timeout:.0f} s"
            raise DeployFailed(f"InferenceService {s.namespace}/{name} {waited}: {_not_ready(current)}")
        time.sleep(poll_seconds)
