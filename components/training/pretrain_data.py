"""The DiT's pretraining data: fresh single-step toy-world edits, captioned by a fixed text encoder.

Cosmos learns to draw from (video, caption) pairs with its own frozen text encoder before anyone aligns it to
an MLLM. The toy analog: a random scene and one valid action of any of the six kinds (a move is the world's
motion, a frame pair of its "video"); the DiT sees the scene before as its condition frame and learns the
scene after. The caption is the step's sentence exactly as the data engine writes it (`describe`), in a one-
step dialogue (a fixed request, then the assistant's "Step 1: <sentence>" and `<BOV>`), encoded by the
untrained MLLM at the pair's seed: its all-layer hidden states before `<BOV>` (`DuoGenPair.text_streams`), the
very stream Stage 2 feeds, from the weights Stage 1 starts from. Its CFG negative drops the dialogue's one
text chunk: the "no text" row, as Cosmos' empty prompt. Every example is a pure function of its position
(seeded), so a resumed run draws the same data; an unbounded stream means nothing to overfit. Held-out edits
come from another seed space.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from duogen.components.toyworld import Task, WorldConfig, random_task, render
from duogen.components.toyworld.world import ACTION_KINDS, describe
from duogen.model.chat import ImagePart, TextPart, Turn
from duogen.model.flow import TrainingExample
from duogen.model.pair import DuoGenPair

REQUEST = "Change the picture, one step."


@dataclass
class Edit:
    """One held-out edit as the judge needs it."""

    task: Task
    before: torch.Tensor  # latent [C, h, w]
    after: torch.Tensor
    text: torch.Tensor  # the caption stream [L, connector_in]
    negative: torch.Tensor  # the CFG negative


class EditData:
    """Toy-world single-step edits as Stage-2 `TrainingExample`s, by position."""

    def __init__(
        self,
        pair: DuoGenPair,
        world: WorldConfig | None = None,
        kinds: tuple[str, ...] = ACTION_KINDS,
        seed: int = 0,
        text_dropout: float = 0.0,
    ) -> None:
        self.pair, self.world, self.kinds = pair, world or WorldConfig(), tuple(kinds)
        self.seed, self.text_dropout = seed, text_dropout
        self._captions: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def task(self, position: int, split: str = "train") -> Task:
        return random_task(random.Random(f"{split}:{self.seed}:{position}"), self.world, 1, self.kinds)

    @torch.no_grad()
    def caption(self, sentence: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(stream, negative) of a step's sentence, cached (a few thousand distinct sentences)."""
        if sentence not in self._captions:
            blank = render(random_task(0, self.world, 1).scenes[0], self.world)  # after <BOV>: never read
            turns = [
                Turn("user", [TextPart(REQUEST)]),
                Turn("assistant", [TextPart(f"Step 1: {sentence}"), ImagePart(blank)]),
            ]
            enc = self.pair.mllm.encode(turns)
            self._captions[sentence] = self.pair.text_streams(enc, enc.bov_positions[0])
        return self._captions[sentence]

    @torch.no_grad()
    def latents(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        encode = self.pair.vae.encode_image
        before, after = (encode(render(s, self.world), self.pair.pixel_multiple) for s in task.scenes)
        return before, after

    def sentence(self, task: Task) -> str:
        return describe(task.actions[0], task.scenes[0], self.world)

    def __call__(self, position: int) -> TrainingExample:
        """The training example at a data position (text dropped to the negative at `text_dropout`)."""
        task = self.task(position)
        text, negative = self.caption(self.sentence(task))
        if random.Random(f"dropout:{self.seed}:{position}").random() < self.text_dropout:
            text = negative
        before, after = self.latents(task)
        return TrainingExample(latents=[before, after], target=1, text=text)

    def held_out(self, count: int) -> list[Edit]:
        """`count` edits from the evaluation seed space (never trained on)."""
        edits = []
        for i in range(count):
            task = self.task(i, split="eval")
            edits.append(Edit(task, *self.latents(task), *self.caption(self.sentence(task))))
        return edits
