"""Both training stages on toy-world shards: they learn, resume exactly, stop cleanly on SIGTERM, track."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from duogen.components.training.config import TrainConfig, load_config
from duogen.components.training.data import example_tokens, pack_by_token_budget
from duogen.components.training.loop import Trainer, ema_decay
from duogen.model.flow import TrainingExample
from duogen.model.pair import DuoGenPair

DUOGEN = str(Path(sys.executable).parent / "duogen")


def _cfg(shards, out, **kw):
    base = {
        "shards": [shards],
        "out": str(out),
        "steps": 6,
        "batch_size": 2,
        "warmup_steps": 2,
        "lr": 3e-3,
        "ckpt_every": 100,
        "log_every": 100,
    }
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_preempted_run_resumes_on_the_same_loss_curve(shards, tmp_path, stage):
    groups = {"dit_lr_ratio": 0.3} if stage == "stage2" else {}  # Stage 2's two lr groups resume too
    whole = Trainer(_cfg(shards, tmp_path / "whole", stage=stage, **groups), progress=False).train()
    assert whole.status == "finished" and len(whole.losses) == 6

    class Evicted(Trainer):
        def _step(self, step, position):
            loss = super()._step(step, position)
            if step == 2:
                self.stop_requested = True  # what the SIGTERM handler does
            return loss

    first = Evicted(_cfg(shards, tmp_path / "split", stage=stage, **groups), progress=False).train()
    assert first.status == "preempted" and sorted(first.losses) == [0, 1, 2]
    second = Trainer(_cfg(shards, tmp_path / "split", stage=stage, **groups), progress=False).train()
    assert second.status == "finished" and sorted(second.losses) == [3, 4, 5]
    for step in range(6):
        got = first.losses.get(step, second.losses.get(step))
        assert got == pytest.approx(whole.losses[step], abs=1e-6), step


def test_a_text_only_stage1_batch_still_gives_every_parameter_a_gradient():
    """DDP runs without `find_unused_parameters` (no graph search per step), so every backward must reach
    every trainable parameter: a micro-batch without pictures gives the vision tower zero gradients, not
    none. Without the loss's zero-weighted term the tower's gradients are None and a two-rank DDP run
    would stop at its next step waiting for them."""
    from duogen.components.training import stages
    from duogen.model.chat import TextPart, Turn
    from duogen.model.presets import get_preset

    pair = DuoGenPair.build(get_preset("tiny"), seed=0)
    spec = stages.get("stage1")
    model = spec.trainable(pair)
    text_only = pair.mllm.encode(
        [Turn("user", [TextPart("move the circle")]), Turn("assistant", [TextPart("ok")])]
    )
    assert not text_only.image_spans
    spec.loss(pair)([text_only]).backward()
    vision = {n for n, _ in model.model.visual.named_parameters()}
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    assert all(not p.grad.any() for n, p in model.model.visual.named_parameters()) and vision


def test_stage1_trains_only_the_mllm_and_stage2_only_the_dit(shards, tmp_path):
    import torch

    t1 = Trainer(_cfg(shards, tmp_path / "s1", stage="stage1", steps=1), progress=False)
    dit_before = {k: v.clone() for k, v in t1.pair.dit.state_dict().items()}
    t1.train()
    assert all(torch.equal(v, t1.pair.dit.state_dict()[k]) for k, v in dit_before.items())
    t2 = Trainer(_cfg(shards, tmp_path / "s2", stage="stage2", steps=1), progress=False)
    mllm_before = {k: v.clone() for k, v in t2.pair.mllm.state_dict().items()}
    t2.train()
    assert not t2.pair.mllm.training
    assert all(torch.equal(v, t2.pair.mllm.state_dict()[k]) for k, v in mllm_before.items())


def test_the_loop_trains_whatever_its_spec_names(shards, tmp_path):
    """A new stage is a spec, not a branch in the loop: one that trains only the DiT's connector (Stage 2's
    loss and examples otherwise) moves the connector and nothing else, and its name reaches the run. A loop
    that still picks its trainable module, loss or data by `cfg.stage` trains the whole DiT and fails."""
    import dataclasses

    from duogen.components.training import stages

    stage2 = stages.get("stage2")
    connector_only = dataclasses.replace(
        stage2,
        name="connector_only",
        trainable=lambda pair: pair.dit.crossattn_proj,
        param_groups=lambda model, cfg: [{"params": list(model.parameters())}],
    )
    trainer = Trainer(_cfg(shards, tmp_path, stage="stage2", steps=2), progress=False, spec=connector_only)
    before = {n: p.detach().clone() for n, p in trainer.pair.dit.named_parameters()}
    result = trainer.train()
    moved = {n for n, p in trainer.pair.dit.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith("crossattn_proj.") for n in moved), sorted(moved)[:5]
    assert len(moved) == len(list(trainer.pair.dit.crossattn_proj.parameters()))
    tags = sqlite3.connect(tmp_path / "mlflow.db").execute("select value from tags where key = 'stage'")
    assert [row[0] for row in tags] == ["connector_only"] and result.status == "finished"
    with pytest.raises(ValueError, match="stage must be one of stage1, stage2"):
        TrainConfig(stage="stage3")


@pytest.mark.parametrize("ratio", [0.1, 0.0])
def test_stage2_trains_the_connector_at_lr_and_the_dit_body_at_its_ratio(shards, tmp_path, ratio):
    """Adam's first step moves every parameter with a gradient by about its group's lr (times warm-up)."""
    trainer = Trainer(_cfg(shards, tmp_path, stage="stage2", steps=1, dit_lr_ratio=ratio), progress=False)
    before = {n: p.detach().clone() for n, p in trainer.pair.dit.named_parameters()}
    trainer.train()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in trainer.pair.dit.named_parameters()}
    connector = max(v for n, v in moved.items() if n.startswith("crossattn_proj."))
    body = max(v for n, v in moved.items() if not n.startswith("crossattn_proj."))
    step_lr = 3e-3 / 2  # lr x the first warm-up factor (1 of 2 steps)
    assert connector == pytest.approx(step_lr, rel=0.05)
    assert body == pytest.approx(ratio * step_lr, rel=0.05)  # 0: the body does not move at all
    with pytest.raises(ValueError, match="dit_lr_ratio"):
        TrainConfig(dit_lr_ratio=-0.1)


def test_ema_warms_up_to_its_decay():
    assert ema_decay(0.995, 0) == 0.1  # the first update mostly replaces the random initial weights
    assert ema_decay(0.995, 90) == 0.91
    assert ema_decay(0.995, 10_000) == 0.995
    share = 1.0  # of the initial weights after 300 steps: negligible, not 0.995**300 = 22%
    for step in range(300):
        share *= ema_decay(0.995, step)
    assert share < 1e-9


def test_a_short_runs_exported_ema_follows_its_training(shards, tmp_path):
    ema = Trainer(_cfg(shards, tmp_path / "ema", stage="stage2", steps=4, ema=0.999), progress=False)
    initial = {n: p.detach().clone() for n, p in ema.model.named_parameters()}
    exported = DuoGenPair.from_pretrained(ema.train().model_dir).dit.state_dict()
    raw = Trainer(_cfg(shards, tmp_path / "raw", stage="stage2", steps=4), progress=False).train()
    trained = DuoGenPair.from_pretrained(raw.model_dir).dit.state_dict()

    def moved(weights):
        return sum((weights[n] - p).abs().sum().item() for n, p in initial.items())

    # same data and seeds, so the raw run is the trajectory the EMA averaged; a constant 0.999 would have
    # kept 99.6% of the initial weights
    assert moved(exported) > 0.5 * moved(trained) > 0


def test_stage2_loss_goes_down_and_is_tracked(shards, tmp_path):
    import mlflow

    result = Trainer(_cfg(shards, tmp_path / "s2", stage="stage2", steps=30, ema=0.9), progress=False).train()
    first = sum(result.losses[s] for s in range(5)) / 5
    last = sum(result.losses[s] for s in range(25, 30)) / 5
    assert last < 0.8 * first
    client = mlflow.tracking.MlflowClient(f"sqlite:///{(tmp_path / 's2' / 'mlflow.db').resolve()}")
    run = client.get_run(result.run_id)
    assert run.data.params["stage"] == "stage2" and run.data.tags["checkpoint"].endswith("step-0000030")
    assert len(client.get_metric_history(result.run_id, "loss")) == 30
    assert (Path(result.model_dir) / "duogen_config.json").exists()
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to((tmp_path / "s2").resolve()) and (artifacts / "model" / "dit").is_dir()


def test_config_file_overrides_and_errors(tmp_path):
    (tmp_path / "c.toml").write_text('stage = "stage1"\nsteps = 7\nmix = { web = 2.0 }\n')
    cfg = load_config(tmp_path / "c.toml", ["lr=0.5", "ema=0.99", 'shards=["a", "b"]'])
    got = (cfg.stage, cfg.steps, cfg.lr, cfg.ema, cfg.shards, cfg.mix)
    assert got == ("stage1", 7, 0.5, 0.99, ["a", "b"], {"web": 2.0})
    with pytest.raises(ValueError, match="unknown training config keys \\['bogus'\\]"):
        load_config(None, ["bogus=1"])
    with pytest.raises(ValueError, match="stage must be"):
        load_config(None, ["stage=stage3"])


def _logged_steps(db) -> int:
    """Metric rows the run has written to its MLflow sqlite store so far."""
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_cli_sigterm_checkpoints_then_a_rerun_finishes(shards, tmp_path):
    config = {
        "shards": [shards],
        "out": str(tmp_path / "run"),
        "steps": 400,
        "batch_size": 1,
        "ckpt_every": 1000,
    }
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    cmd = [DUOGEN, "train", "stage2", "--config", str(tmp_path / "cfg.json"), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    db = tmp_path / "run" / "mlflow.db"
    # wait for logged steps (the SIGTERM handler is installed before the first step), not for a fixed time:
    # a loaded machine can take seconds to create the MLflow tables
    while _logged_steps(db) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "preempted" and 0 < summary["step"] < 400
    ckpt = (tmp_path / "run" / "checkpoints" / "latest").read_text()
    assert ckpt == f"step-{summary['step']:07d}"
    rerun = subprocess.run(
        [*cmd, "--set", f"steps={summary['step'] + 2}"], capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["step"] == summary["step"] + 2


def test_stage2_token_budget_packs_the_step_and_keeps_every_example(shards, tmp_path):
    """A step's examples go into as many packs as the token budget needs; none is dropped, the loss is the
    same mean over examples (so one big pack and budget packs train the same data)."""
    plain_cfg = _cfg(shards, tmp_path / "plain", stage="stage2", batch_size=3, grad_accum=2)
    plain = Trainer(plain_cfg, progress=False)
    assert [len(b) for b in plain.micro_batches(0)] == [3, 3]
    patch = plain.pair.config.dit.patch_size
    tokens = [example_tokens(ex, patch) for b in plain.micro_batches(0) for ex in b]
    budget = max(max(tokens), sum(tokens) // 3)  # a third of the step: at least three packs
    cfg = _cfg(shards, tmp_path / "budget", stage="stage2", batch_size=3, grad_accum=2, token_budget=budget)
    trainer = Trainer(cfg, progress=False)
    batches = trainer.micro_batches(0)
    sizes = [[example_tokens(ex, patch) for ex in b] for b in batches]
    assert sum(len(b) for b in batches) == 6 and len(batches) >= 3
    assert all(sum(s) <= budget for s in sizes) and [t for s in sizes for t in s] == tokens  # in order
    result = trainer.train()
    assert result.status == "finished" and all(v == v for v in result.losses.values())


def test_pack_by_token_budget_keeps_order_and_isolates_oversized_examples():
    def ex(*sides):
        return TrainingExample([torch.zeros(4, s, s) for s in sides], len(sides) - 1, torch.zeros(1, 8))

    examples = [ex(4), ex(4, 4), ex(16), ex(4)]  # 4, 8, 64, 4 tokens with 2x2 patches
    packs = pack_by_token_budget(examples, 12, (1, 2, 2))
    assert [[example_tokens(e, (1, 2, 2)) for e in p] for p in packs] == [[4, 8], [64], [4]]
    assert [e for p in packs for e in p] == examples


@pytest.mark.parametrize("fp8", [None, "delayed"])
def test_a_one_process_run_trains_on_its_gpu(shards, tmp_path, monkeypatch, fp8):
    """No process group (WORLD_SIZE=1, tp=1): the pair still goes to this process's GPU, before any
    Transformer Engine / FP8 layer is built, and autocast is on. CUDA is faked (this machine has none):
    `is_available` says yes, and moves and TE layer swaps are recorded instead of done."""
    import duogen.components.training.parallelize as par

    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    events = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: events.append(("set_device", str(d))))
    monkeypatch.setattr(DuoGenPair, "to", lambda self, d: events.append(("to", str(d))) or self)
    monkeypatch.setattr(par, "parallelize_dit", lambda dit, tp, fp8: events.append(("te_layers", tp, fp8)))
    trainer = Trainer(_cfg(shards, tmp_path, stage="stage2", fp8=fp8), progress=False)
    assert trainer.parallel is None and trainer.device == torch.device("cuda", 1)
    expected = [("set_device", "cuda:1"), ("to", "cuda:1")] + ([("te_layers", 1, "delayed")] if fp8 else [])
    assert events == expected
    monkeypatch.setattr(torch, "autocast", lambda device, dtype, enabled: (device, dtype, enabled))
    assert trainer.autocast() == ("cuda", torch.bfloat16, True)  # a CPU build cannot make a CUDA autocast
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = Trainer(_cfg(shards, tmp_path / "cpu", stage="stage2"), progress=False)
    assert cpu.device == torch.device("cpu") and cpu.autocast() == ("cpu", torch.bfloat16, False)


def test_checkpoints_keep_every_rng_cuda_and_megatrons_tracker_included(tmp_path, monkeypatch):
    """A resumed run draws what the uninterrupted one would: CPU, Python and NumPy generators, CUDA's (faked
    here: this machine has none) and megatron's model-parallel tracker (a training tracker set by hand)."""
    import random

    import numpy as np
    from megatron.core.tensor_parallel import random as megatron_random

    from duogen.components.training import checkpoint

    monkeypatch.setattr(megatron_random, "_CUDA_RNG_STATE_TRACKER", None)  # restored after the test
    monkeypatch.setattr(megatron_random, "_CUDA_RNG_STATE_TRACKER_INITIALIZED", False)
    megatron_random.initialize_rng_tracker()
    tracker = megatron_random.get_cuda_rng_tracker()
    tracker.set_states({"model-parallel-rng": torch.arange(16, dtype=torch.uint8)})
    cuda = {"states": [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in cuda["states"]])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: cuda.update(states=list(states)))
    blob = checkpoint._rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123), random.seed(5), np.random.seed(7)  # a restarted process starts elsewhere
    cuda["states"] = [torch.zeros(8, dtype=torch.uint8)] * 2
    tracker.set_states({"model-parallel-rng": torch.zeros(16, dtype=torch.uint8)})
    checkpoint._set_rng_state(blob)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert np.random.rand() == expected[2]
    assert [s.tolist() for s in cuda["states"]] == [list(range(8)), list(range(8, 16))]
    assert torch.equal(tracker.get_states()["model-parallel-rng"], torch.arange(16, dtype=torch.uint8))


