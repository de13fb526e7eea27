"""Training on the cluster: one PyTorchJob per training stage, through the kubeflow-training SDK.

The job runs the training stage's own entry point (`python -m duogen.cli train STAGE --set ...`, the same
command local torchrun runs) in the project's GPU image: a Master and `nodes - 1` Workers, `nprocPerNode`
processes each (the operator sets torchrun's rendezvous), GPU limits, the GPU pool's node selector and
tolerations, /dev/shm as a memory-backed emptyDir (NCCL and data loaders need more than the default 64 MiB),
S3 credentials from a Secret, `restartPolicy: ExitCode` (a preempted pod exits 143 and is restarted; the
stage resumes from its checkpoint), a backoff limit and a TTL after it finishes.

`launch` is idempotent: the job's name comes from the pipeline run and the stage, so a retried pipeline step
finds the job it created and waits on it instead of starting another. Waiting polls the job's conditions,
prints the master pod's new log lines, and fails with the job's own reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from kubeflow.training import models
from kubernetes import client as k8s

from .k8s_security import container_security, pod_security

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"


@dataclass
class ClusterSettings:
    image: str = "ghcr.io/duogen/duogen-gpu:0.1.0"
    namespace: str = "duogen"
    nodes: int = 1
    nproc_per_node: int = 1
    gpus_per_node: int = 0
    cpu: str = "4"
    memory: str = "32Gi"
    shm_size: str = "16Gi"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    s3_secret: str | None = "duogen-s3"  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL ...
    env: dict[str, str] = field(default_factory=dict)
    service_account: str | None = None
    backoff_limit: int = 3
    ttl_seconds_after_finished: int = 7 * 24 * 3600
    timeout_seconds: float = 48 * 3600


def job_name(run: str, stage: str) -> str:
    """A DNS-1123 name from the pipeline run and stage, stable across retries (hashed when long)."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"duogen-{run}-{stage}".lower()).strip("-")
    if len(base) <= 52:
        return base
    return f"{base[:43].rstrip('-')}-{hashlib.sha256(base.encode()).hexdigest()[:8]}"


def train_command(stage: str, config: dict[str, Any]) -> list[str]:
    """The pods' command: `duogen train` with the stage's whole config as `--set` overrides."""
    sets = [
        f"--set={k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in config.items() if v is not None
    ]
    return ["python", "-m", "duogen.cli", "train", stage, "--quiet", *sets]


def _replica(settings: ClusterSettings, command: list[str], replicas: int) -> models.KubeflowOrgV1ReplicaSpec:
    limits = {"cpu": settings.cpu, "memory": settings.memory}
    if settings.gpus_per_node:
        limits["nvidia.com/gpu"] = str(settings.gpus_per_node)
    env = [k8s.V1EnvVar(name="HOME", value="/tmp")]  # caches (HF, triton) go to the writable /tmp
    env += [k8s.V1EnvVar(name=k, value=v) for k, v in sorted(settings.env.items())]
    env_from = (
        [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=settings.s3_secret))]
        if settings.s3_secret
        else None
    )
    container = k8s.V1Container(
        name="pytorch",  # the operator finds the training container by this name
        image=settings.image,
        command=command,
        env=env,
        env_from=env_from,
        resources=k8s.V1ResourceRequirements(requests=dict(limits), limits=limits),
        volume_mounts=[
            k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
            k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
        ],
        security_context=container_security(),
    )
    pod = k8s.V1PodSpec(
        containers=[container],
        volumes=[
            k8s.V1Volume(
                name="dshm",
                empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=settings.shm_size),
            ),
            k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
        ],
        node_selector=settings.node_selector or None,
        tolerations=[k8s.V1Toleration(**t) for t in settings.tolerations] or None,
        service_account_name=settings.service_account,
        security_context=pod_security(),
    )
    return models.KubeflowOrgV1ReplicaSpec(
        replicas=replicas, restart_policy="ExitCode", template=k8s.V1PodTemplateSpec(spec=pod)
    )


