"""Stage 2: train connector + DiT with flow matching, the MLLM frozen (its all-layer hidden states before a
`<BOV>` are the DiT's text stream), on every sample with an assistant picture; the sources drawn by the
curation registry's shares."""

from __future__ import annotations

import torch
from torch import nn

from duogen.components.curation.registry import stage2_mix
from duogen.model.flow import flow_matching_loss
from duogen.model.pair import DuoGenPair

from ..data import pack_by_token_budget, stage2_example
from ..parallelize import parallelize_dit
from . import StageSpec

CONNECTOR = "crossattn_proj."


class Stage2Loss(nn.Module):
    """Flow-matching loss of a micro-batch in one module call (DDP wraps this, not the DiT: the loss reads
    the DiT's config, which a DDP wrapper hides)."""

    def __init__(self, dit: nn.Module, flow) -> None:
        super().__init__()
        self.dit, self.flow = dit, flow

    def forward(self, examples, generator: torch.Generator) -> torch.Tensor:
        return flow_matching_loss(self.dit, examples, self.flow, generator)


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """The connector at lr, the DiT's own layers at lr x dit_lr_ratio (one group when equal)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.dit_lr_ratio == 1.0:
        return [{"params": [p for _, p in params]}]
    connector = [p for n, p in params if n.startswith(CONNECTOR)]
    body = [p for n, p in params if not n.startswith(CONNECTOR)]
    groups = [{"params": connector}, {"params": body, "lr": cfg.lr * cfg.dit_lr_ratio}]
    return [g for g in groups if g["params"]]


def _checkpointing(pair: DuoGenPair) -> None:
    pair.dit.gradient_checkpointing = True


SPEC = StageSpec(
    name="stage2",
    trainable=lambda pair: pair.dit,
    with_trainable=lambda pair, dit: DuoGenPair(pair.config, pair.mllm, dit, pair.vae),
    example=stage2_example,
    loss=lambda pair: Stage2Loss(pair.dit, pair.config.flow),
    parallelize=lambda dit, tp, fp8: parallelize_dit(dit, tp, fp8=fp8),
    activation_checkpointing=_checkpointing,
    param_groups=param_groups,
    keeps=lambda sample: any(p.type == "bov" for t in sample.turns for p in t.parts),
    default_mix=stage2_mix,
    pack=lambda examples, budget, pair: pack_by_token_budget(examples, budget, pair.config.dit.patch_size),
)
