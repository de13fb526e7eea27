"""Pretrained DiTs shipped in the package: where a preset's DiT starts (`DuoGenConfig.dit_init`).

Production starts its DiT from Cosmos-Predict-2.5; the toy preset starts from `toy_dit/`, the toy DiT
pretrained on toy-world edits by `duogen pretrain dit` (diffusers layout; how it was made is in its
`CARD.json`). A preset whose DiT no longer matches the shipped one fails loudly, never half-loads.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from duogen.model.config import DiTConfig
from duogen.model.errors import DuoGenInputError

HERE = Path(__file__).parent
PRETRAINED_DITS = {"toy": HERE / "toy_dit"}
WEIGHTS = "diffusion_pytorch_model.safetensors"


def pretrained_dit_dir(name: str) -> Path:
    if name not in PRETRAINED_DITS:
        raise DuoGenInputError(f"unknown pretrained DiT {name!r}; shipped: {sorted(PRETRAINED_DITS)}")
    path = PRETRAINED_DITS[name]
    if not (path / WEIGHTS).exists():
        raise DuoGenInputError(f"the pretrained DiT {name!r} is missing from the package ({path / WEIGHTS})")
    return path


def pretrained_dit_card(name: str) -> dict:
    return json.loads((pretrained_dit_dir(name) / "CARD.json").read_text())


def pretrained_dit_state(name: str, config: DiTConfig) -> dict[str, torch.Tensor]:
    """The shipped DiT's weights (diffusers names), after checking that it was made for `config`."""
    path = pretrained_dit_dir(name)
    shipped = json.loads((path / "config.json").read_text())
    wanted = dataclasses.asdict(config)
    differ = sorted(
        k for k in wanted
        if k in shipped and (tuple(shipped[k]) if isinstance(shipped[k], list) else shipped[k]) != wanted[k]
    )  # fmt: skip
    if differ:
        detail = ", ".join(f"{k}: shipped {shipped[k]} vs preset {wanted[k]}" for k in differ[:4])
        raise DuoGenInputError(f"the pretrained DiT {name!r} was made for another DiT config ({detail})")
    return load_file(str(path / WEIGHTS))
