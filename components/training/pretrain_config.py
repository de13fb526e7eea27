"""The pretraining recipes' settings (`duogen pretrain mllm|dit`), apart from the code that runs them so the
CLI can show their defaults without importing torch. One dataclass; `PretrainConfig.recipe(part)` gives a
part's shipped recipe, which the CLI's flags then override."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

PARTS = ("mllm", "dit")
KINDS = ("move", "recolour", "add", "remove", "resize", "swap")  # toyworld.world.ACTION_KINDS, torch-free


def _f(default, help: str, **kw):
    """A field with its `--flag` help (the CLI's flags are generated from these fields)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class PretrainConfig:
    part: str = _f(
        "dit", "mllm (Stage 1's loss on the stream) or dit (Stage 2's, the MLLM frozen)", cli=False
    )
    preset: str = _f("toy", "the pair's preset")
    out: str = _f("outputs/pretrain-dit", "checkpoints and the result")
    steps: int = _f(12000, "optimizer steps")
    batch_size: int = _f(8, "per data-parallel process")
    lr: float = _f(1e-3, "AdamW peak lr, cosine after warm-up")
    warmup_steps: int = _f(200, "linear warm-up steps")
    min_lr_ratio: float = _f(0.1, "the cosine's floor as a fraction of lr")
    nproc: int = _f(2, "data-parallel processes (torchrun on 127.0.0.1; one core each)")
    eval_every: int = _f(1000, "steps between evaluations")
    eval_count: int = _f(
        120, "held-out items judged at every evaluation (mllm: tasks per request form; dit: edits)"
    )
    text_dropout: float = _f(0.1, "to the CFG negative (the negative generation samples with)", part="dit")
    seed: int = _f(0, "weights and data")
    ckpt_every: int = _f(500, "steps between checkpoints")
    # the stream (`curation.synthetic_stream`): dialogue lengths and how often each action kind is drawn
    min_steps: int = _f(1, "shortest dialogue")
    max_steps: int = _f(4, "longest dialogue")
    kind_weights: dict[str, float] = _f(
        dict.fromkeys(KINDS, 1.0), f"JSON {{kind: weight}} over {', '.join(KINDS)}"
    )
    # dit only
    edit_weight: float = _f(3.0, "loss weight of edited positions (1 only copies, 10 blots)", part="dit")
    pos_embed: bool = _f(True, "a learnable absolute position embedding besides RoPE", part="dit")
    init: str | None = _f(None, "start from this saved DiT folder (diffusers layout), not random", part="dit")
    ema: float | None = _f(None, "judge and export an EMA of the DiT with this decay", part="dit")
    tracking_uri: str | None = _f(None, "MLflow (default: sqlite under OUT/train)")
    experiment: str = _f("", "MLflow experiment (default: duogen-pretrain-PART)", cli=False)

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {self.part!r}")
        if min(self.steps, self.batch_size, self.eval_count, self.nproc) < 1:
            raise ValueError("steps, batch_size, eval_count and nproc must be at least 1")
        unknown = set(self.kind_weights) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown action kinds {sorted(unknown)} in kind_weights; kinds: {list(KINDS)}")
        self.experiment = self.experiment or f"duogen-pretrain-{self.part}"

    @classmethod
    def recipe(cls, part: str, **overrides) -> PretrainConfig:
        """The shipped recipe of `part` (what made `model/pretrained/toy_<part>`), with overrides."""
        return cls(**{**RECIPES[part], "part": part, **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPES = {
    "mllm": dict(out="outputs/pretrain-mllm", steps=8000, batch_size=8, lr=3e-3, warmup_steps=100,
                 eval_every=1000, eval_count=16, min_steps=1, max_steps=4),
    "dit": dict(out="outputs/pretrain-dit", steps=12000, batch_size=8, lr=5e-4, warmup_steps=200,
                eval_every=3000, eval_count=120, ema=0.999,
                kind_weights=dict(move=1.5, recolour=1.0, add=1.5, remove=0.5, resize=1.0, swap=1.5)),
}  # fmt: skip
# The shipped toy DiT ran the dit recipe with `--init` the toy DiT shipped before it (12,000 steps of
# single-step edits on the untrained MLLM's states; README "The pretrained toy parts"): a CARD's config
# and the recipe differ only in where the run wrote, what it started from and how many items it judged.
