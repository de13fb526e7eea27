"""DiT edit-learning benchmark: does the `toy` DiT carry out the toy world's edits? Prints one JSON line.

`toyworld_learning.py` judges the whole pair; when its pictures do not follow the steps, this one says
whether the DiT could, with the MLLM taken out of the question. Two modes:

- `--pretrained`: the DiT shipped in the package (`duogen.model.pretrained`, made by `duogen pretrain dit`)
  with its own text encoder (the shipped toy MLLM, over the data engine's one-step dialogues,
  `pretrain_data.DialogueData`), judged on 120 held-out edits and on the steps of 40 held-out 2-4 step
  dialogues drawn teacher-forced (`dialogues`; the stream's evaluation split: never trained on). No
  training.
- default (from scratch): trains the toy preset's DiT (with its connector, as Stage 2 does) alone, with the
  product's `flow_matching_loss` and the preset's flow settings, on fresh single-step toy edits, where the
  text stream is an *oracle*: one fixed random vector per slot of the step's meaning (the action; the named
  shape's colour and kind; the argument). No parsing is left to do, so what is measured is the DiT's part:
  finding the named shape and redrawing it. Text is dropped to a zero row at `--text-dropout`, the negative
  CFG samples against (train the negative you sample with).

Held-out edits are drawn as generation draws them (`sample_latent`) and read back with the toy checker
(`components/evaluation/dit_edits.judge_edits`), exactly as `toyworld_learning.py` judges a step:

- `instruction_following` (and per action kind), `consistency`: as in `toyworld_learning.py`, with the
  preset's CFG; `no_cfg`: the same drawn without CFG.
- `edit_error_vs_copy`: the DiT's one-step picture at sigma 1 (the start of sampling), squared error against
  the truth over the pixels the edit changes, divided by the same error of the baseline "copy the previous
  picture" (1.0: nothing learned beyond copying; 0: the edit is exact). Baseline measured in the same run.
- `train_minutes`, `steps`, `edits_seen` (from scratch), or the shipped DiT's card figures (`--pretrained`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time

import torch

from duogen.components.curation.synthetic_stream import StreamConfig
from duogen.components.evaluation.dit_edits import judge_edits
from duogen.components.evaluation.toyworld_teacher import evaluate_teacher_forced
from duogen.components.toyworld import (
    Add,
    Move,
    Recolour,
    Resize,
    Swap,
    Task,
    WorldConfig,
    random_task,
    render,
)
from duogen.components.toyworld.world import ACTION_KINDS, region_name
from duogen.components.training.pretrain_data import DialogueData, Edit
from duogen.model.flow import TrainingExample, flow_matching_loss
from duogen.model.pair import DuoGenPair
from duogen.model.presets import toy, toy_scratch
from duogen.model.pretrained import pretrained_dit_card


def _vector(key: str, dim: int) -> torch.Tensor:
    seed = int(hashlib.md5(key.encode()).hexdigest()[:8], 16)
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


def oracle_stream(task: Task, world: WorldConfig, dim: int) -> torch.Tensor:
    """[slots, dim]: one fixed vector per slot of the step's meaning, in a fixed order per action kind."""
    action, scene = task.actions[0], task.scenes[0]
    slots = [f"action:{type(action).__name__}"]
    if isinstance(action, Add):
        s = action.shape
        where = region_name(s.x, s.y, scene.width, scene.height)
        slots += [f"add-kind:{s.kind}", f"add-colour:{s.colour}", f"add-size:{s.size}", f"add-region:{where}"]
    else:
        first = scene.shapes[action.i if isinstance(action, Swap) else action.index]
        slots += [f"colour:{first.colour}", f"kind:{first.kind}"]
        if isinstance(action, Swap):
            other = scene.shapes[action.j]
            slots += [f"other-colour:{other.colour}", f"other-kind:{other.kind}"]
        elif isinstance(action, Recolour):
            slots.append(f"new-colour:{action.colour}")
        elif isinstance(action, Move):
            slots.append(f"direction:{action.direction}")
        elif isinstance(action, Resize):
            slots.append(f"new-size:{action.size}")
    return torch.stack([_vector(s, dim) for s in slots])


