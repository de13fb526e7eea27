"""The PyTorchJob launcher. No Kubernetes API server can run here, so: every generated job is validated
against the real CRD (kubeflow/training-operator release-1.9, copied into tests/data/crds) with jsonschema,
and the launcher's create / re-attach / replace-a-failed-job / wait / log / failure paths run through the
kubeflow-training SDK against a stand-in HTTP server on 127.0.0.1 that answers the PyTorchJob and pod REST
paths the SDK calls (it validates what it is sent against the same CRD, moves a job from Created to
Succeeded or Failed, and records every call: the verbs the chart's Role must grant). What the pods do with
the operator's environment is tests/test_pytorchjob_conformance.py."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import jsonschema
import pytest
import yaml
from kubernetes import client as k8s

from duogen.components.training.config import TrainConfig, load_config

sys.path.insert(0, str(Path(__file__).parent))
from http_stub import JSONHandler, serve  # noqa: E402
from k8s_checks import policy_violations  # noqa: E402

from duogen.platform.pytorchjob import ClusterSettings, JobFailed, as_dict, build_job, job_name, launch

CRD = Path(__file__).parent / "data" / "crds" / "kubeflow.org_pytorchjobs.yaml"
SUMMARY = {"stage": "stage2", "status": "finished", "step": 7, "model": "s3://b/m", "mlflow_run_id": "r1"}
PROGRAM = ["-m", "duogen.cli", "train", "stage2", "--quiet"]


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
        image_pull_secret="registry",
    )
    program = [*PROGRAM, *(f"--set={o}" for o in CONFIG.overrides())]
    for settings in (_settings(), gpu):
        job = as_dict(build_job("duogen-r-stage2", program, settings, {"duogen/stage": "stage2"}))
        jsonschema.validate(job, schema)
    spec = job["spec"]
    # one Worker pod per node under a fixed-size elastic policy: torchrun's rendezvous and restarts
    assert (
        set(spec["pytorchReplicaSpecs"]) == {"Worker"}
        and spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    )
    assert spec["elasticPolicy"] == {
        "rdzvBackend": "c10d",
        "minReplicas": 3,
        "maxReplicas": 3,
        "maxRestarts": 3,
    }
    assert spec["nprocPerNode"] == "8" and spec["runPolicy"]["backoffLimit"] == 3
    assert spec["runPolicy"]["ttlSecondsAfterFinished"] == 7 * 24 * 3600
    worker = spec["pytorchReplicaSpecs"]["Worker"]
    assert worker["restartPolicy"] == "OnFailure"
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "pytorch" and container["image"] == "registry.example/duogen-gpu:1"
    assert container["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456}]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["envFrom"] == [{"secretRef": {"name": "duogen-s3"}}]
    assert {"name": "NCCL_DEBUG", "value": "WARN"} in container["env"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert pod["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0]["effect"] == "NoSchedule" and pod["imagePullSecrets"] == [
        {"name": "registry"}
    ]
    assert job["metadata"]["labels"]["duogen/stage"] == "stage2"
    assert policy_violations([job]) == []  # the restricted profile, as the chart's pods (tests/k8s_checks.py)
    # the pods run torchrun over the caller's program; `duogen train` with the whole config parses back
    command = container["command"]
    assert command[:3] == ["python", "-m", "torch.distributed.run"] and command[3:8] == PROGRAM
    assert load_config(None, [c.removeprefix("--set=") for c in command[8:]]) == CONFIG
    bad = as_dict(build_job("x", PROGRAM, _settings()))
    bad["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_job_names_are_stable_dns_labels():
    assert job_name("Toy_Run", "stage1") == "duogen-toy-run-stage1"
    long = job_name("a" * 80, "stage2")
    assert len(long) <= 52 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long)
    assert long == job_name("a" * 80, "stage2") != job_name("a" * 81, "stage2")


class StandIn:
    """Answers the REST paths the SDK calls for PyTorchJobs and their pods, and records each call."""

    def __init__(self, schema: dict, result: Path, outcome: str = "Succeeded", polls_to_finish: int = 2):
        self.jobs: dict[str, dict] = {}
        self.posts: list[dict] = []
        self.calls: set[tuple[str, str]] = set()  # (verb, resource)
        self.outcome, self.polls, self.result = outcome, polls_to_finish, result
        stand_in = self

        class Handler(JSONHandler):
            _send = JSONHandler.send_json

            def do_POST(self):
                m = re.fullmatch(
                    r"/apis/kubeflow.org/v1/namespaces/([^/]+)/pytorchjobs", urlparse(self.path).path
                )
                stand_in.calls.add(("create", "pytorchjobs"))
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

            def do_DELETE(self):
                job = re.fullmatch(r"/apis/kubeflow.org/v1/namespaces/([^/]+)/pytorchjobs/([^/]+)", self.path)
                stand_in.calls.add(("delete", "pytorchjobs"))
                if not job or stand_in.jobs.pop(job.group(2), None) is None:
                    return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                self._send(200, {"kind": "Status", "status": "Success"})

            def do_GET(self):
                url = urlparse(self.path)
                job = re.fullmatch(r"/apis/kubeflow.org/v1/namespaces/([^/]+)/pytorchjobs/([^/]+)", url.path)
                if job:
                    stand_in.calls.add(("get", "pytorchjobs"))
                    found = stand_in.jobs.get(job.group(2))
                    if found is None:
                        return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                    if (
                        not found["status"]["conditions"]
                        or found["status"]["conditions"][0]["type"] == "Running"
                    ):
                        found["_polls"] += 1
                        kind = "Running" if found["_polls"] <= stand_in.polls else stand_in.outcome
                        condition = {"type": kind, "status": "True", "reason": f"PyTorchJob{kind}"}
                        if kind == "Failed":
                            condition |= {
                                "reason": "BackoffLimitExceeded",
                                "message": "pod worker-1 exited 137 (OOMKilled)",
                            }
                        if kind == "Succeeded":  # rank 0 wrote its result before the pods ended
                            stand_in.result.write_text(json.dumps(SUMMARY))
                        found["status"] = {"conditions": [condition]}
                    return self._send(200, {k: v for k, v in found.items() if k != "_polls"})
                if url.path.endswith("/pods"):
                    stand_in.calls.add(("list", "pods"))
                    selector = parse_qs(url.query)["labelSelector"][0]
                    labels = dict(p.split("=") for p in selector.split(","))
                    name = labels["training.kubeflow.org/job-name"]
                    assert labels.get("training.kubeflow.org/replica-type") in (None, "worker")
                    if name not in stand_in.jobs:
                        return self._send(200, {"kind": "PodList", "items": []})
                    pod = {
                        "metadata": {"name": f"{name}-worker-0", "namespace": "ml"},
                        "status": {"phase": "Running"},
                    }
                    return self._send(200, {"kind": "PodList", "apiVersion": "v1", "items": [pod]})
                if url.path.endswith("/log"):
                    stand_in.calls.add(("get", "pods/log"))
                    name = url.path.split("/")[-2].removesuffix("-worker-0")
                    polls = stand_in.jobs[name]["_polls"]
                    return self._send(200, "\n".join(f"step {k}" for k in range(polls)) + "\n")
                self._send(404, {"kind": "Status", "code": 404})

        self.httpd, self.url = serve(Handler)
        self.configuration = k8s.Configuration()
        self.configuration.host = self.url

    def add_job(self, name: str, condition: str | None) -> None:
        """A job of this run that a previous attempt of the step created: still running, or failed."""
        job = as_dict(build_job(name, PROGRAM, _settings()))
        conditions = (
            [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded"}] if condition else []
        )
        self.jobs[name] = {**job, "status": {"conditions": conditions}, "_polls": 0}


@pytest.fixture()
def stand_in(schema, tmp_path):
    server = StandIn(schema, tmp_path / "result.json")
    yield server
    server.httpd.shutdown()


def _launch(server: StandIn, **kw):
    lines: list[str] = []
    summary = launch(
        "duogen-r-stage2",
        PROGRAM,
        _settings(**kw),
        str(server.result),
        {"duogen/stage": "stage2"},
        server.configuration,
        poll_seconds=0.05,
        log=lines.append,
    )
    return summary, lines


def test_launch_creates_the_job_waits_streams_its_log_and_returns_the_result(stand_in):
    summary, lines = _launch(stand_in)
    assert summary == SUMMARY
    assert len(stand_in.posts) == 1 and stand_in.posts[0]["metadata"]["namespace"] == "ml"
    assert lines[0] == "created PyTorchJob ml/duogen-r-stage2"
    assert "[duogen-r-stage2] step 0" in lines
    assert lines.count("[duogen-r-stage2] step 0") == 1  # each log line once, however often it is read
    # the verbs the chart's Role grants on pytorchjobs are exactly the ones the launcher uses
    assert {v for v, r in stand_in.calls if r == "pytorchjobs"} <= {"create", "get", "delete"}
    assert {("list", "pods"), ("get", "pods/log")} <= stand_in.calls


def test_a_retried_step_reattaches_to_its_running_job(stand_in):
    stand_in.add_job("duogen-r-stage2", None)
    summary, lines = _launch(stand_in)
    assert summary == SUMMARY and stand_in.posts == []  # no second job
    assert lines[0] == "PyTorchJob ml/duogen-r-stage2 exists (a retried step): waiting on it"


def test_a_retried_step_replaces_its_failed_job(stand_in):
    stand_in.add_job("duogen-r-stage2", "Failed")
    summary, lines = _launch(stand_in)
    assert summary == SUMMARY and len(stand_in.posts) == 1  # deleted, then created again
    assert ("delete", "pytorchjobs") in stand_in.calls
    assert lines[:2] == [
        "PyTorchJob ml/duogen-r-stage2 of this run failed before: deleting it to start again",
        "created PyTorchJob ml/duogen-r-stage2",
    ]


def test_a_failed_job_fails_the_step_with_the_jobs_reason(schema, tmp_path):
    server = StandIn(schema, tmp_path / "result.json", outcome="Failed")
    try:
        with pytest.raises(
            JobFailed, match=r"failed: BackoffLimitExceeded: pod worker-1 exited 137 \(OOMKilled\)"
        ):
            _launch(server)
    finally:
        server.httpd.shutdown()


def test_a_rejected_job_a_job_that_never_ends_and_a_missing_result_are_clear_errors(schema, tmp_path):
    server = StandIn(schema, tmp_path / "result.json", polls_to_finish=10**6)
    try:
        with pytest.raises(JobFailed, match=r"creating PyTorchJob ml/duogen-r-stage2 failed: .*422"):
            _launch(server, nproc_per_node=0, node_selector={"a": 1})
        with pytest.raises(JobFailed, match="did not finish within 0 s"):
            _launch(server, timeout_seconds=0.0)
    finally:
        server.httpd.shutdown()
    server = StandIn(schema, tmp_path / "written-elsewhere.json")
    try:  # the job succeeds, but nothing was written where the step reads its result
        with pytest.raises(JobFailed, match="wrote no result"):
            launch("duogen-r-stage2", PROGRAM, _settings(), str(tmp_path / "missing.json"),
                   configuration=server.configuration, poll_seconds=0.05, log=lambda _: None)  # fmt: skip
    finally:
        server.httpd.shutdown()
