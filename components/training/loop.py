"""The training loop: AdamW, warmup + cosine, clipping, accumulation, EMA, checkpoints, MLflow, for any stage.

What a stage trains, on which examples, with which loss and how its module is parallelized is its spec
(`stages/`: Stage 1 tunes the MLLM, Stage 2 the connector + DiT with the MLLM frozen); this loop knows no
stage. Everything a step draws at random (which examples, which target image, timesteps, noise) is seeded by
the step or the example position, so a run resumed from a checkpoint continues exactly the loss curve of an
uninterrupted one. SIGTERM (a pod eviction) finishes the current step, writes a checkpoint and stops.

Distributed (started by torchrun or a PyTorchJob, i.e. WORLD_SIZE > 1, or `tp` > 1): `init_distributed(tp)`,
then the trained model is parallelized by its spec (`parallelize_dit` / `parallelize_mllm`, tensor parallel
over `tp` ranks, Transformer Engine + FP8 on GPU nodes) and data parallel (DDP) over the remaining ranks.
Data-parallel rank r takes the micro-batch at global position `position + (micro * dp + r) * batch_size`, so
the ranks see different examples, the checkpointed position stays global (a run resumes under another data-
parallel size) and the ranks of one TP group see the same examples and the same draws (seeded by step, micro
and dp rank). Logged losses are the mean over data-parallel ranks; rank 0 alone tracks and exports (the
dense weights gathered from the shards). A single process runs exactly as before, without a process group.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from duogen.model.pair import DuoGenPair
from duogen.model.presets import PRESETS, get_preset
from duogen.platform import storage
from duogen.platform.model_store import local_pair_dir
from duogen.platform.steps import input_dir

from . import checkpoint, stages
from .config import TrainConfig
from .data import index_samples
from .fp8 import fp8_autocast
from .parallelize import (
    ParallelState,
    gather_full_state_dict,
    init_distributed,
    local_device,
    shutdown_distributed,
    wrap_data_parallel,
)
from .stages import StageSpec


@dataclass
class TrainResult:
    status: str  # "finished" or "preempted"
    step: int
    losses: dict[int, float]
    model_dir: str | None
    run_id: str | None
    seconds: float
    evaluations: dict[int, dict] = field(default_factory=dict)  # step -> metrics of `Trainer.evaluate`


def shard_files(paths: list[str]) -> list[Path]:
    """Shard files of files or folders; `s3://` folders are copied once to this machine (`steps.input_dir`:
    a pod's scratch disk, shared by the processes of a job)."""
    out: list[Path] = []
    for text in paths:
        p = input_dir(text) if storage.is_url(text) else Path(text)
        out += sorted(p.glob("shard-*.tar")) if p.is_dir() else [p]
    if not out:
        raise ValueError(f"no shards found in {paths}")
    return out


def warmup_cosine(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def ema_decay(target: float, step: int) -> float:
    """The EMA's decay after optimizer step `step` (0-based): (1 + step) / (10 + step) up to `target`, as
    diffusers' EMAModel warms up, so a short run's EMA is not mostly its random initial weights."""
    return min(target, (1 + step) / (10 + step))


def clip_grad_norm_tensor_parallel(model: nn.Module, max_norm: float) -> torch.Tensor:
    """`clip_grad_norm_` for a tensor-parallel model: the norm of the whole (dense) gradient, the same on
    every TP rank. Squares of sharded gradients are summed over the TP group; replicated ones (identical on
    every TP rank) count once. A per-rank `clip_grad_norm_` would scale each rank's shards differently."""
    info = model.tensor_parallel
    sharded, replicated = [], []
    for name, p in model.named_parameters():
        if p.grad is not None:
            (sharded if name in info.sharded else replicated).append(p.grad)

    def squares(grads: list[torch.Tensor]) -> torch.Tensor:
        zero = torch.zeros((), device=next(model.parameters()).device)
        return sum((g.detach().float().pow(2).sum() for g in grads), zero)

    local = squares(sharded)
    dist.all_reduce(local, group=info.group)
    total = (local + squares(replicated)).sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in sharded + replicated:
        g.mul_(coef.to(g.dtype))
    return total


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        progress: bool = True,
        evaluate: Callable[[DuoGenPair], dict] | None = None,
        eval_every: int = 0,
        spec: StageSpec | None = None,
    ) -> None:
        """`spec`: the stage (default: `cfg.stage`'s). `evaluate(pair) -> metrics` runs on rank 0 every
        `eval_every` steps and at the end (a learning curve: logged to MLflow as `eval_<name>` and returned in
        `TrainResult.evaluations`). A spec with `examples` trains on that generated source in place of the
        shards (`source(position) -> example`, a pure function of the position so resume and data parallelism
        hold): pretraining's dialogue stream."""
        self.cfg = cfg
        self.spec = spec = spec or stages.get(cfg.stage)
        self.evaluate, self.eval_every = evaluate, eval_every
        self.parallel: ParallelState | None = self._init_distributed(cfg)
        self.is_main = self.parallel is None or self.parallel.is_main
        self.dp_rank = self.parallel.dp_rank if self.parallel else 0
        self.dp_size = self.parallel.dp_size if self.parallel else 1
        self.progress = progress and self.is_main
        self.device = self.parallel.device if self.parallel else local_device()
        torch.manual_seed(cfg.seed)
        self.pair = (
            DuoGenPair.build(get_preset(cfg.model), seed=cfg.seed)
            if cfg.model in PRESETS
            else DuoGenPair.from_pretrained(local_pair_dir(cfg.model))
        )
        self.source = spec.examples(self.pair) if spec.examples is not None else None
        self.samples, self.weights = [], []
        if self.source is None:
            self._index_samples(cfg)
        self.model = spec.trainable(self.pair)
        for p in self.pair.parameters():
            p.requires_grad_(False)
        self.pair.eval()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.model.train()
        self.pair.to(self.device)  # before TP/TE/FP8 swap layers in: those are built where the model is
        self.decode = self._image_decoder()
        if cfg.activation_checkpointing:
            spec.activation_checkpointing(self.pair)
        if self.parallel is not None or cfg.fp8 is not None:  # TP (and TE/FP8 layers), in place
            spec.parallelize(self.model, self.parallel.tp_size if self.parallel else 1, cfg.fp8)
        self.loss_module = self._data_parallel(spec.loss(self.pair))
        groups = spec.param_groups(self.model, cfg)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: warmup_cosine(s, cfg))
        # EMA of the trained parameters by name (local shards under TP, like the parameters)
        self.ema = (
            {name: p.detach().clone() for name, p in self.model.named_parameters()} if cfg.ema else None
        )
        self.stop_requested = False

    def _index_samples(self, cfg: TrainConfig) -> None:
        """An index of the samples (their text and where their images sit in the shards), not the images: each
        rank reads the image bytes of its own examples when it draws them. The evaluation split (held out by
        hash in the synthetic stage) never trains."""
        self.samples = [
            entry for entry in index_samples(shard_files(cfg.shards))
            if entry.sample.lineage.stages.get("split") != "eval"
            if self.spec.keeps(entry.sample)
        ]  # fmt: skip
        if not self.samples:
            raise ValueError("the shards hold no usable samples for " + self.spec.name)
        weights = [cfg.mix.get(e.sample.source, 0.0 if cfg.mix else 1.0) for e in self.samples]
        if sum(weights) <= 0:
            sources = sorted({e.sample.source for e in self.samples})
            raise ValueError(f"mix {cfg.mix} gives no weight to the sources {sources}")
        self.weights = weights

    def _image_decoder(self):
        """DALI (nvJPEG + resize on this rank's GPU; CPU operators when asked for here) or PIL (None)."""
        choice = self.cfg.image_decoder
        if choice == "pil" or (choice == "auto" and self.device.type != "cuda"):
            return None
        from .dali_images import DaliDecoder

        return DaliDecoder(self.device, self.pair.pixel_multiple)

    # --- parallelism ------------------------------------------------------------------------------------
    @staticmethod
    def _init_distributed(cfg: TrainConfig) -> ParallelState | None:
        """Join the job when there is one (WORLD_SIZE > 1) or tensor parallelism is asked for."""
        world = _world_size()
        if world == 1 and cfg.tp == 1:
            return None
        if world % cfg.tp:
            raise ValueError(
                f"tp={cfg.tp} must divide the number of processes ({world}): start a multiple of {cfg.tp} "
                f"processes (`duogen train {cfg.stage} --nproc N`, or a PyTorchJob with N workers)"
            )
        return init_distributed(cfg.tp, seed=cfg.seed)

    def _data_parallel(self, module: nn.Module) -> nn.Module:
        """DDP over the data-parallel group (a spec's loss reaches every parameter on every micro-batch)."""
        if self.dp_size == 1:
            return module
        return wrap_data_parallel(module, self.parallel.dp_group)

    def _mean_over_data_parallel(self, value: float) -> float:
        if self.dp_size == 1:
            return value
        t = torch.tensor(value, dtype=torch.float64, device=self.parallel.device)
        dist.all_reduce(t, group=self.parallel.dp_group)
        return t.item() / self.dp_size

    def _stop_agreed(self) -> bool:
        """Every rank stops after the same step, even if the SIGTERMs arrive between two steps."""
        if self.parallel is None:
            return self.stop_requested
        flag = torch.tensor(float(self.stop_requested), device=self.parallel.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def close(self) -> None:
        """Leave the process group (the end of a distributed run)."""
        if self.parallel is not None:
            shutdown_distributed()

    # --- data -------------------------------------------------------------------------------------------
    def example_at(self, position: int):
        """The example at a global data position: drawn by the mix weights, seeded by the position."""
        if self.source is not None:
            with self.autocast():
                return self.source(position)
        rng = random.Random(f"{self.cfg.seed}:{position}")
        entry = self.samples[rng.choices(range(len(self.samples)), self.weights)[0]]
        with self.autocast():  # frozen parts that make the example (MLLM, VAE) run in the training dtype too
            return self.spec.example(
                self.pair, entry.sample, entry.read_images(), rng, self.cfg.text_dropout, self.decode
            )

    def micro_batches(self, position: int) -> list[list]:
        """This rank's examples of the step starting at global data `position`, split into the micro-batches
        that each get one forward/backward: `grad_accum` groups of `batch_size`, or (a spec that packs, with
        `token_budget`) packs of at most that many tokens."""
        cfg = self.cfg
        groups = [
            [self.example_at(position + (micro * self.dp_size + self.dp_rank) * cfg.batch_size + i)
             for i in range(cfg.batch_size)]
            for micro in range(cfg.grad_accum)
        ]  # fmt: skip
        if self.spec.pack is None or cfg.token_budget is None:
            return groups
        return self.spec.pack([ex for group in groups for ex in group], cfg.token_budget, self.pair)

    def autocast(self):
        """bf16 autocast on a GPU (the trained part and the frozen ones alike); nothing on the CPU."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def micro_loss(self, step: int, micro: int, examples: list) -> torch.Tensor:
        """The mean loss of one micro-batch."""
        with self.autocast(), fp8_autocast(self.model):
            # what the loss draws (timesteps, noise): the same on the ranks of a TP group, different per
            # data-parallel rank
            seed = self.cfg.seed * 1_000_003 + step * 131 + micro + (self.dp_rank << 32)
            return self.loss_module(examples, torch.Generator().manual_seed(seed))

    # --- loop -------------------------------------------------------------------------------------------
    def _on_sigterm(self, signum, frame) -> None:
        self.stop_requested = True

    def train(self) -> TrainResult:
        cfg, out = self.cfg, Path(self.cfg.out)
        ckpt_dir = cfg.checkpoints
        start_step, position = 0, 0
        if (resume := checkpoint.latest(ckpt_dir)) is not None:
            start_step, position = checkpoint.load(
                resume, self.model, self.optimizer, self.scheduler, self.ema
            )
        tracker = self._tracker(resumed=resume is not None) if self.is_main else None
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        losses: dict[int, float] = {}
        evaluations: dict[int, dict] = {}
        started = time.perf_counter()
        status = "finished"
        completed = start_step
        try:
            bar = tqdm(
                total=cfg.steps,
                initial=start_step,
                desc=self.spec.name,
                unit="step",
                disable=not self.progress,
            )
            for step in range(start_step, cfg.steps):
                loss = self._step(step, position)
                completed = step + 1
                position += cfg.batch_size * cfg.grad_accum * self.dp_size
                losses[step] = loss
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if tracker:
                    tracker.metrics({"loss": loss, "lr": self.scheduler.get_last_lr()[0]}, step)
                if (
                    self.evaluate
                    and self.is_main
                    and self.eval_every
                    and ((step + 1) % self.eval_every == 0 or step + 1 == cfg.steps)
                ):
                    evaluations[step + 1] = metrics = self._evaluate()
                    bar.write(f"{self.spec.name} step {step + 1} eval {metrics}")
                    if tracker:
                        numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
                        tracker.metrics({f"eval_{k}": v for k, v in numbers.items()}, step)
                if self.is_main and (step + 1) % cfg.log_every == 0:
                    bar.write(f"{self.spec.name} step {step + 1}/{cfg.steps} loss {loss:.4f}")
                last = step + 1 == cfg.steps
                if cfg.stop_at is not None and step + 1 >= cfg.stop_at:
                    self.stop_requested = True
                stop = self._stop_agreed()
                if stop or last or (step + 1) % cfg.ckpt_every == 0:
                    path = checkpoint.save(
                        ckpt_dir, step + 1, self.model, self.optimizer, self.scheduler, position, self.ema
                    )
                    if tracker:
                        tracker.tag("checkpoint", path if storage.is_url(path) else str(Path(path).resolve()))
                if stop and not last:
                    status = "preempted"
                    break
            bar.close()
            model_dir = None
            if status == "finished":
                model_dir = self._export(out / "model")
                if tracker:
                    tracker.artifacts(model_dir, "model")
                if cfg.export_uri and self.is_main:  # a pod's disk goes with the pod: the model goes to S3
                    model_dir = storage.publish_dir(model_dir, cfg.export_uri)
        finally:
            signal.signal(signal.SIGTERM, previous)
            if tracker:
                tracker.close("FINISHED" if status == "finished" else "KILLED")
        run_id = tracker.run_id if tracker else None
        seconds = time.perf_counter() - started
        model = str(model_dir) if model_dir else None
        return TrainResult(status, completed, losses, model, run_id, seconds, evaluations)

    def _evaluate(self) -> dict:
        """The evaluation callback on the pair as it is now (the trained part in eval mode meanwhile), with
        the EMA weights when one is kept: those are what the run exports."""
        self.model.eval()
        kept = None
        try:
            with torch.no_grad():
                if self.ema is not None:
                    kept = {name: p.detach().clone() for name, p in self.model.named_parameters()}
                    for name, p in self.model.named_parameters():
                        p.copy_(self.ema[name])
                return self.evaluate(self.pair)
        finally:
            if kept is not None:
                with torch.no_grad():
                    for name, p in self.model.named_parameters():
                        p.copy_(kept[name])
            self.model.train()

    def _step(self, step: int, position: int) -> float:
        """One optimizer step from global data `position`; returns the loss (mean over data parallel)."""
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        batches = self.micro_batches(position)
        count = sum(len(b) for b in batches)
        for micro, examples in enumerate(batches):
            with self._no_sync(last=micro == len(batches) - 1):  # one gradient all-reduce per step
                loss = self.micro_loss(step, micro, examples) * (len(examples) / count)
                loss.backward()
            total += float(loss.detach())
        if getattr(self.model, "tensor_parallel", None) is not None:
            clip_grad_norm_tensor_parallel(self.model, cfg.grad_clip)
        else:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            decay = ema_decay(cfg.ema, step)
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    self.ema[name].lerp_(p, 1 - decay)
        return self._mean_over_data_parallel(total)

    def _no_sync(self, last: bool):
        """DDP all-reduces gradients once per step: on the last micro-batch of the accumulation."""
        if last or not isinstance(self.loss_module, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return self.loss_module.no_sync()

    def _export(self, path: Path) -> Path:
        """The trained pair in `from_pretrained` format (the EMA weights when kept), written by rank 0.
        Tensor-parallel weights are gathered (every rank takes part) into a dense copy of the model."""
        if self.ema is not None:
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    p.copy_(self.ema[name])
        if getattr(self.model, "tensor_parallel", None) is None:
            if self.is_main:
                self.pair.eval().save_pretrained(path)
            return path
        full = gather_full_state_dict(self.model)
        if self.is_main:
            dense = type(self.model)(self.model.config)  # its config is the dense one
            dense.load_state_dict(full)
            self.spec.with_trainable(self.pair, dense).eval().save_pretrained(path)
        return path

    def _tracker(self, resumed: bool):
        from duogen.platform.tracking import Tracker, default_artifacts, default_uri

        cfg = self.cfg
        tags = {"stage": self.spec.name, "resumed": str(resumed)}
        if cfg.pipeline_run_id:
            tags["pipeline_run_id"] = cfg.pipeline_run_id
        local = cfg.tracking_uri is None
        uri = default_uri(cfg.out) if local else cfg.tracking_uri
        tracker = Tracker(
            uri, cfg.experiment, self.spec.name, tags, default_artifacts(cfg.out) if local else None
        )
        tracker.params(cfg.to_dict())
        tracker.config(cfg.to_dict())
        if self.source is None:
            sources = Counter(e.sample.source for e in self.samples)
            tracker.params({"samples": len(self.samples), **dict(sources)})
        tracker.params({"world_size": self.parallel.world_size if self.parallel else 1, "dp": self.dp_size})
        return tracker
