"""Curated shards -> Stage-1 token sequences and Stage-2 flow-matching examples."""

import random

import pytest
import torch

from duogen.components.curation.executor import StageContext, WorkUnit
from duogen.components.curation.synthetic import plan_instructions, synthetic_stage
from duogen.components.training.data import stage1_example, stage2_example, to_conversation
from duogen.model.chat import IGNORE_INDEX
from duogen.model.flow import flow_matching_loss
from duogen.model.pair import DuoGenPair
from duogen.model.presets import tiny


@pytest.fixture(scope="module")
def samples():
    inputs = [i for i in plan_instructions(per_seed=1, seed=0) if i["domain"] == "shapes on a canvas"][:4]
    items = synthetic_stage(WorkUnit(0, inputs), StageContext(0))
    assert len(items) == 4
    return items


@pytest.fixture(scope="module")
def pair():
    return DuoGenPair.build(tiny(), seed=0)


def test_stage1_labels_cover_bov_and_assistant_text_only(pair, samples):
    sample, images = samples[0]
    enc = stage1_example(pair, sample, images)
    bov = pair.mllm.bov_token_id
    n_assistant_images = sum(p.type == "image" for p in sample.turns[1].parts)
    assert len(enc.bov_positions) == n_assistant_images > 0
    assert all(enc.labels[p] == bov for p in enc.bov_positions)
    for s, e in enc.image_spans:
        assert (enc.labels[s - 1 : e + 1] == IGNORE_INDEX).all()


def test_stage2_example_targets_an_assistant_image(pair, samples):
    sample, images = samples[1]
    ex = stage2_example(pair, sample, images, random.Random(0))
    assert ex is not None and ex.target == len(ex.latents) - 1 >= 1  # at least the user's image before it
    assert ex.text.shape[1] == pair.config.connector.in_channels
    dropped = stage2_example(pair, sample, images, random.Random(0), text_dropout=1.0)
    # dropout gives generation's CFG negative: the history without the step's own text chunk
    enc = pair.mllm.encode(to_conversation(sample, images))
    streams = [pair.text_streams(enc, b) for b in enc.bov_positions]
    assert any(torch.equal(negative, dropped.text) for _, negative in streams)
    assert not any(torch.equal(full, dropped.text) for full, _ in streams)
    loss = flow_matching_loss(pair.dit, [ex, dropped], pair.config.flow, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)


def test_bov_structure_is_checked(samples):
    sample, images = samples[2]
    sample.turns[1].parts = [p for p in sample.turns[1].parts if p.type != "bov"]
    with pytest.raises(ValueError, match="follow <BOV>"):
        to_conversation(sample, images)


def test_the_frozen_mllm_stops_at_the_targets_bov(pair, samples):
    """Stage 2's text stream for an image comes from the tokens before its <BOV>: the MLLM runs over those
    only (not the whole conversation with the later images), and the stream equals the full run's rows."""
    sample, images = samples[1]
    enc = pair.mllm.encode(to_conversation(sample, images))
    first = enc.bov_positions[0]
    assert enc.image_spans[-1][0] > first  # its own image (at least) comes after it
    seen = []
    hook = pair.mllm.model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        text, _ = pair.text_streams(enc, first)
    finally:
        hook.remove()
    assert seen == [first]
    full = pair.mllm.layer_hidden_states(enc)
    from duogen.model.connector import stack_layers

    expected = stack_layers(full, eps=pair.config.connector.norm_eps)[:first]
    torch.testing.assert_close(text, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(Exception, match="cut through an image"):
        enc.prefix(enc.image_spans[0][0] + 1)


def test_dali_decodes_the_examples_images_as_pil_does(pair, samples):
    """The trainer's DALI image path (CPU operators here; nvJPEG on the rank's GPU on a GPU node) gives the
    same Stage-2 example as PIL: same pictures, same latents, same text stream."""
    from duogen.components.training.dali_images import DaliDecoder, fitted_size

    sample, images = samples[1]
    decoder = DaliDecoder(torch.device("cpu"), pair.pixel_multiple)
    decoded = decoder(images)
    assert set(decoded) == set(sample.image_refs()) and decoder.decoded == len(decoded)
    for ref, picture in decoded.items():
        import io

        from PIL import Image

        original = Image.open(io.BytesIO(images[ref])).convert("RGB")
        assert picture.size == fitted_size(original.size, pair.pixel_multiple)
        if picture.size == original.size:  # lossless PNGs at the fitted size: identical pixels
            assert picture.tobytes() == original.tobytes()
    with_dali = stage2_example(pair, sample, images, random.Random(0), decode=decoder)
    with_pil = stage2_example(pair, sample, images, random.Random(0))
    assert with_dali.target == with_pil.target
    for a, b in zip(with_dali.latents, with_pil.latents, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(with_dali.text, with_pil.text)
