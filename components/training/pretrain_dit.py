"""Pretraining the toy DiT on toy-world transitions: the toy world's Cosmos (`duogen pretrain dit`).

Production starts its DiT from Cosmos-Predict-2.5, a DiT pretrained on video, and Stage 2 only aligns it to
the MLLM. The toy pair does the same: this pretrains the toy DiT (with its connector, `crossattn_proj`) on an
endless stream of fresh single-step toy-world edits (`pretrain_data.EditData`: every example a transition
from one canvas to the next, its sentence written as the data engine writes it), captioned by a fixed text
encoder: the untrained toy MLLM at `seed`, the very weights Stage 1 starts from, whose all-layer hidden states
before `<BOV>` are the stream, as Stage 2 feeds it. Training is the product's Stage-2 loop (`Trainer`: flow
loss, text dropout to generation's CFG negative, checkpoints, resume, progress, MLflow); every `eval_every`
steps held-out edits are drawn and judged (`instruction_following`, `consistency`): the learning curve. The
result is the DiT alone in diffusers' layout plus a card of how it was made.

Recipe knobs beyond Stage 2's: `edit_weight` (the loss on the positions an edit changes, see FlowConfig) and
`pos_embed` (Cosmos' learnable absolute position embedding, for "add ... at the top left").
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duogen.model.pair import DuoGenPair
from duogen.model.presets import get_preset

from .config import TrainConfig
from .loop import Trainer
from .pretrain_config import PretrainConfig
from .pretrain_data import Edit, EditData


def init_pair(cfg: PretrainConfig) -> Path:
    """The starting pair (saved once): the preset at `seed`, with the recipe's DiT and flow settings."""
    path = Path(cfg.out) / "init"
    if not (path / "duogen_config.json").exists():
        config = dataclasses.replace(get_preset(cfg.preset), dit_init=None)  # from random weights
        dit = dataclasses.replace(config.dit, extra_pos_embed_type="learnable" if cfg.pos_embed else None)
        flow = dataclasses.replace(config.flow, edit_weight=cfg.edit_weight)
        DuoGenPair.build(dataclasses.replace(config, dit=dit, flow=flow), seed=cfg.seed).save_pretrained(path)
    return path


def pretrain_dit(
    cfg: PretrainConfig,
    judge: Callable[[DuoGenPair, list], dict],
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Pretrain (a rerun resumes from OUT's checkpoints) and write OUT/dit (diffusers layout + CARD.json).
    `judge(pair, edits) -> metrics` scores the held-out edits for the learning curve (the CLI passes
    `evaluation.dit_edits.judge_edits`)."""
    started = time.perf_counter()
    train_cfg = TrainConfig(
        stage="stage2",
        model=str(init_pair(cfg)),
        out=str(Path(cfg.out) / "train"),
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        text_dropout=cfg.text_dropout,
        seed=cfg.seed,
        ckpt_every=cfg.ckpt_every,
        log_every=100,
        tracking_uri=cfg.tracking_uri,
        experiment=cfg.experiment,
    )

    held_out: list[Edit] = []

    def examples(pair: DuoGenPair) -> EditData:
        data = EditData(pair, seed=cfg.seed, text_dropout=cfg.text_dropout)
        held_out.extend(data.held_out(cfg.eval_edits))
        return data

    def evaluate(pair: DuoGenPair) -> dict:
        return judge(pair, held_out)

    trainer = Trainer(
        train_cfg, progress=progress, evaluate=evaluate, eval_every=cfg.eval_every, examples=examples
    )
    result = trainer.train()
    if result.status != "finished":
        return {"status": result.status, "step": result.step}
    dit_dir = Path(cfg.out) / "dit"
    if dit_dir.exists():
        shutil.rmtree(dit_dir)
    shutil.copytree(Path(result.model_dir) / "dit", dit_dir)
    final = result.evaluations.get(result.step) or {}
    card = {
        "what": f"the {cfg.preset} preset's DiT (with its connector), pretrained on toy-world transitions",
        "command": command or " ".join(sys.argv),
        "config": dataclasses.asdict(cfg),
        "text_encoder": f"the untrained {cfg.preset} MLLM at seed {cfg.seed} (all-layer hidden states)",
        "data": "fresh single-step toy-world edits (all six action kinds), one per example position",
        "edits_seen": result.step * cfg.batch_size,
        "held_out_edits": cfg.eval_edits,
        "steps": result.step,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "instruction_following": final.get("instruction_following"),
        "consistency": final.get("consistency"),
        "curve": {str(step): metrics for step, metrics in sorted(result.evaluations.items())},
    }
    (dit_dir / "CARD.json").write_text(json.dumps(card, indent=2))
    return {"status": "finished", "dit": str(dit_dir), **{k: card[k] for k in ("steps", "minutes", "curve")}}
