"""Stage 2: train connector + DiT with flow matching, the MLLM frozen (its all-layer hidden states before a
`<BOV>` are the DiT's text stream), on every sample with an assistant picture; the sources drawn by the
curation registry's shares. Model code is imported when a part is used (see stage1.py)."""

from __future__ import annotations

from duogen.components.curation.registry import stage2_mix

from . import StageSpec

CONNECTOR = "crossattn_proj."


def with_trainable(pair, dit):
    from duogen.model.pair import DuoGenPair

    return DuoGenPair(pair.config, pair.mllm, dit, pair.vae)


def example(pair, sample, images, rng, text_dropout=0.0, decode=None):
    from ..data import stage2_example

    return stage2_example(pair, sample, images, rng, text_dropout, decode)


def loss(pair):
    from ..losses import FlowMatchingLoss

    return FlowMatchingLoss(pair.dit, pair.config.flow)


def parallelize(dit, tp: int, fp8: str | None):
    from ..parallelize import parallelize_dit

    return parallelize_dit(dit, tp, fp8=fp8)


def pack(examples, budget: int, pair):
    from ..data import pack_by_token_budget

    return pack_by_token_budget(examples, budget, pair.config.dit.patch_size)


def param_groups(model, cfg) -> list[dict]:
    """The connector at lr, the DiT's own layers at lr x dit_lr_ratio (one group when equal)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.dit_lr_ratio == 1.0:
        return [{"params": [p for _, p in params]}]
    connector = [p for n, p in params if n.startswith(CONNECTOR)]
    body = [p for n, p in params if not n.startswith(CONNECTOR)]
    groups = [{"params": connector}, {"params": body, "lr": cfg.lr * cfg.dit_lr_ratio}]
    return [g for g in groups if g["params"]]


def _checkpointing(pair) -> None:
    pair.dit.gradient_checkpointing = True


SPEC = StageSpec(
    name="stage2",
    trainable=lambda pair: pair.dit,
    with_trainable=with_trainable,
    example=example,
    loss=loss,
    parallelize=parallelize,
    activation_checkpointing=_checkpointing,
    param_groups=param_groups,
    keeps=lambda sample: any(p.type == "bov" for t in sample.turns for p in t.parts),
    default_mix=stage2_mix,
    pack=pack,
)
