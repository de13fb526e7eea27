"""Stage 1: tune the MLLM (next-token loss; user turns and vision tokens masked, `<BOV>` in the loss), on the
dialogue sources only. Model code is imported when a part is used: listing stages and reading recipes (the
CLI, the pipeline's compilation) does not load torch."""

from __future__ import annotations

from duogen.components.curation.registry import stage1_sources

from . import StageSpec


def with_trainable(pair, model):
    from duogen.model.mllm import DuoGenMLLM
    from duogen.model.pair import DuoGenPair

    mllm = DuoGenMLLM(pair.mllm.cfg, model, pair.mllm.tokenizer, pair.mllm.image_processor)
    return DuoGenPair(pair.config, mllm, pair.dit, pair.vae)


def example(pair, sample, images, rng, text_dropout=0.0, decode=None):
    from ..data import stage1_example

    return stage1_example(pair, sample, images, decode)


def loss(pair):
    from ..losses import NextTokenLoss

    return NextTokenLoss(pair.mllm)


def parallelize(model, tp: int, fp8: str | None):
    from ..parallelize import parallelize_mllm

    return parallelize_mllm(model, tp, fp8=fp8)


SPEC = StageSpec(
    name="stage1",
    trainable=lambda pair: pair.mllm.model,
    with_trainable=with_trainable,
    example=example,
    loss=loss,
    parallelize=parallelize,
    activation_checkpointing=lambda pair: pair.mllm.model.gradient_checkpointing_enable(),
    param_groups=lambda model, cfg: [{"params": [p for p in model.parameters() if p.requires_grad]}],
    reads=lambda source: source in stage1_sources(),
)
