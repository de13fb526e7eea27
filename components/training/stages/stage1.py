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
    """Mean next-token loss of a micro-batch in one module call, so DDP sees one forward per backward.

    A micro-batch without pictures never reaches the vision tower; a zero-weighted term puts the tower's
    parameters in the graph anyway (zero gradients), so every backward gives DDP every gradient and DDP need
    not search the graph for unused parameters on each step (`find_unused_parameters`)."""

    def __init__(self, mllm: DuoGenMLLM) -> None:
        super().__init__()
        self.mllm = mllm

    def forward(self, examples, generator: torch.Generator | None = None) -> torch.Tensor:
        loss = torch.stack([self.mllm.forward(e, with_loss=True).loss for e in examples]).mean()
        if not any(e.image_spans for e in examples):
            vision = self.mllm.model.model.visual.parameters()
            loss = loss + 0.0 * sum(p.sum() for p in vision if p.requires_grad)
        return loss


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
)
