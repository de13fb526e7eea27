"""What the Kubeflow Training Operator gives each PyTorchJob pod, ported from its source, and a harness that
runs a job's pods as local process groups with exactly that environment.

No Kubernetes API server or operator can run here, so the environment a pod receives is computed the way
the operator computes it, from the job's spec, by a port of kubeflow/trainer v1.9.4 (formerly
kubeflow/training-operator; the same code from v1.9.0):

- `pkg/controller.v1/pytorch/envvar.go` `setPodEnv`: every container gets `PYTHONUNBUFFERED=1`; with a
  Master replica, `MASTER_ADDR`/`PET_MASTER_ADDR` = `<job>-master-0`, `MASTER_PORT`/`PET_MASTER_PORT` = the
  Master's `pytorchjob-port`, `WORLD_SIZE` = replicas x int(nprocPerNode) (1 when not an int), `RANK` and
  `PET_NODE_RANK` = 0 for the Master and i + 1 for Worker i; `PET_NPROC_PER_NODE` = `spec.nprocPerNode`
  verbatim; `PET_NNODES` = the replicas, or the elastic values below. No `LOCAL_RANK` anywhere.
- `elastic.go` `ElasticEnvVarGenerator.Generate`: `PET_RDZV_ENDPOINT` = (`rdzvHost` or `<job>-worker-0`):
  (`rdzvPort` or the Worker's `pytorchjob-port`), `PET_RDZV_BACKEND` = `rdzvBackend` or "c10d",
  `PET_NNODES` = "min:max", and `PET_MAX_RESTARTS`, `PET_RDZV_ID`, `PET_RDZV_CONF` only when set.
- `pkg/apis/kubeflow.org/v1/pytorch_defaults.go`: `nprocPerNode` defaults to "auto"; the port named
  `pytorchjob-port` defaults to 23456 on the container named `pytorch`; `setElasticPolicy` fills min/max
  replicas from each other or from the Worker replicas.

The harness maps the job's service names (`<job>-worker-0`, `<job>-master-0`: headless services of those
pods) to 127.0.0.1 and the port to a free one (all pods share this machine), runs each pod's container
command with `python` as this interpreter, and leaves everything else as the operator set it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from duogen.platform.launch import free_port

DEFAULT_PORT = 23456  # PyTorchJobDefaultPort


def _container(pod_spec: dict) -> dict:
    """The container named `pytorch` (PyTorchJobDefaultContainerName), else the first (defaulting's rule)."""
    return next((c for c in pod_spec["containers"] if c["name"] == "pytorch"), pod_spec["containers"][0])


def _port(job: dict, rtype: str) -> int:
    spec = job["spec"]["pytorchReplicaSpecs"][rtype]["template"]["spec"]
    ports = _container(spec).get("ports") or []
    return next((p["containerPort"] for p in ports if p.get("name") == "pytorchjob-port"), DEFAULT_PORT)


def operator_env(job: dict, rtype: str, index: int) -> dict[str, str]:
    """The variables the operator adds to replica `rtype` ("Master"/"Worker") number `index`."""
    name, spec = job["metadata"]["name"], job["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    total = sum(int(r.get("replicas", 1)) for r in replicas.values())
    elastic = spec.get("elasticPolicy")
    nproc = spec.get("nprocPerNode")
    if nproc is None and (elastic is None or elastic.get("nProcPerNode") is None):
        nproc = "auto"  # setDefaultNprocPerNode
    try:
        nproc_int = int(nproc)
    except (TypeError, ValueError):
        nproc_int = 1  # getNprocPerNodeInt
    env = {"PYTHONUNBUFFERED": "1"}
    if "Master" in replicas:
        port, addr = str(_port(job, "Master")), f"{name}-master-0"
        env |= {"MASTER_PORT": port, "PET_MASTER_PORT": port, "MASTER_ADDR": addr, "PET_MASTER_ADDR": addr}
        rank = index + 1 if rtype == "Worker" else index
        env |= {"WORLD_SIZE": str(total * nproc_int), "RANK": str(rank), "PET_NODE_RANK": str(rank)}
    if nproc is not None:
        env["PET_NPROC_PER_NODE"] = str(nproc)
    if elastic is not None:
        host = elastic.get("rdzvHost") or f"{name}-worker-0"
        port = elastic.get("rdzvPort") or _port(job, "Worker")
        env["PET_RDZV_ENDPOINT"] = f"{host}:{port}"
        env["PET_RDZV_BACKEND"] = elastic.get("rdzvBackend") or "c10d"
        workers = int(replicas.get("Worker", {}).get("replicas", 1))
        low = elastic.get("minReplicas", elastic.get("maxReplicas", workers))
        high = elastic.get("maxReplicas", low)
        env["PET_NNODES"] = f"{low}:{high}"
        if elastic.get("maxRestarts") is not None:
            env["PET_MAX_RESTARTS"] = str(elastic["maxRestarts"])
        if elastic.get("rdzvId") is not None:
            env["PET_RDZV_ID"] = str(elastic["rdzvId"])
        if elastic.get("nProcPerNode") is not None:
            env["PET_NPROC_PER_NODE"] = str(elastic["nProcPerNode"])
    else:
        env["PET_NNODES"] = str(total)
    return env


@dataclass
class Pod:
    name: str
    proc: subprocess.Popen
    log: Path

    def workers(self) -> list[int]:
        """The training processes torchrun (this pod's agent) started: its children."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []


def start_pods(
    job: dict,
    extra_args: list[str],
    logs: Path,
    mounts: dict[str, Path] | None = None,
    env: dict[str, str] | None = None,
) -> list[Pod]:
    """Start every replica of `job` as a local process group with the operator's environment; `extra_args`
    are appended to each container command (CPU-size overrides), `mounts` maps a mount path in the command
    to a local folder (a ConfigMap's files)."""
    name = job["metadata"]["name"]
    port = str(free_port())
    pods = []
    for rtype, replica in job["spec"]["pytorchReplicaSpecs"].items():
        container = _container(replica["template"]["spec"])
        for index in range(int(replica.get("replicas", 1))):
            variables = operator_env(job, rtype, index)
            for key, value in variables.items():  # the pods' service names and port, on this machine
                for host in (f"{name}-worker-0", f"{name}-master-0"):
                    value = value.replace(host, "127.0.0.1")
                variables[key] = value.replace(f":{_port(job, 'Worker')}", f":{port}")
                if key.endswith("MASTER_PORT"):
                    variables[key] = port
            own = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
            own.pop("HOME", None)  # the image's writable /tmp; here the test's own home
            command = [sys.executable if c == "python" else c for c in container["command"]]
            for path, local in (mounts or {}).items():
                command = [c.replace(path, str(local)) for c in command]
            pod_name = f"{name}-{rtype.lower()}-{index}"
            log = logs / f"{pod_name}.log"
            proc = subprocess.Popen(
                [*command, *extra_args],
                env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {}), **own, **variables},
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group per pod: kill one pod whole
                cwd=Path(__file__).parents[1],
            )
            pods.append(Pod(pod_name, proc, log))
    return pods


def wait_pods(pods: list[Pod], timeout: float = 600) -> None:
    try:
        for pod in pods:
            pod.proc.wait(timeout=timeout)
    finally:
        for pod in pods:
            if pod.proc.poll() is None:
                os.killpg(pod.proc.pid, signal.SIGKILL)
                pod.proc.wait()
    failed = [p for p in pods if p.proc.returncode != 0]
    assert not failed, "\n".join(
        f"{p.name} exited {p.proc.returncode}:\n{p.log.read_text()[-3000:]}" for p in failed
    )
