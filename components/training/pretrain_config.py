"""The pretraining recipes' settings (`duogen pretrain mllm|dit`), apart from the code that runs them so the
CLI can show their defaults without importing torch. One dataclass; `PretrainConfig.recipe(part)` gives a
part's shipped recipe, which the CLI's flags then override."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

PARTS = ("mllm", "dit")
KINDS = ("move", "recolour", "add", "remove", "resize", "swap")  # toyworld.world.ACTION_KINDS, torch-free


@dataclass
class PretrainConfig:
    part: str = "dit"  # "mllm" (Stage 1's loss on the stream) or "dit" (Stage 2's, the MLLM frozen)
    preset: str = "toy"
    out: str = "outputs/pretrain-dit"
    steps: int = 12000
    batch_size: int = 8  # per data-parallel process
    lr: float = 1e-3
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    nproc: int = 2  # data-parallel processes (torchrun on 127.0.0.1; one core each)
    eval_every: int = 1000
    eval_count: int = 120  # held-out items judged at every evaluation (edits / tasks per form)
    text_dropout: float = 0.1  # dit: the CFG negative generation samples with
    seed: int = 0
    ckpt_every: int = 500
    # the stream (`curation.synthetic_stream`): dialogue lengths and how often each action kind is drawn
    min_steps: int = 1
    max_steps: int = 4
    kind_weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 1.0))
    # dit only
    edit_weight: float = 3.0  # 1 only copies, 10 blots the pictures (README: the first DiT's trials)
    pos_embed: bool = True
    init: str | None = None  # start the DiT from a saved DiT folder (diffusers layout) instead of random
    ema: float | None = None  # export (and judge) an EMA of the DiT with this decay
    tracking_uri: str | None = None
    experiment: str = ""

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
