"""The pretrained toy DiT shipped in the package (`duogen.model.pretrained`): every toy pair starts from it,
`toy-scratch` does not, a DiT config it was not made for is refused by name, and it is what its card says."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from duogen.model.dit import DuoGenDiT
from duogen.model.errors import DuoGenInputError
from duogen.model.pair import DuoGenPair
from duogen.model.presets import get_preset
from duogen.model.pretrained import pretrained_dit_card, pretrained_dit_dir, pretrained_dit_state

WEIGHTS = "diffusion_pytorch_model.safetensors"


def test_the_toy_preset_starts_its_dit_from_the_shipped_weights_at_any_seed():
    shipped = load_file(str(pretrained_dit_dir("toy") / WEIGHTS))
    for seed in (0, 3):
        dit = DuoGenPair.build(get_preset("toy"), seed=seed).dit.state_dict()
        assert set(dit) == set(shipped)
        assert all(torch.equal(dit[k], shipped[k].to(dit[k].dtype)) for k in shipped)
    scratch = DuoGenPair.build(get_preset("toy-scratch"), seed=0).dit.state_dict()
    assert not all(torch.equal(scratch[k], shipped[k]) for k in shipped)  # --from-scratch: random


def test_a_dit_config_the_checkpoint_was_not_made_for_is_refused_by_name():
    other = dataclasses.replace(get_preset("toy").dit, num_layers=2)
    with pytest.raises(DuoGenInputError, match="num_layers: shipped 4 vs preset 2"):
        pretrained_dit_state("toy", other)
    with pytest.raises(DuoGenInputError, match="unknown pretrained DiT 'cosmos'"):
        pretrained_dit_state("cosmos", other)


def test_the_shipped_dit_is_small_in_diffusers_layout_with_its_card():
    path = pretrained_dit_dir("toy")
    assert (path / WEIGHTS).stat().st_size <= 20e6
    assert json.loads((path / "config.json").read_text())["_class_name"] == "CosmosTransformer3DModel"
    dit = DuoGenDiT.from_pretrained(path)
    assert dit.config == get_preset("toy").dit
    card = pretrained_dit_card("toy")
    assert card["command"].startswith("duogen pretrain dit")
    assert card["steps"] == max(int(s) for s in card["curve"]) and card["config"]["seed"] == 0
    assert card["minutes"] > 0 and 0 <= card["instruction_following"] <= 1
