"""Configs round-trip through JSON, and the production preset has the released architectures' shapes."""

import pytest
import torch

from duogen.model.config import DuoGenConfig
from duogen.model.dit import DuoGenDiT
from duogen.model.presets import PRESETS, get_preset

# diffusers' scripts/convert_cosmos_to_diffusers.py, TRANSFORMER_CONFIGS["Cosmos-2.5-Predict-Base-2B"]
COSMOS_PREDICT25_2B = {
    "in_channels": 16 + 1,
    "out_channels": 16,
    "num_attention_heads": 16,
    "attention_head_dim": 128,
    "num_layers": 28,
    "mlp_ratio": 4.0,
    "text_embed_dim": 1024,
    "adaln_lora_dim": 256,
    "max_size": (128, 240, 240),
    "patch_size": (1, 2, 2),
    "rope_scale": (1.0, 3.0, 3.0),
    "concat_padding_mask": True,
    "extra_pos_embed_type": None,
    "use_crossattn_projection": True,
    "crossattn_proj_in_channels": 100352,
    "encoder_hidden_states_channels": 1024,
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name, tmp_path):
    cfg = get_preset(name)
    cfg.save(tmp_path / "c.json")
    assert DuoGenConfig.load(tmp_path / "c.json") == cfg


def test_unknown_key_and_inconsistent_parts_are_refused():
    data = get_preset("tiny").to_dict()
    data["dit"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        DuoGenConfig.from_dict(data)
    data = get_preset("tiny").to_dict()
    data["connector"]["num_layers"] = 3
    with pytest.raises(ValueError, match="connector reads 3 layers"):
        DuoGenConfig.from_dict(data)


def test_production_dit_matches_cosmos_predict25_2b():
    from diffusers import CosmosTransformer3DModel

    cfg = get_preset("duogen-7b-2b").dit
    assert {k: v for k, v in cfg.diffusers_kwargs().items()} == COSMOS_PREDICT25_2B
    with torch.device("meta"):
        ours = DuoGenDiT(cfg)
        theirs = CosmosTransformer3DModel(**COSMOS_PREDICT25_2B)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    theirs_shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert ours_shapes == theirs_shapes
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in theirs.parameters())
    assert 2.0e9 < n < 2.2e9  # "2B" incl. the 100352->1024 crossattn_proj
    assert ours.config.hidden_size == 2048 and ours.rope.dim_h == 42 and ours.rope.dim_t == 44


def test_production_connector_reads_all_28_layers_of_the_7b():
    cfg = get_preset("duogen-7b-2b")
    assert cfg.connector.num_layers == 28 and cfg.connector.layer_width == 3584
    assert cfg.connector.in_channels == 100352 == cfg.dit.crossattn_proj_in_channels
