"""DiT edit-learning benchmark: can the `toy` DiT learn the toy world's edits from a perfect text stream?

`toyworld_learning.py` judges the whole pair; when its pictures do not follow the steps, this one says
whether the DiT could, with the MLLM taken out of the question. It trains the toy preset's DiT (with its
connector, as Stage 2 does) alone, with the product's `flow_matching_loss` and the preset's flow settings,
on fresh single-step toy edits (a random scene, one random valid action of the six kinds), where the text
stream is an *oracle*: one fixed random vector per slot of the step's meaning (the action; the named shape's
colour and kind; the argument: new colour, direction, size, second shape, or the added shape's kind, colour,
size and region). No parsing is left to do, so what is measured is the DiT's part: finding the named shape
and redrawing it.

Held-out edits (their own seeds) are drawn as generation draws them (`sample_latent`, CFG against "no text")
and read back with the toy checker, exactly as `toyworld_learning.py` judges a step. Prints one JSON line:

- `instruction_following` (and per action kind), `consistency`: as in `toyworld_learning.py`.
- `edit_error_vs_copy`: the DiT's one-step picture at sigma 1 (the start of sampling), squared error against
  the truth over the pixels the edit changes, divided by the same error of the baseline "copy the previous
  picture" (1.0: nothing learned beyond copying; 0: the edit is exact). Baseline measured in the same run.
- `train_minutes`, `steps`, `edits_seen`.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import random
import sys
import time

import torch

from duogen.components.evaluation.toyworld_judge import judge_step
from duogen.components.toyworld import (
    Add,
    Move,
    Recolour,
    Resize,
    Swap,
    Task,
    WorldConfig,
    find_shapes,
    random_task,
    render,
)
from duogen.components.toyworld.world import ACTION_KINDS, _region
from duogen.model.flow import (
    TrainingExample,
    flow_matching_loss,
    sample_latent,
    source_of,
    to_velocity,
)
from duogen.model.packing import Frame, pack_samples, unpack
from duogen.model.pair import DuoGenPair
from duogen.model.presets import toy


def _vector(key: str, dim: int) -> torch.Tensor:
    seed = int(hashlib.md5(key.encode()).hexdigest()[:8], 16)
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


def oracle_stream(task: Task, world: WorldConfig, dim: int) -> torch.Tensor:
    """[slots, dim]: one fixed vector per slot of the step's meaning, in a fixed order per action kind."""
    action, scene = task.actions[0], task.scenes[0]
    slots = [f"action:{type(action).__name__}"]
    if isinstance(action, Add):
        s = action.shape
        where = _region(s.x, s.y, scene.width, scene.height)
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
    """Encodes tasks into (task, before latent, after latent, oracle stream)."""

    def __init__(self, pair: DuoGenPair, world: WorldConfig, kinds: list[str]) -> None:
        self.pair, self.world, self.kinds = pair, world, tuple(kinds)
        self.dim = pair.config.connector.in_channels

    def __call__(self, rng: random.Random):
        task = random_task(rng, self.world, steps=1, kinds=self.kinds)
        before, after = (self.pair.vae.encode_image(render(s, self.world), self.pair.pixel_multiple)
                         for s in task.scenes)  # fmt: skip
        return task, before, after, oracle_stream(task, self.world, self.dim)


@torch.no_grad()
def evaluate(pair: DuoGenPair, edits: list, world: WorldConfig, seed: int = 0) -> dict:
    dit, flow = pair.dit.eval(), pair.config.flow
    generator = torch.Generator().manual_seed(seed)
    followed, seen, kept = collections.Counter(), collections.Counter(), []
    err_model = err_copy = 0.0
    for task, before, after, text in edits:
        negative = text.new_zeros(1, text.shape[1])  # the CFG negative when the step's text is everything
        latent = sample_latent(dit, [before], tuple(after.shape[-2:]), text, negative, flow, generator)
        found = find_shapes(pair.vae.decode_image(latent), world)
        ok, _, consistency = judge_step(task.scenes[0], task.scenes[1], task.actions[0], found, world)
        kind = type(task.actions[0]).__name__.lower()
        seen[kind] += 1
        followed[kind] += ok
        kept.append(consistency)
        # the one-step picture at sigma 1 against copying, on the pixels the edit changes
        start = source_of(torch.randn(after.shape, generator=generator), before, flow)
        frames = [Frame(before, flow.condition_sigma, True), Frame(start, 1.0, False)]
        pack = pack_samples([frames], [text], dit.config.patch_size, max_frames=dit.config.max_frames)
        out = unpack(dit(pack), pack, dit.config.out_channels)[0][-1]
        x0 = start - to_velocity(out, start, 1.0, flow, before)  # x_sigma = x0 + sigma * velocity
        changed = (after - before).abs().amax(0) > 1e-3
        err_model += float(((x0 - after)[:, changed] ** 2).sum())
        err_copy += float(((before - after)[:, changed] ** 2).sum())
    dit.train()
    total = sum(seen.values())
    return {
        "instruction_following": round(sum(followed.values()) / total, 4),
        "following_by_action": {k: round(followed[k] / seen[k], 3) for k in sorted(seen)},
        "consistency": round(sum(kept) / len(kept), 4),
        "edit_error_vs_copy": round(err_model / err_copy, 4),
        "eval_edits": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps (default: Stage 2's)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW lr after 10 warm-up steps")
    parser.add_argument("--eval-edits", type=int, default=120, help="held-out edits to draw and judge")
    parser.add_argument("--kinds", default=",".join(ACTION_KINDS), help="action kinds, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    world, cfg = WorldConfig(), toy()
    try:  # the task generator owns the rule for action kinds; ask it before building anything
        random_task(0, world, steps=1, kinds=tuple(kinds))
    except ValueError as e:
        parser.error(str(e))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

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
        examples = [TrainingExample([before, after], 1, text) for _, before, after, text in batch]
        loss = flow_matching_loss(dit, examples, cfg.flow, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}/{args.steps} loss {loss.item():.4f}", file=sys.stderr, flush=True)
    train_seconds = time.perf_counter() - start
    result = {
        **evaluate(pair, held_out, world, args.seed),
        "train_minutes": round(train_seconds / 60, 2),
        "steps": args.steps,
        "edits_seen": args.steps * args.batch_size,
        "settings": {"lr": args.lr, "batch_size": args.batch_size, "kinds": kinds, "preset": cfg.name},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
