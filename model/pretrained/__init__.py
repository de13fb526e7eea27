"""Pretrained parts shipped in the package: where a preset's MLLM and DiT start (`DuoGenConfig.mllm_init`,
`DuoGenConfig.dit_init`).

Production starts its MLLM from Qwen2.5-VL-7B-Instruct and its DiT from Cosmos-Predict-2.5; the toy preset
starts from `toy_mllm/` (transformers layout, made by `duogen pretrain mllm`) and `toy_dit/` (diffusers
layout, `duogen pretrain dit`, pretrained on that MLLM's hidden states). How each was made is in its
`CARD.json`. A preset whose part no longer matches the shipped one fails loudly, never half-loads.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from duogen.model.config import DiTConfig, MLLMConfig
from duogen.model.errors import DuoGenInputError
from duogen.model.mllm import DUOGEN_FILE as MLLM_CONFIG  # the MLLM folder's record of its MLLMConfig

HERE = Path(__file__).parent
PARTS = {"mllm": "model.safetensors", "dit": "diffusion_pytorch_model.safetensors"}
WEIGHTS = PARTS["dit"]


def pretrained_dir(part: str, name: str) -> Path:
    """The shipped `part` ("mllm" or "dit") called `name` (e.g. "toy"): OUT/<part> of its pretraining."""
    path = HERE / f"{name}_{part}"
    if part not in PARTS:
        raise DuoGenInputError(f"unknown part {part!r}; parts are {sorted(PARTS)}")
    shipped = sorted(p.name.removesuffix(f"_{part}") for p in HERE.glob(f"*_{part}") if p.is_dir())
    if not path.is_dir():
        raise DuoGenInputError(f"unknown pretrained {part} {name!r}; shipped: {shipped}")
    if not (path / PARTS[part]).exists():
        raise DuoGenInputError(f"the pretrained {part} {name!r} is missing from the package ({path})")
    return path


def pretrained_card(part: str, name: str) -> dict:
    return json.loads((pretrained_dir(part, name) / "CARD.json").read_text())


def _differences(shipped: dict, wanted: dict) -> list[str]:
    def norm(v):
        return tuple(v) if isinstance(v, list) else v

    return sorted(k for k in wanted if k in shipped and norm(shipped[k]) != norm(wanted[k]))


def _check(part: str, name: str, shipped: dict, wanted: dict) -> None:
    if differ := _differences(shipped, wanted):
        detail = ", ".join(f"{k}: shipped {shipped[k]} vs preset {wanted[k]}" for k in differ[:4])
        raise DuoGenInputError(f"the pretrained {part} {name!r} was made for another config ({detail})")


def pretrained_dit_dir(name: str) -> Path:
    return pretrained_dir("dit", name)


def pretrained_dit_card(name: str) -> dict:
    return pretrained_card("dit", name)


def pretrained_dit_state(name: str, config: DiTConfig) -> dict[str, torch.Tensor]:
    """The shipped DiT's weights (diffusers names), after checking that it was made for `config`."""
    path = pretrained_dit_dir(name)
    _check("dit", name, json.loads((path / "config.json").read_text()), dataclasses.asdict(config))
    return load_file(str(path / WEIGHTS))


def pretrained_mllm_dir(name: str, config: MLLMConfig) -> Path:
    """The shipped MLLM's folder (`DuoGenMLLM.from_pretrained` opens it), after checking that it was made
    for `config` (its recorded MLLMConfig; the tensors' shapes are checked again as they load)."""
    path = pretrained_dir("mllm", name)
    _check("mllm", name, json.loads((path / MLLM_CONFIG).read_text()), dataclasses.asdict(config))
    return path
