"""Training on the cluster: one PyTorchJob per training stage, through the kubeflow-training SDK.

What the pods receive is the Kubeflow Training Operator's code, not our assumption (kubeflow/trainer v1.9.4,
formerly kubeflow/training-operator; `pkg/controller.v1/pytorch/envvar.go`, `elastic.go`). With an
`elasticPolicy` and Worker replicas only, every pod gets `PET_NNODES` ("n:n"), `PET_NPROC_PER_NODE`,
`PET_RDZV_BACKEND` (c10d), `PET_RDZV_ENDPOINT` (`<job>-worker-0:<pytorchjob-port>`) and `PET_MAX_RESTARTS`,
and no `LOCAL_RANK`, `RANK` or `WORLD_SIZE`: those are torchrun's to set. So every pod runs torchrun
(`pod_command`), which reads the `PET_*` variables as its own flags and starts one process per GPU running
the caller's program; the ranks find each other through the c10d rendezvous on worker-0. Kubeflow Trainer
v2's torch plugin injects the same `PET_NNODES` / `PET_NPROC_PER_NODE` contract (with a static master
address instead of the rendezvous endpoint), which torchrun reads the same way.

Restarts are the operator's elastic mechanism: when any training process fails, torchrun's agents in every
pod stop their workers, meet again in the rendezvous and restart them all (`max_restarts` times), and the
stage resumes from its last checkpoint; a pod that dies is restarted in place (`restartPolicy: OnFailure`)
and its agent rejoins. A fixed-size job with `restartPolicy: ExitCode` instead restarts one pod while the
others stall in their collectives (the operator never restarts siblings: `pkg/controller.v1/common/pod.go`).

`launch` creates the job, or re-attaches to this run's job when it is running or has succeeded (a retried
pipeline step); a job of this run that failed is deleted and created again. Waiting polls the conditions,
prints worker 0's new log lines and fails with the job's own reason; the result is the JSON rank 0 wrote to
`result_uri` (object storage: a pod's disk goes with the pod).
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
PORT = 23456  # the operator's PyTorchJobDefaultPort, on the port named `pytorchjob-port` it looks up
TORCHRUN = ["python", "-m", "torch.distributed.run"]
# A fresh worker store in every rendezvous round: with the store shared across rounds (torch's default) a
# restart reads the last round's process-group addresses and connects to dead ranks (torch 2.13,
# elastic/rendezvous/dynamic_rendezvous.py `next_rendezvous`; tests/test_pytorchjob_conformance.py)
TORCHRUN_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


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
    image_pull_secret: str | None = None
    max_restarts: int = 3  # whole-job restarts (torchrun's elastic agents) before the job fails
    backoff_limit: int = 3
    ttl_seconds_after_finished: int = 7 * 24 * 3600
    timeout_seconds: float = 48 * 3600


def job_name(run: str, stage: str) -> str:
    """A DNS-1123 name from the pipeline run and stage, stable across retries (hashed when long)."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"duogen-{run}-{stage}".lower()).strip("-")
    if len(base) <= 52:
        return base
    return f"{base[:43].rstrip('-')}-{hashlib.sha256(base.encode()).hexdigest()[:8]}"


def pod_command(program: list[str]) -> list[str]:
    """What every pod runs: torchrun, whose flags come from the operator's `PET_*` variables (see the
    module's docstring), starting one process per GPU that runs `program` (e.g. `-m module args...`)."""
    return [*TORCHRUN, *program]


def _replicas(settings: ClusterSettings, command: list[str]) -> models.KubeflowOrgV1ReplicaSpec:
    limits = {"cpu": settings.cpu, "memory": settings.memory}
    if settings.gpus_per_node:
        limits["nvidia.com/gpu"] = str(settings.gpus_per_node)
    env = [k8s.V1EnvVar(name="HOME", value="/tmp")]  # caches (HF, triton) go to the writable /tmp
    env += [k8s.V1EnvVar(name=k, value=v) for k, v in TORCHRUN_ENV.items()]
    env += [k8s.V1EnvVar(name=k, value=v) for k, v in sorted(settings.env.items())]
    env_from = (
        [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=settings.s3_secret))]
        if settings.s3_secret
        else None
    )
    container = k8s.V1Container(
        name="pytorch",  # the operator reads the port and the exit code of the container of this name
        image=settings.image,
        command=command,
        env=env,
        env_from=env_from,
        ports=[k8s.V1ContainerPort(name="pytorchjob-port", container_port=PORT)],
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
        image_pull_secrets=[k8s.V1LocalObjectReference(name=settings.image_pull_secret)]
        if settings.image_pull_secret
        else None,
        security_context=pod_security(),
    )
    return models.KubeflowOrgV1ReplicaSpec(
        replicas=settings.nodes, restart_policy="OnFailure", template=k8s.V1PodTemplateSpec(spec=pod)
    )


