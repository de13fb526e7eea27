"""Deploying on the cluster: roll the promoted version out on the chart's InferenceService, through the
kserve SDK.

The InferenceService and its ServingRuntime are defined once, by the chart (`helm/duogen/templates/
serving.yaml`; `manifests/base` holds a rendering of them, `scripts/render_manifests.py`): the predictor
serves the registry alias itself (`--model models:/NAME@ALIAS`: no storage initializer, none reads an
alias, and the MLflow server proxies the artifacts) and follows it (`--reload-interval`). Deploying a newly
promoted version is therefore a rollout of that service (`ServingSettings.name`): a JSON merge patch of its
predictor's pod annotation `duogen.dev/model-version` starts new pods in RawDeployment and Serverless mode
alike and changes nothing else; the step waits until the controller has seen that generation and reports
Ready, and fails naming the last not-ready condition. A missing service is an error that says to install
the chart.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

VERSION_ANNOTATION = "duogen.dev/model-version"


@dataclass
class ServingSettings:
    name: str = "duogen"  # the chart's InferenceService (`serving.name`)
    namespace: str = "duogen"  # the release's namespace
    ready_timeout: float = 1800.0


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
    version: str,
    config_dict: dict | None = None,
    poll_seconds: float = 10.0,
    log=print,
) -> str:
    """Roll out `version` of `model_uri` (the alias the service serves) on the InferenceService `s.name`,
    wait until Ready; returns its in-cluster URL. `config_dict` is a kubeconfig (default: the pod's
    service account, or ~/.kube/config)."""
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
    if not exists:
        hint = f"install the chart there (helm install NAME helm/duogen -n {s.namespace}) or name its "
        raise DeployFailed(f"{where} does not exist: {hint}service in the pipeline's `serving` parameter")
    patch = {"spec": {"predictor": {"annotations": {VERSION_ANNOTATION: str(version)}}}}
    try:
        client.api_instance.patch_namespaced_custom_object(
            constants.KSERVE_GROUP,
            "v1beta1",
            s.namespace,
            constants.KSERVE_PLURAL_INFERENCESERVICE,
            s.name,
            patch,
        )
        log(f"rolled out {where}: {model_uri} version {version}")
    except Exception as err:  # noqa: BLE001 - the API client's errors, whatever their class
        raise DeployFailed(f"applying {where} failed: {err}") from None
    deadline = time.monotonic() + s.ready_timeout
    while True:
        current = client.get(s.name, namespace=s.namespace)
        if _ready(current):
            return url_of(current)
        if time.monotonic() > deadline:
            raise DeployFailed(f"{where} not ready within {s.ready_timeout:.0f} s: {_not_ready(current)}")
        time.sleep(poll_seconds)
