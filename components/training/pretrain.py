"""Pretraining the toy pair's parts: the toy world's Qwen2.5-VL-Instruct and its Cosmos (`duogen pretrain`).

Production never trains its parts from scratch: the MLLM starts from Qwen2.5-VL-7B-Instruct, the DiT from
Cosmos-Predict-2.5 (whose own text encoder is a Qwen2.5-VL-family model), so Stage 2 aligns neighbours. The
toy pair starts the same way, from two shipped parts this module makes, in this order:

- `part="mllm"`: the toy MLLM from random weights with Stage 1's loss on the data engine's dialogues
  (`pretrain_data.DialogueData`); its learning curve is free-running T-Com / I-Com on held-out tasks in every
  request form (`judge`), the pictures drawn by the preset's DiT.
- `part="dit"`: the toy DiT (with its connector) with Stage 2's loss on the same stream, the preset's MLLM
  (the shipped one) frozen as its text encoder; its curve is single-step held-out edits and multi-step
  held-out dialogues drawn teacher-forced.

Both run the product's `Trainer` (checkpoints and exact resume, progress, MLflow, data parallel under
torchrun with one process per core) on their stage's spec with a generated example source in place of
shards (`pretraining_spec`), and end with
OUT/<part> in its library's layout plus `CARD.json`: command, seed, data, steps, minutes, the curve.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duogen.components.curation.synthetic_stream import StreamConfig
from duogen.components.toyworld.world import ACTION_KINDS
from duogen.model.dit import DuoGenDiT
from duogen.model.pair import DuoGenPair
from duogen.model.presets import get_preset

from . import stages
from .config import TrainConfig
from .loop import Trainer
from .pretrain_config import PretrainConfig
from .pretrain_data import DialogueData
from .stages import StageSpec

# judge(pair, data) -> metrics: the learning curve's evaluation (the CLI passes the evaluation library's)
Judge = Callable[[DuoGenPair, DialogueData], dict]


def stream_config(cfg: PretrainConfig) -> StreamConfig:
    weights = tuple(float(cfg.kind_weights.get(k, 0.0)) for k in ACTION_KINDS)
    return StreamConfig(seed=cfg.seed, min_steps=cfg.min_steps, max_steps=cfg.max_steps, kind_weights=weights)


def init_pair(cfg: PretrainConfig) -> Path:
    """The starting pair (saved once, OUT/init). MLLM: random at `seed`, with the preset's DiT to draw the
    curve's pictures. DiT: random at `seed` (or `init`), with the recipe's DiT and flow settings and the
    preset's MLLM as its fixed text encoder."""
    path = Path(cfg.out) / "init"
    if (path / "duogen_config.json").exists():
        return path
    config = get_preset(cfg.preset)
    if cfg.part == "mllm":
        config = dataclasses.replace(config, mllm_init=None)
    else:
        dit = dataclasses.replace(config.dit, extra_pos_embed_type="learnable" if cfg.pos_embed else None)
        flow = dataclasses.replace(config.flow, edit_weight=cfg.edit_weight)
        config = dataclasses.replace(config, dit=dit, flow=flow, dit_init=None)
    pair = DuoGenPair.build(config, seed=cfg.seed)
    if cfg.part == "dit" and cfg.init:
        pair.dit = DuoGenDiT.from_pretrained(cfg.init, config.dit)
    pair.save_pretrained(path)
    return path


def base_stage(cfg: PretrainConfig) -> str:
    """The stage whose loss pretrains the part: Stage 1's for the MLLM, Stage 2's for the DiT."""
    return "stage1" if cfg.part == "mllm" else "stage2"


def pretraining_spec(cfg: PretrainConfig) -> StageSpec:
    """The part's pretraining as a stage: its base stage's spec trained on the dialogue stream."""
    stage, stream = base_stage(cfg), stream_config(cfg)
    return dataclasses.replace(
        stages.get(stage),
        name=f"pretrain_{cfg.part}",
        examples=lambda pair: DialogueData(pair, stage, stream, cfg.text_dropout),
    )


