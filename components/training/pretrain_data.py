"""Pretraining data: the data engine's toy dialogues as Stage-1 or Stage-2 examples, by stream position.

Qwen2.5-VL-Instruct and Cosmos were pretrained before anyone joined them; the toy pair's parts are too, on an
endless seeded stream of the data engine's own dialogues (`curation.synthetic_stream`: 1-4 steps, the pool's
wordings, the user's picture before or after the text). Each position becomes an example through the very
function the stage's spec uses (`stages/`), so pretraining is shaped exactly as Stage 1 /
Stage 2 and generation are: for the DiT one random step of a dialogue is the target, every earlier picture a
condition frame, the text stream the all-layer hidden states of everything before its `<BOV>` from the
pair's MLLM (the shipped pretrained one: the DiT's fixed text encoder, as Cosmos' is its Qwen2.5-VL), and
its CFG negative drops the last text chunk (trained at `text_dropout`). Every example is a pure function of
its position, so a resumed or data-parallel run draws what an uninterrupted one does.

Held-out sets come from the stream's `eval` split: single-step edits (`held_out_edits`, for the DiT's
edit curve) and multi-step dialogues (`held_out_dialogues`, judged teacher-forced like Stage 2's output).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from duogen.components.curation.synthetic_stream import StreamConfig, held_out_dialogues, stream_dialogue
from duogen.components.toyworld import Task
from duogen.model.chat import ImagePart
from duogen.model.pair import DuoGenPair

from . import stages
from .data import to_conversation


@dataclass
class Edit:
    """One held-out single-step edit as `judge_edits` needs it."""

    task: Task
    before: torch.Tensor  # latent [C, h, w]
    after: torch.Tensor
    text: torch.Tensor  # the step's text stream [L, connector_in]
    negative: torch.Tensor  # its CFG negative


class DialogueData:
    """`source(position) -> example` for the Trainer: Stage-1 (`stage="stage1"`) or Stage-2 examples of the
    stream's dialogues."""

    def __init__(
        self,
        pair: DuoGenPair,
        stage: str,
        stream: StreamConfig | None = None,
        text_dropout: float = 0.0,
    ) -> None:
        self.spec = stages.get(stage)  # a stage name that is no spec is an error naming the stages
        self.pair, self.stream = pair, stream or StreamConfig()
        self.text_dropout = text_dropout

    def __call__(self, position: int):
        sample, files, _ = stream_dialogue(self.stream, position)
        rng = random.Random(f"stage2:{self.stream.seed}:{position}")  # e.g. the target step, the text dropout
        return self.spec.example(self.pair, sample, files, rng, self.text_dropout)

    def held_out_dialogues(self, count: int, steps=(2, 3, 4)):
        """(sample, images, task) of `count` eval-split dialogues, for `evaluate_teacher_forced`."""
        return held_out_dialogues(self.stream, count, steps)

    @torch.no_grad()
    def held_out_edits(self, count: int) -> list[Edit]:
        """`count` single-step eval-split dialogues as edits: the picture before and after, and the text
        stream of the step's `<BOV>` (the user's request, its picture, "Step 1: ...")."""
        pair, edits = self.pair, []
        for sample, files, task in held_out_dialogues(self.stream, count, steps=(1,)):
            turns = to_conversation(sample, files)
            enc = pair.mllm.encode(turns)
            text, negative = pair.text_streams(enc, enc.bov_positions[0])
            pictures = [p.image for t in turns for p in t.parts if isinstance(p, ImagePart)]
            before, after = (pair.vae.encode_image(im, pair.pixel_multiple) for im in pictures)
            edits.append(Edit(task, before, after, text, negative))
        return edits
