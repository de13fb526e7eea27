"""The stages' losses as modules: one call per micro-batch, so DDP (which wraps them) sees one forward per
backward."""

from __future__ import annotations

import torch
from torch import nn

from duogen.model.flow import flow_matching_loss
from duogen.model.mllm import DuoGenMLLM


class NextTokenLoss(nn.Module):
    """Stage 1: the mean next-token loss of a micro-batch.

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


class FlowMatchingLoss(nn.Module):
    """Stage 2: the flow-matching loss of a micro-batch (DDP wraps this, not the DiT: the loss reads the
    DiT's config, which a DDP wrapper hides)."""

    def __init__(self, dit: nn.Module, flow) -> None:
        super().__init__()
        self.dit, self.flow = dit, flow

    def forward(self, examples, generator: torch.Generator) -> torch.Tensor:
        return flow_matching_loss(self.dit, examples, self.flow, generator)