def train_config(cfg: PretrainConfig) -> TrainConfig:
    return TrainConfig(
        stage=base_stage(cfg),
        model=str(init_pair(cfg)),
        out=str(Path(cfg.out) / "train"),
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        min_lr_ratio=cfg.min_lr_ratio,
        text_dropout=cfg.text_dropout,
        ema=cfg.ema if cfg.part == "dit" else None,
        seed=cfg.seed,
        ckpt_every=cfg.ckpt_every,
        log_every=100,
        tracking_uri=cfg.tracking_uri,
        experiment=cfg.experiment,
    )


def log_session(out: Path, result, seconds: float) -> tuple[float, dict[str, Any]]:
    """Append this session (its steps, minutes and evaluations) to OUT/sessions.jsonl; the minutes of all
    sessions and their learning curve (a run resumed over several sessions keeps every evaluation)."""
    first = min(result.losses) if result.losses else result.step
    line = {"steps": [first, result.step], "status": result.status, "minutes": round(seconds / 60, 2)}
    line["evaluations"] = {str(step): metrics for step, metrics in sorted(result.evaluations.items())}
    with (out / "sessions.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")
    sessions = [json.loads(x) for x in (out / "sessions.jsonl").read_text().splitlines()]
    curve = {}
    for session in sessions:  # a later session's evaluation of a step replaces an earlier one's
        curve.update(session.get("evaluations", {}))
    return sum(s["minutes"] for s in sessions), dict(sorted(curve.items(), key=lambda kv: int(kv[0])))


def portable(text: str) -> str:
    """`text` with every absolute path cut to its last part: a card shipped in the package must not carry
    the folders of the machine it was made on."""
    return re.sub(r"(?<![\w.:/])/(?:[\w.-]+/)+([\w.-]+)", r"\1", text)


def pretrain(
    cfg: PretrainConfig, judge: Judge, progress: bool = True, command: str | None = None
) -> dict[str, Any] | None:
    """Pretrain `cfg.part` (a rerun resumes from OUT's checkpoints) and write OUT/<part> with CARD.json.
    Returns the result on the main process, None on the other data-parallel ranks."""
    started = time.perf_counter()
    trainer = Trainer(
        train_config(cfg),
        progress=progress,
        evaluate=lambda pair: judge(pair, trainer.source),
        eval_every=cfg.eval_every,
        spec=pretraining_spec(cfg),
    )
    try:
        result = trainer.train()
        world = trainer.dp_size
    finally:
        trainer.close()
    if not trainer.is_main:
        return None
    minutes, curve = log_session(Path(cfg.out), result, time.perf_counter() - started)
    if result.status != "finished":
        return {"status": result.status, "step": result.step}
    part_dir = Path(cfg.out) / cfg.part
    if part_dir.exists():
        shutil.rmtree(part_dir)
    shutil.copytree(Path(result.model_dir) / cfg.part, part_dir)
    final = result.evaluations.get(result.step) or {}
    card = {
        "what": f"the {cfg.preset} preset's {'MLLM' if cfg.part == 'mllm' else 'DiT (with its connector)'}, "
        "pretrained on the data engine's toy dialogues",
        "command": portable(command or " ".join(sys.argv)),
        "config": {k: portable(v) if isinstance(v, str) else v for k, v in cfg.to_dict().items()},
        "data": "an endless seeded stream of the data engine's toy dialogues (curation.synthetic_stream: "
        f"{cfg.min_steps}-{cfg.max_steps} steps, the prompt pool's wordings, the user's picture before or "
        f"after the text, action kinds weighted {cfg.kind_weights})",
        "text_encoder": None
        if cfg.part == "mllm"
        else f"the {cfg.preset} preset's MLLM, frozen (all-layer hidden states before <BOV>)",
        "init": portable(cfg.init) if cfg.init else f"random weights at seed {cfg.seed}",
        "dialogues_seen": result.step * cfg.batch_size * world,
        "processes": world,
        "steps": result.step,
        "minutes": round(minutes, 1),  # every session of the run (a resumed run spans several)
        "final": final,
        "curve": curve,
    }
    (part_dir / "CARD.json").write_text(json.dumps(card, indent=2))
    keep = ("steps", "minutes", "final", "curve")
    return {"status": "finished", cfg.part: str(part_dir), **{k: card[k] for k in keep}}
