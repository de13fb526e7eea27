"""DuoGenMLLM on the tiny preset: config mapping, `<BOV>` rows, hidden states, save/load, mismatches."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image
from transformers import Qwen2_5_VLForConditionalGeneration

from duogen.model.config import MLLMConfig
from duogen.model.errors import CheckpointMismatchError
from duogen.model.mllm import DUOGEN_FILE, DuoGenMLLM, hf_config
from duogen.model.presets import tiny
from duogen.model.tokenizer import build_tokenizer

QWEN25_VL_7B_PARAMS = 8_292_166_656


@pytest.fixture(scope="module")
def mllm() -> DuoGenMLLM:
    return DuoGenMLLM.build(tiny().mllm, seed=0)


def conversation():
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a red square"},
                {"type": "image", "image": Image.new("RGB", (84, 56), (200, 0, 0))},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "ok"},
                {"type": "image", "image": Image.new("RGB", (56, 56), (0, 0, 200))},
            ],
        },
    ]


def test_production_config_is_qwen25_vl_7b_on_meta():
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(hf_config(MLLMConfig()))
    assert sum(p.numel() for p in model.parameters()) == QWEN25_VL_7B_PARAMS


def test_hf_config_maps_tiny(mllm):
    cfg, hc, tok = mllm.cfg, mllm.model.config, mllm.tokenizer
    assert hc.text_config.hidden_size == cfg.hidden_size and hc.text_config.num_hidden_layers == 2
    assert hc.text_config.rope_parameters["mrope_section"] == list(cfg.mrope_section)
    assert hc.vision_config.out_hidden_size == cfg.hidden_size and hc.vision_config.depth == cfg.vision_depth
    assert hc.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert hc.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert mllm.bov_token_id == 264 and mllm.im_end_token_id == mllm.eos_token_id == 258


def test_bov_rows_are_the_mean(mllm):
    bov = mllm.bov_token_id
    others = [i for i in mllm.tokenizer.get_vocab().values() if i != bov]
    for weight in (mllm.model.get_input_embeddings().weight, mllm.model.get_output_embeddings().weight):
        torch.testing.assert_close(weight[bov], weight[others].mean(0))


@torch.no_grad()
def test_layer_hidden_states_match_transformers(mllm):
    e = mllm.encode(conversation())
    hidden = mllm.layer_hidden_states(e)
    assert hidden.shape == (mllm.num_layers, len(e), mllm.cfg.hidden_size)
    ref = mllm.model(**e.model_inputs(), output_hidden_states=True).hidden_states
    assert len(ref) == mllm.num_layers + 1
    torch.testing.assert_close(hidden, torch.stack(ref[1:])[:, 0])
    picked = mllm.layer_hidden_states(e, positions=e.bov_positions)
    torch.testing.assert_close(picked, hidden[:, e.bov_positions])


@torch.no_grad()
def test_images_get_3d_rope(mllm):
    """transformers 5.23 only builds mRoPE positions when `mm_token_type_ids` is passed; we must pass it."""
    e = mllm.encode(conversation())
    with_types = mllm.forward_logits(e)
    e.mm_token_type_ids = torch.zeros_like(e.mm_token_type_ids)  # falls back to 1-D positions
    assert not torch.allclose(with_types, mllm.forward_logits(e))


def test_loss_is_next_token_cross_entropy_on_the_assistant_tokens_only(mllm):
    """Fails when the prompt (user text, image placeholders) is trained on, when labels are not shifted by
    one, or when the ignore index is wrong: the loss must equal the mean cross-entropy of each assistant
    token given everything before it."""
    e = mllm.encode(conversation())
    out = mllm(e, with_loss=True)
    assert out.logits.shape == (1, len(e), mllm.cfg.vocab_size)
    labels = e.labels
    trained = (labels != -100).nonzero().flatten()
    assert len(trained) > 0 and len(trained) < len(e) // 2  # the answer, not the prompt
    im_start = mllm.tokenizer.convert_tokens_to_ids("<|im_start|>")
    turns = (e.input_ids == im_start).nonzero().flatten()
    assert trained.min() > turns[-1]  # nothing before the assistant's turn carries a label
    assert torch.equal(labels[trained], e.input_ids[trained])  # a position's label is its own token
    logits = out.logits[0].float()
    expected = torch.nn.functional.cross_entropy(logits[trained - 1], e.input_ids[trained])  # shifted
    torch.testing.assert_close(out.loss.float(), expected, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_save_load_gives_identical_logits(mllm, tmp_path):
    mllm.save_pretrained(tmp_path)
    loaded = DuoGenMLLM.from_pretrained(tmp_path)
    assert loaded.cfg == mllm.cfg and loaded.bov_token_id == mllm.bov_token_id
    e = mllm.encode(conversation())
    assert torch.equal(loaded.encode(conversation()).input_ids, e.input_ids)
    torch.testing.assert_close(loaded.forward_logits(e), mllm.forward_logits(e), rtol=0, atol=0)


@pytest.mark.parametrize("vocab_size", [288, 265])
def test_plain_qwen_checkpoint_gets_bov(tmp_path, vocab_size):
    """A checkpoint whose tokenizer lacks `<BOV>` and without our JSON: `<BOV>` is added, row = mean."""
    cfg = dataclasses.replace(tiny().mllm, vocab_size=vocab_size)
    source = DuoGenMLLM.build(cfg)
    source.save_pretrained(tmp_path)
    (tmp_path / DUOGEN_FILE).unlink()
    build_tokenizer(bov_token="<|object_ref_start|>").save_pretrained(tmp_path)  # 265 tokens, none is <BOV>
    loaded = DuoGenMLLM.from_pretrained(tmp_path)
    bov = loaded.bov_token_id
    assert bov == 265 and loaded.tokenizer.convert_tokens_to_ids("<|object_ref_start|>") == 264
    assert loaded.cfg.vocab_size == max(vocab_size, 266) == loaded.model.get_input_embeddings().num_embeddings
    for weight in (loaded.model.get_input_embeddings().weight, loaded.model.get_output_embeddings().weight):
        assert weight.shape[0] == loaded.cfg.vocab_size
        torch.testing.assert_close(weight[bov], weight[:265].mean(0))
    assert loaded.tokenizer.decode(loaded.encode(conversation()).input_ids).count("<BOV>") == 1


def test_checkpoint_mismatch_names_tensor(mllm, tmp_path):
    mllm.save_pretrained(tmp_path)
    other = dataclasses.replace(mllm.cfg, intermediate_size=96)
    with pytest.raises(
        CheckpointMismatchError, match=r"mlp\.down_proj\.weight: checkpoint \(64, 128\) vs model"
    ):
        DuoGenMLLM.from_pretrained(tmp_path, cfg=other)
