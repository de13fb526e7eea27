"""The PyTorchJob launcher. No Kubernetes API server can run here, so: every generated job is validated
against the real CRD (kubeflow/training-operator release-1.9, copied into tests/data/crds) with jsonschema,
and the launcher's create / re-attach / wait / log / failure paths run through the kubeflow-training SDK
against a stand-in HTTP server on 127.0.0.1 that answers the PyTorchJob and pod REST paths the SDK calls
(it validates what it is sent against the same CRD and moves a job from Created to Succeeded or Failed)."""

from __future__ import annotations

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import jsonschema
import pytest
import yaml
from kubernetes import client as k8s

from duogen.components.training.config import TrainConfig, load_config

sys.path.insert(0, str(Path(__file__).parent))
from k8s_checks import policy_violations  # noqa: E402

from duogen.platform.pytorchjob import ClusterSettings, JobFailed, as_dict, build_job, job_name, launch

CRD = Path(__file__).parent / "data" / "crds" / "kubeflow.org_pytorchjobs.yaml"
SUMMARY = {"stage": "stage2", "status": "finished", "step": 7, "model": "s3://b/m", "mlflow_run_id": "r1"}


@pytest.fixture(scope="module")
def schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def _settings(**kw) -> ClusterSettings:
    base = {"namespace": "ml", "image": "registry.example/duogen-gpu:1", "timeout_seconds": 20.0}
    return ClusterSettings(**{**base, **kw})


CONFIG = TrainConfig(
    stage="stage2",
    model="s3://runs/r/stage1/model",
    shards=["s3://runs/r/curate-web-0of1", "s3://runs/r/curate-synthetic-0of1"],
    out="/tmp/duogen-train",
    steps=300,
    mix={"synthetic": 0.75, "web": 0.25},
    tp=2,
    fp8="delayed",
    checkpoint_dir="s3://runs/r/stage2/checkpoints",
    export_uri="s3://runs/r/stage2/model",
)


