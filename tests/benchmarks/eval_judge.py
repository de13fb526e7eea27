"""Does the toy-world judge agree with the ground truth? Planted answers, one JSON line.

For held-out toy tasks the exact answer is written ("Step k: <sentence>" + the rendered scene after each
step), then spoiled one way at a time at a random step: a wrong colour on an untouched shape, an untouched
shape moved, a missing picture, an extra picture, garbled step text, a picture that does not carry out its
step (the scene before it), a noisy picture. Each planted answer has a known verdict per metric (1.0 or
below: T-Com, I-Com, IT-Co, I-Co; I-Q at least 0.99 or below); `judge_agreement` is the fraction of
(answer, metric) verdicts the judge gets right.

    python tests/benchmarks/eval_judge.py [--tasks 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time

import numpy as np
from PIL import Image

from duogen.components.evaluation.toyworld_eval import held_out_tasks
from duogen.components.evaluation.toyworld_judge import METRICS, judge_answer
from duogen.components.toyworld import Move, WorldConfig, apply, render, touched_indices

# which metrics each planted fault must fail (all others must pass)
FAULTS = {
    "exact": set(),
    "wrong_colour": {"it_co", "i_co"},
    "moved_untouched": {"it_co", "i_co"},
    "missing_picture": {"i_com", "it_co"},
    "extra_picture": {"i_com"},
    "garbled_text": {"t_com"},
    "not_carried_out": {"it_co"},
    "noisy_picture": {"i_q"},
}


def untouched(task, k: int) -> list[int]:
    """Indices, in the scene after step k, of shapes the step left as they were."""
    before, after = task.scenes[k], task.scenes[k + 1]
    keep = [before.shapes[i] for i in range(len(before.shapes)) if i not in touched_indices(task.actions[k])]
    return [i for i, s in enumerate(after.shapes) if s in keep]


def plant(task, fault: str, rng: random.Random, cfg: WorldConfig) -> list | None:
    """The exact answer with `fault` planted at one step (None when the task offers no place for it)."""
    sentences = task.instructions(cfg)
    pictures = [render(s, cfg) for s in task.scenes[1:]]
    texts = [f"Step {k + 1}: {s} " for k, s in enumerate(sentences)]
    k = rng.randrange(len(sentences))
    if fault in ("wrong_colour", "moved_untouched"):
        choices = untouched(task, k)
        if not choices:
            return None
        i, after = rng.choice(choices), task.scenes[k + 1]
        shape = after.shapes[i]
        try:
            if fault == "wrong_colour":
                colour = rng.choice([c for c in cfg.colours if c != shape.colour])
                spoiled = dataclasses.replace(
                    after,
                    shapes=tuple(
                        dataclasses.replace(s, colour=colour) if j == i else s
                        for j, s in enumerate(after.shapes)
                    ),
                )
            else:
                spoiled = apply(after, Move(i, dx=rng.choice([-10, 10])), cfg)
        except ValueError:
            return None
        pictures[k] = render(spoiled, cfg)
    elif fault == "garbled_text":
        words = sentences[k].split()
        rng.shuffle(words)
        if words == sentences[k].split():
            return None
        texts[k] = f"Step {k + 1}: {' '.join(words)} "
    elif fault == "not_carried_out":
        pictures[k] = render(task.scenes[k], cfg)
    elif fault == "noisy_picture":
        arr = np.asarray(pictures[k], dtype=np.int16)
        noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 20, arr.shape)
        pictures[k] = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
    parts: list = []
    for j, (text, picture) in enumerate(zip(texts, pictures, strict=True)):
        parts.append(text)
        if not (fault == "missing_picture" and j == k):
            parts.append(picture)
        if fault == "extra_picture" and j == k:
            parts.append(picture)
    return parts


def verdicts(scores: dict) -> set[str]:
    failed = {m for m in METRICS if m != "i_q" and (scores[m] or 0.0) < 1.0}
    return failed | ({"i_q"} if (scores["i_q"] or 0.0) < 0.99 else set())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=60, help="held-out tasks (default: 60)")
    parser.add_argument("--steps", type=int, default=3, help="steps per task (default: 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg, rng = WorldConfig(), random.Random(args.seed)
    start = time.perf_counter()
    agree = total = samples = 0
    by_fault: dict[str, list[int]] = {f: [0, 0] for f in FAULTS}
    for task in held_out_tasks(args.tasks, args.steps, seed=args.seed):
        for fault, expected in FAULTS.items():
            parts = plant(task, fault, rng, cfg)
            if parts is None:
                continue
            got = verdicts(judge_answer(task, parts, cfg))
            right = sum((m in got) == (m in expected) for m in METRICS)
            agree, total, samples = agree + right, total + len(METRICS), samples + 1
            by_fault[fault][0] += right == len(METRICS)
            by_fault[fault][1] += 1
    print(
        json.dumps(
            {
                "judge_agreement": round(agree / total, 4),
                "samples": samples,
                "answers_fully_right_by_fault": {f: round(a / n, 4) for f, (a, n) in by_fault.items() if n},
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