def build_job(
    name: str, program: list[str], settings: ClusterSettings, labels: dict[str, str] | None = None
) -> models.KubeflowOrgV1PyTorchJob:
    """Worker replicas only (one per node) under an elastic policy of fixed size: the operator then gives
    every pod torchrun's rendezvous (c10d on worker-0) and the restart budget."""
    n = settings.nodes
    return models.KubeflowOrgV1PyTorchJob(
        api_version=f"{GROUP}/{VERSION}",
        kind=KIND,
        metadata=k8s.V1ObjectMeta(
            name=name,
            namespace=settings.namespace,
            labels={"app.kubernetes.io/part-of": "duogen", **(labels or {})},
        ),
        spec=models.KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(settings.nproc_per_node),
            elastic_policy=models.KubeflowOrgV1ElasticPolicy(
                rdzv_backend="c10d", min_replicas=n, max_replicas=n, max_restarts=settings.max_restarts
            ),
            pytorch_replica_specs={"Worker": _replicas(settings, pod_command(program))},
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


def _existing(client, name: str) -> dict | None:
    try:
        return as_dict(client.get_job(name))
    except RuntimeError as err:  # the SDK wraps the API's error; a 404 means "not created yet"
        if getattr(err.__context__, "status", None) == 404:
            return None
        raise JobFailed(f"reading PyTorchJob {name} failed: {err}") from None


def _delete(client, name: str, ns: str, poll_seconds: float, timeout: float = 600.0) -> None:
    """Delete a job and wait until it is gone (its pods go with it), so a new one can take its name."""
    try:
        client.delete_job(name)
    except RuntimeError as err:
        raise JobFailed(
            f"deleting the failed PyTorchJob {ns}/{name} failed: {err.__context__ or err}"
        ) from None
    deadline = time.monotonic() + timeout
    while _existing(client, name) is not None:
        if time.monotonic() > deadline:
            raise JobFailed(f"the failed PyTorchJob {ns}/{name} was not deleted within {timeout:.0f} s")
        time.sleep(poll_seconds)


def launch(
    name: str,
    program: list[str],
    settings: ClusterSettings,
    result_uri: str,
    labels: dict[str, str] | None = None,
    configuration: k8s.Configuration | None = None,
    poll_seconds: float = 10.0,
    log=print,
) -> dict[str, Any]:
    """Create the job, or re-attach to the one a previous attempt of this run created while it runs or after
    it succeeded (a job of this run that failed is deleted and created again); wait for it, stream worker
    0's log; return the JSON rank 0 wrote to `result_uri`. Raises JobFailed with the job's reason."""
    from . import storage

    client = _client(settings, configuration)
    ns = settings.namespace
    job = _existing(client, name)
    if job is not None and "Failed" in _conditions(job):
        log(f"PyTorchJob {ns}/{name} of this run failed before: deleting it to start again")
        _delete(client, name, ns, poll_seconds)
        job = None
    if job is not None:
        log(f"PyTorchJob {ns}/{name} exists (a retried step): waiting on it")
    else:
        try:
            client.create_job(job=build_job(name, program, settings, labels))
        except RuntimeError as err:
            raise JobFailed(f"creating PyTorchJob {ns}/{name} failed: {err.__context__ or err}") from None
        log(f"created PyTorchJob {ns}/{name}")
    deadline = time.monotonic() + settings.timeout_seconds
    seen, text = 0, ""
    while True:
        job = as_dict(client.get_job(name))
        text = _worker0_log(client, name) or text
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
    result = storage.read_text(result_uri)
    if result is None:
        raise JobFailed(f"PyTorchJob {ns}/{name} succeeded but wrote no result to {result_uri}")
    return json.loads(result)


def _worker0_log(client, name: str) -> str | None:
    try:
        logs, _ = client.get_job_logs(name, is_master=False, replica_type="worker", replica_index=0)
    except (RuntimeError, k8s.ApiException):
        return None  # the pod is not scheduled yet, or already gone
    return next(iter(logs.values()), None)