def test_ranks_read_only_their_own_examples_and_keep_no_images_in_memory(shards, tmp_path, monkeypatch):
    """The trainer keeps an index (sample text + where its images sit in the shard); each data-parallel
    rank reads the image bytes of its own examples only, when it draws them, and the two ranks together
    read exactly what one process reads for the same global batch. From a checkpointed position the draw
    continues as the uninterrupted run's."""
    from duogen.components.curation.shards import IndexedSample

    reads = []
    real = IndexedSample.read_images
    monkeypatch.setattr(IndexedSample, "read_images", lambda self: reads.append(self.sample.id) or real(self))
    trainer = Trainer(_cfg(shards, tmp_path, stage="stage1", batch_size=2, grad_accum=2), progress=False)
    assert reads == [] and all(isinstance(e, IndexedSample) for e in trainer.samples)
    assert not any(isinstance(v, bytes) for e in trainer.samples for v in vars(e).values())

    def ids_read(dp_rank: int, dp_size: int, position: int) -> list[str]:
        trainer.dp_rank, trainer.dp_size = dp_rank, dp_size
        reads.clear()
        trainer.micro_batches(position)
        return list(reads)

    whole = ids_read(0, 1, position=8)  # one process, batch 2 x 2 accumulation
    rank0, rank1 = ids_read(0, 2, position=8), ids_read(1, 2, position=8)
    assert len(rank0) == len(rank1) == 4  # each rank reads its own share
    assert sorted(rank0 + rank1) == sorted(whole + ids_read(0, 1, position=12))  # = the global batch of 8
    resumed = Trainer(
        _cfg(shards, tmp_path / "again", stage="stage1", batch_size=2, grad_accum=2), progress=False
    )
    resumed.dp_rank, resumed.dp_size = 1, 2
    reads.clear()
    resumed.micro_batches(8)
    assert reads == rank1  # a restarted process at the checkpointed position draws the same examples


def test_the_trainer_decodes_with_dali_when_asked_and_on_gpus_by_default(shards, tmp_path):
    trainer = Trainer(_cfg(shards, tmp_path, stage="stage2", image_decoder="dali"), progress=False)
    trainer.micro_batches(0)
    assert trainer.decode.decoded > 0  # every image of the step went through DALI
    assert Trainer(_cfg(shards, tmp_path / "pil", stage="stage2"), progress=False).decode is None  # CPU: PIL
    with pytest.raises(ValueError, match="image_decoder must be"):
        _cfg(shards, tmp_path, image_decoder="opencv")