def test_generated_jobs_validate_against_the_crd_and_carry_the_cluster_settings(schema):
    gpu = _settings(
        nodes=3,
        nproc_per_node=8,
        gpus_per_node=8,
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        env={"NCCL_DEBUG": "WARN"},
    )
    for settings in (_settings(), gpu):
        job = as_dict(build_job("duogen-r-stage2", "stage2", CONFIG.to_dict(), settings))
        jsonschema.validate(job, schema)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 2)
    assert job["spec"]["nprocPerNode"] == "8" and job["spec"]["runPolicy"]["backoffLimit"] == 3
    assert job["spec"]["runPolicy"]["ttlSecondsAfterFinished"] == 7 * 24 * 3600
    for spec in replicas.values():
        assert spec["restartPolicy"] == "ExitCode"
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch" and container["image"] == "registry.example/duogen-gpu:1"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert container["envFrom"] == [{"secretRef": {"name": "duogen-s3"}}]
        assert {"name": "NCCL_DEBUG", "value": "WARN"} in container["env"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        assert pod["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert pod["tolerations"][0]["effect"] == "NoSchedule"
    assert policy_violations([job]) == []  # the restricted profile, as the chart's pods (tests/k8s_checks.py)
    # the pods' command is `duogen train` with the whole config: it parses back to the same config
    command = replicas["Master"]["template"]["spec"]["containers"][0]["command"]
    assert command[:6] == ["python", "-m", "duogen.cli", "train", "stage2", "--quiet"]
    sets = [c.removeprefix("--set=") for c in command[6:]]
    assert load_config(None, sets) == CONFIG
    bad = as_dict(build_job("x", "stage2", {}, _settings()))
    bad["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_job_names_are_stable_dns_labels():
    assert job_name("Toy_Run", "stage1") == "duogen-toy-run-stage1"
    long = job_name("a" * 80, "stage2")
    assert len(long) <= 52 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)
    assert long == job_name("a" * 80, "stage2") != job_name("a" * 81, "stage2")


class StandIn:
    """Answers the REST paths the SDK calls for PyTorchJobs and their pods."""

    def __init__(self, schema: dict, outcome: str = "Succeeded", polls_to_finish: int = 2) -> None:
        self.jobs: dict[str, dict] = {}
        self.posts: list[dict] = []
        self.gets = 0
        self.outcome, self.polls = outcome, polls_to_finish
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(code)
                self.send_header(
                    "content-type", "text/plain" if isinstance(body, str) else "application/json"
                )
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                m = re.fullmatch(
                    r"/apis/kubeflow.org/v1/namespaces/([^/]+)/pytorchjobs", urlparse(self.path).path
                )
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                stand_in.posts.append(body)
                name = body["metadata"]["name"]
                try:
                    jsonschema.validate(body, schema)
                except jsonschema.ValidationError as err:
                    return self._send(422, {"kind": "Status", "reason": "Invalid", "message": err.message})
                if not m or name in stand_in.jobs:
                    return self._send(409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
                stand_in.jobs[name] = {**body, "status": {"conditions": []}, "_polls": 0}
                self._send(201, body)

            def do_GET(self):
                url = urlparse(self.path)
                job = re.fullmatch(r"/apis/kubeflow.org/v1/namespaces/([^/]+)/pytorchjobs/([^/]+)", url.path)
                if job:
                    found = stand_in.jobs.get(job.group(2))
                    if found is None:
                        return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                    stand_in.gets += 1
                    found["_polls"] += 1
                    kind = "Running" if found["_polls"] <= stand_in.polls else stand_in.outcome
                    condition = {"type": kind, "status": "True", "reason": f"PyTorchJob{kind}"}
                    if kind == "Failed":
                        condition |= {
                            "reason": "BackoffLimitExceeded",
                            "message": "pod master-0 exited 137 (OOMKilled)",
                        }
                    found["status"] = {"conditions": [condition]}
                    return self._send(200, {k: v for k, v in found.items() if k != "_polls"})
                if url.path.endswith("/pods"):
                    selector = parse_qs(url.query)["labelSelector"][0]
                    name = dict(p.split("=") for p in selector.split(","))["training.kubeflow.org/job-name"]
                    if name not in stand_in.jobs:
                        return self._send(200, {"kind": "PodList", "items": []})
                    pod = {
                        "metadata": {"name": f"{name}-master-0", "namespace": "ml"},
                        "status": {"phase": "Running"},
                    }
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "items": [pod]})
                if url.path.endswith("/log"):
                    name = url.path.split("/")[-2].removesuffix("-master-0")
                    polls = stand_in.jobs[name]["_polls"]
                    lines = [f"step {k}" for k in range(polls)]
                    if polls > stand_in.polls and stand_in.outcome == "Succeeded":
                        lines.append(json.dumps(SUMMARY))
                    return self._send(200, "\n".join(lines) + "\n")
                self._send(404, {"kind": "Status", "code": 404})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.configuration = k8s.Configuration()
        self.configuration.host = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture()
def stand_in(schema):
    server = StandIn(schema)
    yield server
    server.httpd.shutdown()


def _launch(server: StandIn, config=None, **kw):
    lines: list[str] = []
    summary = launch(
        "duogen-r-stage2",
        "stage2",
        config or CONFIG.to_dict(),
        _settings(**kw),
        server.configuration,
        poll_seconds=0.05,
        log=lines.append,
    )
    return summary, lines


def test_launch_creates_the_job_waits_streams_its_log_and_returns_the_summary(stand_in):
    summary, lines = _launch(stand_in)
    assert summary == SUMMARY
    assert len(stand_in.posts) == 1 and stand_in.posts[0]["metadata"]["namespace"] == "ml"
    assert lines[0] == "created PyTorchJob ml/duogen-r-stage2"
    assert "[duogen-r-stage2] step 0" in lines and f"[duogen-r-stage2] {json.dumps(SUMMARY)}" in lines
    assert lines.count("[duogen-r-stage2] step 0") == 1  # each log line once, however often it is read


def test_a_retried_step_reattaches_to_the_job_it_created(stand_in):
    _launch(stand_in)
    stand_in.polls += 10  # the job "runs" again for the second attempt to wait on
    stand_in.jobs["duogen-r-stage2"]["_polls"] = 0
    summary, lines = _launch(stand_in)
    assert summary == SUMMARY and len(stand_in.posts) == 1  # no second job
    assert lines[0] == "PyTorchJob ml/duogen-r-stage2 exists (a retried step): waiting on it"


def test_a_failed_job_fails_the_step_with_the_jobs_reason(schema):
    server = StandIn(schema, outcome="Failed")
    try:
        with pytest.raises(
            JobFailed, match=r"failed: BackoffLimitExceeded: pod master-0 exited 137 \(OOMKilled\)"
        ):
            _launch(server)
    finally:
        server.httpd.shutdown()


def test_a_rejected_job_and_a_job_that_never_ends_are_clear_errors(schema):
    server = StandIn(schema, polls_to_finish=10**6)
    try:
        with pytest.raises(JobFailed, match=r"creating PyTorchJob ml/duogen-r-stage2 failed: .*422"):
            _launch(server, nproc_per_node=0, config={"steps": 1}, node_selector={"a": 1})
        with pytest.raises(JobFailed, match="did not finish within 0 s"):
            _launch(server, timeout_seconds=0.0)
    finally:
        server.httpd.shutdown()