class Edits:
    """Encodes tasks into held-out `Edit`s with the oracle stream (negative: the zero row)."""

    def __init__(self, pair: DuoGenPair, world: WorldConfig, kinds: list[str]) -> None:
        self.pair, self.world, self.kinds = pair, world, tuple(kinds)
        self.dim = pair.config.connector.in_channels

    def __call__(self, rng: random.Random) -> Edit:
        task = random_task(rng, self.world, steps=1, kinds=self.kinds)
        before, after = (self.pair.vae.encode_image(render(s, self.world), self.pair.pixel_multiple)
                         for s in task.scenes)  # fmt: skip
        text = oracle_stream(task, self.world, self.dim)
        return Edit(task, before, after, text, text.new_zeros(1, text.shape[1]))


def judge(pair: DuoGenPair, edits: list[Edit], world: WorldConfig, seed: int) -> dict:
    return {
        **judge_edits(pair, edits, world, seed=seed),
        "no_cfg": judge_edits(pair, edits, world, guidance_scale=0.0, seed=seed),
    }


def pretrained(args: argparse.Namespace) -> dict:
    """The shipped DiT with its own text encoder (the toy preset's MLLM, as in its pretraining): held-out
    single-step edits, and the steps of held-out 2-4 step dialogues drawn teacher-forced."""
    card = pretrained_dit_card("toy")
    pair = DuoGenPair.build(toy(), seed=card["config"]["seed"])  # the shipped parts
    data = DialogueData(pair, "stage2", StreamConfig(seed=card["config"]["seed"]))
    edits = data.held_out_edits(args.eval_edits)
    result = judge(pair, edits, WorldConfig(), args.seed)
    multi = evaluate_teacher_forced(pair, data.held_out_dialogues(args.dialogues), args.seed)
    keep = ("command", "steps", "minutes", "dialogues_seen", "init")
    return {
        **result,
        "dialogues": {k: multi[k] for k in ("instruction_following", "consistency", "held_out_steps")},
        "dit": "shipped (duogen.model.pretrained/toy_dit)",
        "card": {k: card.get(k) for k in keep},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps (default: Stage 2's)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW lr after 10 warm-up steps")
    parser.add_argument("--eval-edits", type=int, default=120, help="held-out edits to draw and judge")
    parser.add_argument(
        "--dialogues", type=int, default=40, help="--pretrained: held-out 2-4 step dialogues drawn"
    )
    parser.add_argument("--kinds", default=",".join(ACTION_KINDS), help="action kinds, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--text-dropout", type=float, default=0.1, help="from scratch: text -> zero row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pretrained", action="store_true", help="judge the shipped pretrained DiT (no training)"
    )
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    world, cfg = WorldConfig(), toy_scratch()
    try:  # the task generator owns the rule for action kinds; ask it before building anything
        random_task(0, world, steps=1, kinds=tuple(kinds))
    except ValueError as e:
        parser.error(str(e))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.pretrained:
        print(json.dumps(pretrained(args)))
        return

    pair = DuoGenPair.build(cfg, seed=args.seed)
    make = Edits(pair, world, kinds)
    held_out = [make(random.Random(f"eval:{args.seed}:{i}")) for i in range(args.eval_edits)]
    dit = pair.dit.train()
    optimizer = torch.optim.AdamW(dit.parameters(), lr=args.lr, weight_decay=0.01)
    rng, generator = random.Random(f"train:{args.seed}"), torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 10)
        batch = [make(rng) for _ in range(args.batch_size)]
        examples = [
            TrainingExample(
                [e.before, e.after], 1, e.negative if rng.random() < args.text_dropout else e.text
            )
            for e in batch
        ]
        loss = flow_matching_loss(dit, examples, cfg.flow, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}/{args.steps} loss {loss.item():.4f}", file=sys.stderr, flush=True)
    train_seconds = time.perf_counter() - start
    result = {
        **judge(pair, held_out, world, args.seed),
        "train_minutes": round(train_seconds / 60, 2),
        "steps": args.steps,
        "edits_seen": args.steps * args.batch_size,
        "settings": {
            "lr": args.lr,
            "batch_size": args.batch_size,
            "kinds": kinds,
            "preset": cfg.name,
            "text_dropout": args.text_dropout,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
