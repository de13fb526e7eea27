"""The DiT pretraining recipe's settings (`duogen pretrain dit`), apart from the code that runs it so the CLI
can show their defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PretrainConfig:
    preset: str = "toy"
    out: str = "outputs/pretrain-dit"
    steps: int = 12000
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 200
    eval_every: int = 1000
    eval_edits: int = 120  # held-out edits drawn and judged at every evaluation
    edit_weight: float = 3.0  # 1 only copies, 10 blots the pictures (see README: the shipped DiT's trials)
    pos_embed: bool = True
    text_dropout: float = 0.1
    seed: int = 0
    ckpt_every: int = 500
    tracking_uri: str | None = None
    experiment: str = "duogen-pretrain-dit"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_edits < 1:
            raise ValueError("steps, batch_size and eval_edits must be at least 1")
