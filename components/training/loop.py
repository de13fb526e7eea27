"""The training loop of both stages: AdamW, warmup + cosine, clipping, accumulation, EMA, checkpoints, MLflow.

Stage 1 trains only the MLLM (next-token loss; user turns and vision tokens masked, `<BOV>` in the loss).
Stage 2 freezes the MLLM (no grads, eval mode) and trains connector + DiT with flow matching. Everything a
step draws at random (which examples, which target image, timesteps, noise) is seeded by the step or the
example position, so a run resumed from a checkpoint continues exactly the loss curve of an uninterrupted
one. SIGTERM (a pod eviction) finishes the current step, writes a checkpoint and stops.
"""

from __future__ import annotations

import copy
import math
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from duogen.model.flow import flow_matching_loss
from duogen.model.pair import DuoGenPair
from duogen.model.presets import PRESETS, get_preset

from . import checkpoint
from .config import TrainConfig
from .data import iter_samples, stage1_example, stage2_example


@dataclass
class TrainResult:
    status: str  # "finished" or "preempted"
    step: int
    losses: dict[int, float]
    model_dir: str | None
    run_id: str | None
    seconds: float


def shard_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(p.glob("shard-*.tar")) if p.is_dir() else [p]
    if not out:
        raise ValueError(f"no shards found in {paths}")
    return out


def warmup_cosine(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool = True) -> None:
        self.cfg, self.progress = cfg, progress
        torch.manual_seed(cfg.seed)
        self.pair = (
            DuoGenPair.build(get_preset(cfg.model), seed=cfg.seed)
            if cfg.model in PRESETS
            else DuoGenPair.from_pretrained(cfg.model)
        )
        # The evaluation split (held out by hash in the synthetic stage) never trains.
        self.samples = [
            (s, images)
            for s, images in iter_samples(shard_files(cfg.shards))
            if s.lineage.stages.get("split") != "eval"
        ]
        if cfg.stage == "stage2":
            self.samples = [
                s for s in self.samples if any(p.type == "bov" for t in s[0].turns for p in t.parts)
            ]
        if not self.samples:
            raise ValueError("the shards hold no usable samples for " + cfg.stage)
        weights = [cfg.mix.get(s.source, 0.0 if cfg.mix else 1.0) for s, _ in self.samples]
        if sum(weights) <= 0:
            raise ValueError(
                f"mix {cfg.mix} gives no weight to the sources {sorted({s.source for s, _ in self.samples})}"
            )
        self.weights = weights
        self.model = self.pair.mllm.model if cfg.stage == "stage1" else self.pair.dit
        for p in self.pair.parameters():
            p.requires_grad_(False)
        self.pair.eval()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.model.train()
        if cfg.activation_checkpointing:
            if cfg.stage == "stage1":
                self.model.gradient_checkpointing_enable()
            else:
                self.pair.dit.gradient_checkpointing = True
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: warmup_cosine(s, cfg))
        self.ema = copy.deepcopy(self.pair.dit).eval() if cfg.ema and cfg.stage == "stage2" else None
        self.stop_requested = False

    # --- data -------------------------------------------------------------------------------------------
    def example_at(self, position: int):
        """The example at a global data position: drawn by the mix weights, seeded by the position."""
        rng = random.Random(f"{self.cfg.seed}:{position}")
        sample, images = self.samples[rng.choices(range(len(self.samples)), self.weights)[0]]
        if self.cfg.stage == "stage1":
            return stage1_example(self.pair, sample, images)
        return stage2_example(self.pair, sample, images, rng, self.cfg.text_dropout)

    def micro_loss(self, step: int, micro: int, position: int) -> torch.Tensor:
        examples = [self.example_at(position + i) for i in range(self.cfg.batch_size)]
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.cuda.is_available())
        with autocast:
            if self.cfg.stage == "stage1":
                return torch.stack([self.pair.mllm.forward(e, with_loss=True).loss for e in examples]).mean()
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step * 131 + micro)
            return flow_matching_loss(self.pair.dit, examples, self.pair.config.flow, gen)

    # --- loop -------------------------------------------------------------------------------------------
    def _on_sigterm(self, signum, frame) -> None:
        self.stop_requested = True

    def train(self) -> TrainResult:
        cfg, out = self.cfg, Path(self.cfg.out)
        ckpt_dir = out / "checkpoints"
        start_step, position = 0, 0
        if (resume := checkpoint.latest(ckpt_dir)) is not None:
            start_step, position = checkpoint.load(resume, self.model, self.optimizer, self.scheduler)
        tracker = self._tracker(resumed=resume is not None)
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        losses: dict[int, float] = {}
        started = time.perf_counter()
        status = "finished"
        completed = start_step
        try:
            bar = tqdm(
                total=cfg.steps, initial=start_step, desc=cfg.stage, unit="step", disable=not self.progress
            )
            for step in range(start_step, cfg.steps):
                loss = self._step(step, position)
                completed = step + 1
                position += cfg.batch_size * cfg.grad_accum
                losses[step] = loss
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if tracker:
                    tracker.metrics({"loss": loss, "lr": self.scheduler.get_last_lr()[0]}, step)
                if (step + 1) % cfg.log_every == 0:
                    bar.write(f"{cfg.stage} step {step + 1}/{cfg.steps} loss {loss:.4f}")
                last = step + 1 == cfg.steps
                if self.stop_requested or last or (step + 1) % cfg.ckpt_every == 0:
                    path = checkpoint.save(
                        ckpt_dir, step + 1, self.model, self.optimizer, self.scheduler, position
                    )
                    if tracker:
                        tracker.tag("checkpoint", str(path.resolve()))
                if self.stop_requested and not last:
                    status = "preempted"
                    break
            bar.close()
            model_dir = None
            if status == "finished":
                model_dir = self._export(out / "model")
                if tracker:
                    tracker.artifacts(model_dir, "model")
        finally:
            signal.signal(signal.SIGTERM, previous)
            if tracker:
                tracker.close("FINISHED" if status == "finished" else "KILLED")
        run_id = tracker.run_id if tracker else None
        seconds = time.perf_counter() - started
        return TrainResult(status, completed, losses, str(model_dir) if model_dir else None, run_id, seconds)

    def _step(self, step: int, position: int) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(self.cfg.grad_accum):
            loss = self.micro_loss(step, micro, position + micro * self.cfg.batch_size) / self.cfg.grad_accum
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            with torch.no_grad():
                for e, p in zip(self.ema.parameters(), self.pair.dit.parameters(), strict=True):
                    e.lerp_(p, 1 - self.cfg.ema)
        return total

    def _export(self, path: Path) -> Path:
        """The trained pair in `from_pretrained` format (the EMA DiT when one is kept)."""
        if self.ema is not None:
            self.pair.dit.load_state_dict(self.ema.state_dict())
        self.pair.eval().save_pretrained(path)
        return path

    def _tracker(self, resumed: bool):
        from duogen.platform.tracking import Tracker, default_artifacts, default_uri

        cfg = self.cfg
        tags = {"stage": cfg.stage, "resumed": str(resumed)}
        if cfg.pipeline_run_id:
            tags["pipeline_run_id"] = cfg.pipeline_run_id
        local = cfg.tracking_uri is None
        uri = default_uri(cfg.out) if local else cfg.tracking_uri
        tracker = Tracker(uri, cfg.experiment, cfg.stage, tags, default_artifacts(cfg.out) if local else None)
        tracker.params(cfg.to_dict())
        tracker.config(cfg.to_dict())
        tracker.params({"samples": len(self.samples), **dict(Counter(s.source for s, _ in self.samples))})
        return tracker
