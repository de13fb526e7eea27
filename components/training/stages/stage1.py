"""Stage 1: tune the MLLM (next-token loss; user turns and vision tokens masked, `<BOV>` in the loss), on the
dialogue sources only."""

from __future__ import annotations

import torch
from torch import nn

from duogen.components.curation.registry import stage1_sources
from duogen.model.mllm import DuoGenMLLM
from duogen.model.pair import DuoGenPair

from ..data import stage1_example
from ..parallelize import parallelize_mllm
from . import StageSpec


class Stage1Loss(nn.Module):
    """Mean next-token loss of a micro-batch in one module call, so DDP sees one forward per backward."""

    def __init__(self, mllm: DuoGenMLLM) -> None:
        super().__init__()
        self.mllm = mllm

    def forward(self, examples, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.stack([self.mllm.forward(e, with_loss=True).loss for e in examples]).mean()


def with_trainable(pair: DuoGenPair, model: nn.Module) -> DuoGenPair:
    mllm = DuoGenMLLM(pair.mllm.cfg, model, pair.mllm.tokenizer, pair.mllm.image_processor)
    return DuoGenPair(pair.config, mllm, pair.dit, pair.vae)


SPEC = StageSpec(
    name="stage1",
    trainable=lambda pair: pair.mllm.model,
    with_trainable=with_trainable,
    example=lambda pair, sample, images, rng, text_dropout=0.0, decode=None: stage1_example(
        pair, sample, images, decode
    ),
    loss=lambda pair: Stage1Loss(pair.mllm),
    parallelize=lambda model, tp, fp8: parallelize_mllm(model, tp, fp8=fp8),
    activation_checkpointing=lambda pair: pair.mllm.model.gradient_checkpointing_enable(),
    param_groups=lambda model, cfg: [{"params": [p for p in model.parameters() if p.requires_grad]}],
    reads=lambda source: source in stage1_sources(),
    find_unused_parameters=True,  # a text-only micro-batch never reaches the vision tower
)
