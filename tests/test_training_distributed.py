"""Distributed training as a user runs it: `duogen train STAGE --nproc 2` (torchrun on 127.0.0.1, gloo).

Tensor parallelism (TP=2) and data parallelism (DP=2) give the losses of one process; a run preempted under
TP=2 with its checkpoints on a real S3 server (SeaweedFS on 127.0.0.1) resumes, in one process and again
under TP=2, on the loss curve of an uninterrupted run. Each torchrun run is a few tiny steps (startup
dominates: ~30 s on 2 cores).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from duogen.components.training.config import TrainConfig
from duogen.components.training.loop import Trainer
from duogen.model.pretrained import pretrained_dir
from duogen.platform import storage

sys.path.insert(0, str(Path(__file__).parent))
from s3_server import s3_server  # noqa: E402

pytestmark = pytest.mark.slow  # torchrun jobs of several processes: .ci/run

DUOGEN = str(Path(sys.executable).parent / "duogen")
STEPS = 4
TOL = 1e-5


def train(stage: str, out: Path, shards: str, *sets: str, nproc: int = 1, env=None, expect_ok=True):
    """`duogen train` in a subprocess; returns (JSON summary of rank 0, completed process)."""
    base = [f'shards=["{shards}"]', f"out={out}", f"steps={STEPS}", "batch_size=2", "warmup_steps=1"]
    base += ["lr=1e-3", "ckpt_every=100", "log_every=100"]
    cmd = [DUOGEN, "train", stage, "--nproc", str(nproc), "--quiet"]
    cmd += [f"--set={item}" for item in [*base, *sets]]
    run_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=run_env, timeout=300)
    if expect_ok:
        assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, (proc.stdout[-2000:], proc.stderr[-4000:])  # rank 0 alone prints
    return json.loads(lines[0]), proc


def exported(model_dir: str, part: str) -> dict[str, torch.Tensor]:
    weights = {}
    for f in sorted((Path(model_dir) / part).glob("*.safetensors")):
        weights.update(load_file(f))
    return weights


def assert_same_losses(got: list[float], want: list[float]) -> None:
    assert len(got) == len(want)
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        assert abs(a - b) <= TOL, (step, got, want)


@pytest.fixture(scope="module")
def single(shards, tmp_path_factory):
    """Uninterrupted one-process runs of both stages: the reference curves."""
    root = tmp_path_factory.mktemp("single")
    return {stage: train(stage, root / stage, shards)[0] for stage in ("stage1", "stage2")}


@pytest.mark.parametrize("stage", ["stage2", "stage1"])
def test_tp2_under_torchrun_matches_one_process(shards, single, tmp_path, stage):
    summary, _ = train(stage, tmp_path / "tp2", shards, "tp=2", nproc=2)
    assert summary["status"] == "finished" and summary["step"] == STEPS
    assert_same_losses(summary["losses"], single[stage]["losses"])
    part = "dit" if stage == "stage2" else "mllm"  # rank 0 exported the gathered dense weights
    got, want = exported(summary["model"], part), exported(single[stage]["model"], part)
    # the steps do train: the weights left the shipped parts they started from (a loss curve of 4 steps
    # from pretrained parts is noise, so the weights say it; Stage 2 moves the connector, crossattn_proj)
    start = {}
    for f in sorted(pretrained_dir(part, "toy").glob("*.safetensors")):
        start.update(load_file(f))
    assert start.keys() == want.keys()
    assert any(not torch.equal(want[k], start[k]) for k in start)
    assert got.keys() == want.keys()
    assert all(got[k].shape == want[k].shape for k in want)
    for k in want:  # summation order differs under TP; compounded over the steps: relative to the weight
        torch.testing.assert_close(got[k], want[k], atol=TOL, rtol=10 * TOL, msg=k)


def test_dp2_splits_the_batch_over_ranks(shards, single, tmp_path):
    """Two data-parallel ranks with one example each = one process with both (Stage 1 draws nothing)."""
    summary, _ = train("stage1", tmp_path / "dp2", shards, "batch_size=1", nproc=2)
    assert_same_losses(summary["losses"], single["stage1"]["losses"])


@pytest.fixture
def s3(tmp_path):
    with s3_server(tmp_path / "s3") as server:
        server.create_bucket("ckpt")
        yield server


def test_preempted_tp2_run_resumes_from_s3_on_the_same_curve(shards, single, tmp_path, s3):
    """Checkpoints on S3: TP=2 stopped after step 2 (as an eviction would), resumed in one process for a
    step (TP shards -> dense), then under TP=2 again (dense -> shards)."""
    out, url = tmp_path / "run", "s3://ckpt/runs/a"
    args = ("stage2", out, shards, f"checkpoint_dir={url}")
    first, proc = train(*args, "tp=2", "stop_at=2", nproc=2, env=s3.env, expect_ok=False)
    assert proc.returncode != 0 and first["status"] == "preempted" and first["step"] == 2
    second, proc = train(*args, "stop_at=3", nproc=1, env=s3.env, expect_ok=False)
    assert proc.returncode == 143 and (second["first_step"], second["step"]) == (2, 3)
    third, _ = train(*args, "tp=2", nproc=2, env=s3.env)
    assert third["status"] == "finished" and third["first_step"] == 3
    assert_same_losses(first["losses"] + second["losses"] + third["losses"], single["stage2"]["losses"])
    fs = s3.filesystem()
    assert fs.cat_file("ckpt/runs/a/latest").decode() == f"step-{STEPS:07d}"
    assert {p.rsplit("/", 1)[-1] for p in fs.ls("ckpt/runs/a")} >= {"step-0000002", "step-0000003", "latest"}
    assert not (out / "checkpoints").exists()


# --- single process: the errors a user can make ------------------------------------------------------------
def test_tp_must_divide_the_processes(shards, tmp_path):
    cfg = TrainConfig(shards=[shards], out=str(tmp_path), tp=2)
    with pytest.raises(ValueError, match=r"tp=2 must divide the number of processes \(1\).*--nproc"):
        Trainer(cfg)
    with pytest.raises(ValueError, match="unknown fp8 recipe 'fp4'"):
        TrainConfig(fp8="fp4")
    from duogen.cli import main

    with pytest.raises(SystemExit, match="tp=2 must divide --nproc 3"):
        main(["train", "stage2", "--nproc", "3", "--set", "tp=2"])


def test_s3_without_s3fs_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs -> ImportError
    from fsspec.registry import _registry

    monkeypatch.delitem(_registry, "s3", raising=False)
    with pytest.raises(ImportError, match=r"s3:// storage needs s3fs \(pip install s3fs\)"):
        storage.dcp_writer("s3://bucket/ckpt/step-0000001")


def test_s3_endpoint_from_the_environment(monkeypatch):
    for name in storage.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert storage.storage_options("s3://b/p") == {}
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://minio:9000")
    assert storage.storage_options("s3://b/p") == {"endpoint_url": "http://minio:9000"}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert storage.storage_options("s3://b/p") == {"endpoint_url": "http://127.0.0.1:1"}
    assert storage.storage_options("/local/path") == {}
    assert storage.join("s3://b/p", "latest") == "s3://b/p/latest"
    assert TrainConfig(out="o").checkpoints == str(Path("o") / "checkpoints")
    assert TrainConfig(checkpoint_dir="s3://b/p").checkpoints == "s3://b/p"
