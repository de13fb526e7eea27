"""The pair as one directory: save -> load gives identical outputs; bad checkpoints name the tensor."""

import json

import pytest
import torch
from PIL import Image

from duogen.model.chat import last_text_chunk_mask
from duogen.model.errors import CheckpointMismatchError, DuoGenInputError
from duogen.model.flow import sample_latent
from duogen.model.images import to_rgb
from duogen.model.pair import DuoGenPair
from duogen.model.presets import tiny
from duogen.model.vae import DuoGenVAE

CONV = [
    {"role": "user", "content": [{"type": "text", "text": "move it"}, {"type": "image",
                                  "image": Image.new("RGB", (64, 64), (200, 30, 30))}]},
    {"role": "assistant", "content": "Step one: slide right."},
]  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    pair = DuoGenPair.build(tiny(), seed=3)
    path = tmp_path_factory.mktemp("pair")
    pair.save_pretrained(path)
    return pair, path


def _outputs(pair):
    enc = pair.mllm.encode(CONV, add_generation_prompt=True)
    logits = pair.mllm.forward_logits(enc)
    text, negative = pair.text_streams(enc, len(enc))
    latent = pair.vae.encode_image(enc.images[0], pair.pixel_multiple)
    flow = pair.config.flow
    drawn = sample_latent(pair.dit, [latent], (8, 8), text, negative, flow, torch.Generator().manual_seed(0))
    return logits, text, latent, drawn, pair.vae.decode(drawn)


def test_save_load_gives_identical_outputs(saved):
    pair, path = saved
    assert json.loads((path / "duogen_config.json").read_text())["name"] == "tiny"
    for part in ("mllm", "dit", "vae"):
        assert any((path / part).glob("*.safetensors")), part
    loaded = DuoGenPair.from_pretrained(path)
    with torch.no_grad():
        for a, b in zip(_outputs(pair), _outputs(loaded), strict=True):
            assert torch.equal(a, b)


def test_text_stream_and_negative(saved):
    pair, _ = saved
    enc = pair.mllm.encode(CONV, add_generation_prompt=True)
    n = len(enc)
    with torch.no_grad():
        text, negative = pair.text_streams(enc, n)
    cfg = pair.config
    assert text.shape == (n, cfg.connector.in_channels)
    dropped = int(last_text_chunk_mask(enc.chunk_ids, n).sum())
    assert 0 < dropped < n and negative.shape == (n - dropped, cfg.connector.in_channels)
    # every layer block of the stream is normalised over its channels
    blocks = text.view(n, cfg.connector.num_layers, cfg.connector.layer_width)
    torch.testing.assert_close(blocks.mean(-1), torch.zeros(n, cfg.connector.num_layers), atol=1e-4, rtol=0)


def test_dit_checkpoint_of_another_shape_names_the_tensor(saved, tmp_path):
    _, path = saved
    other = tiny()
    other.dit.adaln_lora_dim = 8
    with pytest.raises(CheckpointMismatchError, match=r"norm1\.linear_1\.weight"):
        from duogen.model.dit import DuoGenDiT

        DuoGenDiT.from_pretrained(path / "dit", other.dit)


def test_mllm_checkpoint_of_another_shape_names_the_tensor(saved):
    from duogen.model.mllm import DuoGenMLLM

    _, path = saved
    other = tiny().mllm
    other.intermediate_size = 96
    with pytest.raises(CheckpointMismatchError, match=r"mlp\.(gate|up|down)_proj\.weight"):
        DuoGenMLLM.from_pretrained(path / "mllm", other)


def test_not_a_pair_directory(tmp_path):
    with pytest.raises(DuoGenInputError, match="duogen_config.json is missing"):
        DuoGenPair.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("image", "words"),
    [
        ("not an image", "expected a PIL"),
        (Image.new("RGB", (0, 5)), "empty"),
        (Image.new("CMYK", (8, 8)), "unsupported image mode"),
    ],
)
def test_bad_images_for_the_vae(image, words):
    with pytest.raises(DuoGenInputError, match=words):
        to_rgb(image)


def test_vae_round_trip_shapes():
    vae = DuoGenVAE(tiny().vae).eval()
    with torch.no_grad():
        latent = vae.encode_image(Image.new("RGB", (70, 41), (0, 90, 200)), multiple=16)
        assert latent.shape == (16, 48 // 8, 64 // 8)
        assert vae.decode_image(latent).size == (64, 48)
    with pytest.raises(DuoGenInputError, match="not a multiple of 8"):
        vae.encode(torch.zeros(3, 12, 16))


def test_toy_preset_pixel_codec_is_exact_and_saves(tmp_path):
    from duogen.components.toyworld import random_task, render
    from duogen.model.config import VAEConfig
    from duogen.model.presets import toy
    from duogen.model.vae import PixelCodec

    pair = DuoGenPair.build(toy(), seed=0)
    assert isinstance(pair.vae, PixelCodec) and pair.pixel_multiple == 8
    image = render(random_task(5).scenes[0])
    latent = pair.vae.encode_image(image, pair.pixel_multiple)
    assert latent.shape == (48, 16, 16)
    assert pair.vae.decode_image(latent).tobytes() == image.tobytes()
    pair.save_pretrained(tmp_path / "toy")
    loaded = DuoGenPair.from_pretrained(tmp_path / "toy")
    assert isinstance(loaded.vae, PixelCodec)
    with pytest.raises(ValueError, match="factor 4 has 48 channels"):
        VAEConfig(
            kind="pixel", z_dim=16, scale_factor_spatial=4, latents_mean=(0.0,) * 16, latents_std=(1.0,) * 16
        )


def test_a_pair_loads_in_bfloat16_and_still_draws(saved, monkeypatch):
    """`from_pretrained(dtype=...)` places the MLLM and the DiT in that dtype (the VAE stays float32) and the
    interleaved loop runs across the dtype boundary; CUDA asked for where there is none is a clear error."""
    from duogen.model.generate import Answer, GenerationOptions, generate

    path = saved[1]
    pair = DuoGenPair.from_pretrained(path, device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in pair.dit.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in pair.mllm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in pair.vae.parameters()} <= {torch.float32}
    answer = Answer()
    for event in generate(
        pair, CONV[:1], GenerationOptions(max_new_tokens=3, max_images=2, force_bov=True, force_bov_every=1)
    ):
        answer.add(event)
    assert [im.size for im in answer.images] == [(64, 64), (64, 64)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DuoGenInputError, match="CUDA is not available"):
        DuoGenPair.from_pretrained(path, device="cuda")
