"""The pretrained toy parts shipped in the package (`duogen.model.pretrained`): every toy pair starts from the
shipped MLLM and DiT, `toy-scratch` from neither, a config they were not made for is refused by name, and
each is what its card says (made by `duogen pretrain mllm|dit`, small, in its library's layout)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from safetensors.torch import load_file

from duogen.components.training.pretrain_config import PretrainConfig
from duogen.model.dit import DuoGenDiT
from duogen.model.errors import DuoGenInputError
from duogen.model.mllm import DuoGenMLLM
from duogen.model.pair import DuoGenPair
from duogen.model.presets import get_preset
from duogen.model.pretrained import (
    pretrained_card,
    pretrained_dir,
    pretrained_dit_state,
    pretrained_mllm_dir,
)

WEIGHTS = {"dit": "diffusion_pytorch_model.safetensors", "mllm": "model.safetensors"}


def _same(state: dict, shipped: dict) -> bool:
    return set(state) == set(shipped) and all(
        torch.equal(state[k], shipped[k].to(state[k].dtype)) for k in shipped
    )


def test_the_toy_preset_starts_from_the_shipped_parts_at_any_seed():
    dit = load_file(str(pretrained_dir("dit", "toy") / WEIGHTS["dit"]))
    mllm = DuoGenMLLM.from_pretrained(pretrained_dir("mllm", "toy")).model.state_dict()
    for seed in (0, 3):
        pair = DuoGenPair.build(get_preset("toy"), seed=seed)
        assert _same(pair.dit.state_dict(), dit) and _same(pair.mllm.model.state_dict(), mllm)
    scratch = DuoGenPair.build(get_preset("toy-scratch"), seed=0)  # --from-scratch: both random
    assert not _same(scratch.dit.state_dict(), dit) and not _same(scratch.mllm.model.state_dict(), mllm)


def test_a_config_the_parts_were_not_made_for_is_refused_by_name():
    other = dataclasses.replace(get_preset("toy").dit, num_layers=2)
    with pytest.raises(DuoGenInputError, match="num_layers: shipped 4 vs preset 2"):
        pretrained_dit_state("toy", other)
    with pytest.raises(DuoGenInputError, match="unknown pretrained dit 'cosmos'"):
        pretrained_dit_state("cosmos", other)
    wider = dataclasses.replace(get_preset("toy").mllm, hidden_size=128)
    with pytest.raises(DuoGenInputError, match="hidden_size: shipped 96 vs preset 128"):
        pretrained_mllm_dir("toy", wider)
    toy = get_preset("toy")
    config = dataclasses.replace(toy, mllm=dataclasses.replace(toy.mllm, intermediate_size=256))
    with pytest.raises(DuoGenInputError, match="intermediate_size: shipped 192 vs preset 256"):
        DuoGenPair.build(config)  # a pair whose preset asks for the shipped MLLM in another shape


@pytest.mark.parametrize("part", ["mllm", "dit"])
def test_each_shipped_part_is_small_in_its_layout_with_its_card(part):
    path = pretrained_dir(part, "toy")
    assert (path / WEIGHTS[part]).stat().st_size <= 20e6
    if part == "dit":
        assert json.loads((path / "config.json").read_text())["_class_name"] == "CosmosTransformer3DModel"
        assert DuoGenDiT.from_pretrained(path).config == get_preset("toy").dit
    else:
        assert json.loads((path / "config.json").read_text())["architectures"] == [
            "Qwen2_5_VLForConditionalGeneration"
        ]
        assert DuoGenMLLM.from_pretrained(path).cfg == get_preset("toy").mllm
    card = pretrained_card(part, "toy")
    assert card["command"].startswith(f"duogen pretrain {part}")
    assert not re.search(r"(?<![\w.:/])/(?:[\w.-]+/)+", json.dumps(card))  # no folder of the maker's machine
    assert card["steps"] == max(int(s) for s in card["curve"]) and card["config"]["seed"] == 0
    assert card["minutes"] > 0 and card["dialogues_seen"] > 0 and card["final"]
    # `duogen pretrain PART` at its defaults is the recipe that made the shipped part: the card's settings
    # differ from the recipe only in where it wrote, what it started from and how much it judged
    where = {"out", "init", "eval_count", "tracking_uri"}
    recipe = PretrainConfig.recipe(part).to_dict()
    assert {k: v for k, v in card["config"].items() if k not in where} == {
        k: v for k, v in recipe.items() if k not in where
    }
