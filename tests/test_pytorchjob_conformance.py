"""Conformance of the training pods with what the Kubeflow Training Operator gives them.

No operator can run here, so each PyTorchJob (the pipeline's, built by `platform/pytorchjob.py`, and the
kustomize overlays' rendered ones) is run as local "pods": one process group per replica, each with exactly
the environment the operator's code computes for that replica (`tests/operator_env.py`, ported from
kubeflow/trainer v1.9.4 `pkg/controller.v1/pytorch/envvar.go` and `elastic.go`; no MASTER_ADDR, RANK or
WORLD_SIZE for an elastic Worker-only job), running the pod's own container command. They train for real,
on 127.0.0.1 with gloo:

- 2 pods x 2 processes, TP 2 (so DP 2): the loss curve of one process (Stage 1 draws nothing at random, so
  two data-parallel ranks with one example each equal one process with both);
- a training process killed mid-run: torchrun's elastic agents in both pods restart the whole job, which
  resumes from its last checkpoint and continues the same curve (the operator's restart mechanism; a
  fixed-size job's `restartPolicy` restarts one pod while the others stall,
  `pkg/controller.v1/common/pod.go`);
- the rendered `cpu-dev` and `gpu-prod` pods at CPU size (their config file from the ConfigMap, the tiny
  preset and local data on top; gpu-prod's 8 processes per node run as 2 here).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from duogen.components.training.config import TrainConfig
from duogen.platform.pytorchjob import ClusterSettings, as_dict, build_job

sys.path.insert(0, str(Path(__file__).parent))
from operator_env import operator_env, start_pods, wait_pods  # noqa: E402
from test_manifests import kustomize  # noqa: E402

pytestmark = pytest.mark.slow  # jobs of 2x2 processes: .ci/run

DUOGEN = str(Path(sys.executable).parent / "duogen")
TOL = 1e-5


def config(out: Path, shards: str, steps: int, **kw) -> TrainConfig:
    base = dict(stage="stage1", model="tiny", shards=[shards], out=str(out), steps=steps, batch_size=1)
    base |= dict(warmup_steps=1, lr=1e-3, ckpt_every=100, log_every=100, tp=2)
    return TrainConfig(**{**base, **kw})


def single_losses(cfg: TrainConfig) -> list[float]:
    """The same stage in one process, with each step's whole batch (both data-parallel ranks' examples)."""
    sets = [f"--set={o}" for o in cfg.overrides() if not o.startswith(("tp=", "batch_size=", "out="))]
    sets += [f"--set=batch_size={2 * cfg.batch_size}", f"--set=out={cfg.out}-single", "--set=tp=1"]
    proc = subprocess.run([DUOGEN, "train", cfg.stage, "--quiet", *sets], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["losses"]


def pipeline_job(cfg: TrainConfig, nodes: int = 2, nproc: int = 2) -> dict:
    program = ["-m", "duogen.cli", "train", cfg.stage, "--quiet", *(f"--set={o}" for o in cfg.overrides())]
    settings = ClusterSettings(nodes=nodes, nproc_per_node=nproc, s3_secret=None)
    return as_dict(build_job("duogen-conformance-stage1", program, settings))


def assert_curve(got: list[float], want: list[float]) -> None:
    assert len(got) == len(want) and all(abs(a - b) <= TOL for a, b in zip(got, want, strict=True)), (
        got,
        want,
    )


def test_the_operators_environment_is_torchruns_alone():
    """What the pods get from the operator for the pipeline's job: torchrun's flags, no process ranks."""
    job = pipeline_job(config(Path("o"), "s", 1))
    envs = [operator_env(job, "Worker", i) for i in (0, 1)]
    assert (
        envs[0]
        == envs[1]
        == {
            "PYTHONUNBUFFERED": "1",
            "PET_NPROC_PER_NODE": "2",
            "PET_RDZV_ENDPOINT": "duogen-conformance-stage1-worker-0:23456",
            "PET_RDZV_BACKEND": "c10d",
            "PET_NNODES": "2:2",
            "PET_MAX_RESTARTS": "3",
        }
    )
    # the fixed-size job the pods ran before (a Master, nprocPerNode 2): RANK is the pod's, WORLD_SIZE the
    # processes' -- one process per pod would wait for ranks that never come
    legacy = copy.deepcopy(job)
    legacy["spec"].pop("elasticPolicy")
    pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    legacy["spec"]["pytorchReplicaSpecs"] = {"Master": pod | {"replicas": 1}, "Worker": pod | {"replicas": 1}}
    worker = operator_env(legacy, "Worker", 0)
    assert (worker["WORLD_SIZE"], worker["RANK"], worker["PET_NNODES"]) == ("4", "1", "2")
    assert "LOCAL_RANK" not in worker
    command = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "torch.distributed.run"]


def test_two_pods_of_two_processes_with_tp2_train_the_one_process_curve(shards, tmp_path):
    cfg = config(tmp_path / "run", shards, steps=4)
    pods = start_pods(pipeline_job(cfg), [], tmp_path)
    wait_pods(pods)
    result = json.loads(Path(cfg.result).read_text())
    assert result["status"] == "finished" and result["step"] == 4
    assert_curve(result["losses"], single_losses(cfg))


def test_a_killed_process_restarts_the_whole_job_from_its_checkpoint(shards, tmp_path):
    cfg = config(tmp_path / "run", shards, steps=10, ckpt_every=2)
    pods = start_pods(pipeline_job(cfg), [], tmp_path)
    latest = Path(cfg.checkpoints) / "latest"
    deadline = time.monotonic() + 300
    while not (latest.exists() and latest.read_text() >= "step-0000004"):
        assert time.monotonic() < deadline and all(p.proc.poll() is None for p in pods), "no checkpoint came"
        time.sleep(0.02)
    victims = pods[1].workers()
    assert len(victims) == 2  # the pod's agent runs one process per "GPU"
    subprocess.run(["kill", "-9", str(victims[0])], check=True)
    wait_pods(pods)
    result = json.loads(Path(cfg.result).read_text())
    assert result["status"] == "finished" and result["step"] == 10
    first = result["first_step"]
    assert 4 <= first < 10, "the job did not restart from a checkpoint"
    assert "restart" in pods[0].log.read_text().lower()  # the other pod's agent restarted its workers too
    assert_curve(result["losses"], single_losses(cfg)[first:])


@pytest.mark.parametrize(("overlay", "stage"), [("cpu-dev", "stage1"), ("gpu-prod", "stage2")])
def test_the_rendered_overlay_pods_train(shards, tmp_path, overlay, stage):
    objects = kustomize(f"overlays/{overlay}")
    (job,) = [o for o in objects if o["kind"] == "PyTorchJob" and o["metadata"]["name"].endswith(stage)]
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    files = tmp_path / "etc-duogen"
    files.mkdir()
    for name, text in config_map["data"].items():
        (files / name).write_text(text)
    job = copy.deepcopy(job)
    job["spec"]["nprocPerNode"] = "2"  # CPU size: gpu-prod's 8 GPUs per node are 2 processes here
    out = tmp_path / "run"
    local = ["model=tiny", f'shards=["{shards}"]', f"out={out}", "steps=2", "batch_size=1", "warmup_steps=1"]
    local += ["checkpoint_dir=null", "export_uri=null", "tracking_uri=null", "fp8=null", "ckpt_every=100"]
    pods = start_pods(job, [f"--set={s}" for s in local], tmp_path, mounts={"/etc/duogen": files})
    wait_pods(pods)
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "finished" and result["step"] == 2 and result["stage"] == stage
