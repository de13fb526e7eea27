"""The synthetic stage's toy dialogues as an endless seeded stream, for pretraining the toy pair's parts.

`synthetic_stage` answers a fixed, expanded prompt pool; pretraining wants more than any fixed set (a few
thousand dialogues are memorised long before the skill is learnt). Here each position of the stream is one
fresh toy instruction, made and answered exactly as the data engine does it (`toy_task`, `phrase` in one of
the pool's wordings, the user's picture before or after the text by `picture_first`, the toy oracle's steps,
`make_sample`), so what pretraining sees is what the data engine writes: the same `Sample`, the same images.
Every dialogue is a pure function of (seed, split, position); the `eval` split is another seed space.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from duogen.components.toyworld.serialize import task_to_json
from duogen.components.toyworld.world import ACTION_KINDS, Task, WorldConfig

from .sample import Sample
from .synthetic import make_sample
from .synthetic_generators import ToyOracleGenerator
from .synthetic_pool import Instruction, phrase, toy_task

DOMAIN, SUBCATEGORY = "shapes on a canvas", "pretraining stream"


@dataclass(frozen=True)
class StreamConfig:
    """What the stream draws: dialogues of `min_steps`..`max_steps` steps, action kinds by `kind_weights`
    (the order of `ACTION_KINDS`; equal by default)."""

    seed: int = 0
    min_steps: int = 1
    max_steps: int = 4
    kind_weights: tuple[float, ...] = (1.0,) * len(ACTION_KINDS)

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}..{self.max_steps}")
        if len(self.kind_weights) != len(ACTION_KINDS) or min(self.kind_weights) < 0:
            raise ValueError(
                f"kind_weights needs {len(ACTION_KINDS)} weights >= 0 ({', '.join(ACTION_KINDS)})"
            )
        if sum(self.kind_weights) <= 0:
            raise ValueError("kind_weights gives no action kind any weight")


def stream_instruction(cfg: StreamConfig, position: int, split: str = "train", steps: int | None = None):
    """(instruction, task) at a position of the stream; `steps` fixes the length (held-out sets use it)."""
    rng = random.Random(f"synthetic-stream:{split}:{cfg.seed}:{position}")
    steps = steps or rng.randint(cfg.min_steps, cfg.max_steps)
    task = toy_task(rng, ACTION_KINDS, steps, WorldConfig(), cfg.kind_weights)
    text = phrase(task, rng)
    return Instruction(DOMAIN, SUBCATEGORY, text, split, task_to_json(task)), task


def stream_dialogue(
    cfg: StreamConfig, position: int, split: str = "train", steps: int | None = None
) -> tuple[Sample, dict[str, bytes], Task]:
    """The data engine's dialogue at a position: (sample, its image files, the toy task behind it)."""
    instruction, task = stream_instruction(cfg, position, split, steps)
    answer = ToyOracleGenerator().answer(instruction)
    if answer is None:  # the oracle replays the task it was given: it always answers
        raise RuntimeError(f"the toy oracle could not answer {instruction.text!r}")
    sample, files = make_sample(instruction, answer, ToyOracleGenerator.name)
    return sample, files, task


def held_out_dialogues(cfg: StreamConfig, count: int, steps: Sequence[int] | None = None):
    """`count` dialogues of the eval split (never trained on): lengths cycle through `steps` when given."""
    return [stream_dialogue(cfg, i, "eval", steps[i % len(steps)] if steps else None) for i in range(count)]