def build_job(
    name: str, stage: str, config: dict[str, Any], settings: ClusterSettings
) -> models.KubeflowOrgV1PyTorchJob:
    command = train_command(stage, config)
    replicas = {"Master": _replica(settings, command, 1)}
    if settings.nodes > 1:
        replicas["Worker"] = _replica(settings, command, settings.nodes - 1)
    return models.KubeflowOrgV1PyTorchJob(
        api_version=f"{GROUP}/{VERSION}",
        kind=KIND,
        metadata=k8s.V1ObjectMeta(
            name=name,
            namespace=settings.namespace,
            labels={"app.kubernetes.io/part-of": "duogen", "duogen/stage": stage},
        ),
        spec=models.KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(settings.nproc_per_node),
            pytorch_replica_specs=replicas,
            run_policy=models.KubeflowOrgV1RunPolicy(
                backoff_limit=settings.backoff_limit,
                ttl_seconds_after_finished=settings.ttl_seconds_after_finished,
                clean_pod_policy="None",  # keep finished pods' logs readable
            ),
        ),
    )


def as_dict(job: models.KubeflowOrgV1PyTorchJob) -> dict[str, Any]:
    """The manifest as the API server receives it (camelCase keys, no nulls)."""
    from kubeflow.training.api_client import ApiClient

    return ApiClient().sanitize_for_serialization(job)


class JobFailed(RuntimeError):
    pass


def _conditions(job: dict) -> dict[str, dict]:
    return {
        c["type"]: c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"
    }


def _client(settings: ClusterSettings, configuration: k8s.Configuration | None):
    """The SDK's client; without a configuration it reads the pod's service account or ~/.kube/config."""
    from kubeflow.training import TrainingClient

    config_file = (
        None if configuration else os.environ.get("KUBECONFIG")
    )  # the kubernetes client reads it at import
    return TrainingClient(
        config_file=config_file,
        client_configuration=configuration,
        namespace=settings.namespace,
        job_kind=KIND,
    )


def _exists(client, name: str) -> bool:
    try:
        client.get_job(name)
        return True
    except RuntimeError as err:  # the SDK wraps the API's error; a 404 means "not created yet"
        if getattr(err.__context__, "status", None) == 404:
            return False
        raise JobFailed(f"reading PyTorchJob {name} failed: {err}") from None


def launch(
    name: str,
    stage: str,
    config: dict[str, Any],
    settings: ClusterSettings,
    configuration: k8s.Configuration | None = None,
    poll_seconds: float = 10.0,
    log=print,
) -> dict[str, Any]:
    """Create the job (or re-attach to the one a previous attempt created), wait for it, stream the master's
    log; returns the stage's summary line (rank 0's JSON). Raises JobFailed with the job's reason."""
    client = _client(settings, configuration)
    ns = settings.namespace
    if _exists(client, name):
        log(f"PyTorchJob {ns}/{name} exists (a retried step): waiting on it")
    else:
        try:
            client.create_job(job=build_job(name, stage, config, settings))
        except RuntimeError as err:
            raise JobFailed(f"creating PyTorchJob {ns}/{name} failed: {err.__context__ or err}") from None
        log(f"created PyTorchJob {ns}/{name}")
    deadline = time.monotonic() + settings.timeout_seconds
    seen, text = 0, ""
    while True:
        job = as_dict(client.get_job(name))
        text = _master_log(client, name) or text
        if len(text) > seen:
            for line in text[seen:].splitlines():
                log(f"[{name}] {line}")
            seen = len(text)
        conditions = _conditions(job)
        if "Failed" in conditions:
            c = conditions["Failed"]
            raise JobFailed(f"PyTorchJob {ns}/{name} failed: {c.get('reason', '?')}: {c.get('message', '')}")
        if "Succeeded" in conditions:
            break
        if time.monotonic() > deadline:
            raise JobFailed(f"PyTorchJob {ns}/{name} did not finish within {settings.timeout_seconds:.0f} s")
        time.sleep(poll_seconds)
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise JobFailed(f"PyTorchJob {ns}/{name} succeeded but its master printed no summary line")
    return json.loads(lines[-1])


def _master_log(client, name: str) -> str | None:
    try:
        logs, _ = client.get_job_logs(name, is_master=True)
    except (RuntimeError, k8s.ApiException):
        return None  # the pod is not scheduled yet, or already gone
    return next(iter(logs.values()), None)
