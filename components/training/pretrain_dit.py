"""Pretraining the toy DiT on toy-world transitions: the toy world's Cosmos (`duogen pretrain dit`).

Production starts its DiT from Cosmos-Predict-2.5, a DiT pretrained on video, and Stage 2 only aligns it to
the MLLM. The toy pair does the same: this pretrains the toy DiT (with its connector, `crossattn_proj`) on
fresh toy-world dialogues — every step a transition from one canvas to the next, its sentence written as the
data engine writes it — encoded by a fixed text encoder: the untrained toy MLLM (the preset's weights at
`seed`, the very weights Stage 1 starts from), whose all-layer hidden states before each `<BOV>` are the
stream, exactly as Stage 2 feeds it. Training is the product's Stage-2 loop (`Trainer`: flow loss, text
dropout to generation's CFG negative, checkpoints, resume, progress, MLflow); every `eval_every` steps the
held-out dialogues' pictures are drawn teacher-forced and judged (`instruction_following`, `consistency`):
the learning curve. The result is the DiT alone in diffusers' layout plus a card of how it was made.

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

from duogen.components.curation.executor import StageContext, WorkUnit, plan, run_stage
from duogen.components.curation.synthetic import instruction_id, plan_instructions, synthetic_stage
from duogen.components.curation.synthetic_generators import instruction_task
from duogen.components.curation.synthetic_pool import Instruction
from duogen.model.pair import DuoGenPair
from duogen.model.presets import get_preset

from .config import TrainConfig
from .loop import Trainer
from .pretrain_config import PretrainConfig

DOMAIN = "shapes on a canvas"


def _instructions(cfg: PretrainConfig) -> tuple[list[dict], list[dict]]:
    records = [r for r in plan_instructions(per_seed=cfg.per_seed, seed=cfg.seed) if r["domain"] == DOMAIN]
    return [r for r in records if r["split"] != "eval"], [r for r in records if r["split"] == "eval"]


def make_data(cfg: PretrainConfig, progress: bool = True) -> tuple[Path, list]:
    """Training shards of the train split (written once, under OUT/data) and the held-out dialogues
    (sample, images, task) of the eval split, made in memory."""
    train, held = _instructions(cfg)
    data = Path(cfg.out) / "data"
    done = data / "_complete.json"
    if not done.exists():
        run_stage(synthetic_stage, plan(train, 500), data, processes=1, progress=progress)
        done.write_text(json.dumps({"dialogues": len(train)}))
    chosen = held[: cfg.eval_dialogues]
    items = synthetic_stage(WorkUnit(0, chosen), StageContext(0))
    tasks = {instruction_id(i): instruction_task(i) for i in (Instruction.from_dict(r) for r in chosen)}
    dialogues = [(s, images, tasks[s.id]) for s, images in items if tasks.get(s.id) is not None]
    return data, dialogues


def init_pair(cfg: PretrainConfig) -> Path:
    """The starting pair (saved once): the preset at `seed`, with the recipe's DiT and flow settings."""
    path = Path(cfg.out) / "init"
    if not (path / "duogen_config.json").exists():
        config = get_preset(cfg.preset)
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
    `judge(pair, dialogues) -> metrics` scores held-out (sample, images, task) dialogues for the learning
    curve (the CLI passes the toy-world judge's teacher-forced evaluation)."""
    started = time.perf_counter()
    data, dialogues = make_data(cfg, progress)
    train_cfg = TrainConfig(
        stage="stage2",
        model=str(init_pair(cfg)),
        shards=[str(data)],
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

    def evaluate(pair: DuoGenPair) -> dict:
        metrics = judge(pair, dialogues)
        return {
            k: metrics[k] for k in ("instruction_following", "consistency", "held_out_steps") if k in metrics
        }

    trainer = Trainer(train_cfg, progress=progress, evaluate=evaluate, eval_every=cfg.eval_every)
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
        "training_dialogues": json.loads((data / "_complete.json").read_text())["dialogues"],
        "steps": result.step,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "instruction_following": final.get("instruction_following"),
        "consistency": final.get("consistency"),
        "curve": {str(step): metrics for step, metrics in sorted(result.evaluations.items())},
    }
    (dit_dir / "CARD.json").write_text(json.dumps(card, indent=2))
    return {"status": "finished", "dit": str(dit_dir), **{k: card[k] for k in ("steps", "minutes", "curve")}}
