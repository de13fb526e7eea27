"""The packed DiT against diffusers' dense Cosmos, and packing's promises (isolation, per-image RoPE)."""

import pytest
import torch

from duogen.model.diffusers_compat import dense_forward, diffusers_cosmos
from duogen.model.dit import DuoGenDiT
from duogen.model.errors import CheckpointMismatchError, DuoGenInputError
from duogen.model.packing import Frame, pack_samples, unpack
from duogen.model.presets import tiny
from duogen.model.rope import CosmosRope3D

torch.manual_seed(0)


@pytest.fixture(scope="module")
def cfg():
    return tiny().dit


@pytest.fixture(scope="module")
def pair(cfg):
    ref = diffusers_cosmos(cfg, seed=0)
    ours = DuoGenDiT(cfg).eval()
    ours.load_diffusers_state_dict(ref.state_dict())
    return ref, ours


def _frames(sizes, sigmas=None, cond=None):
    sigmas = sigmas or [0.5] * len(sizes)
    cond = cond or [i < len(sizes) - 1 for i in range(len(sizes))]
    return [Frame(torch.randn(16, h, w), s, c) for (h, w), s, c in zip(sizes, sigmas, cond, strict=True)]


def _run(model, samples, texts):
    pack = pack_samples(samples, texts, model.config.patch_size, max_frames=model.config.max_frames)
    with torch.no_grad():
        return unpack(model(pack), pack, model.config.out_channels)


def test_equals_diffusers_on_one_uniform_sample(pair, cfg):
    ref, ours = pair
    frames = _frames([(8, 12)] * 3, sigmas=[1e-4, 1e-4, 0.7], cond=[True, True, False])
    text = torch.randn(7, cfg.crossattn_proj_in_channels)
    with torch.no_grad():
        expected = dense_forward(ref, frames, text)
    got = torch.stack(_run(ours, [frames], [text])[0], dim=1)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4


def test_the_diffusers_comparison_detects_a_changed_weight(pair, cfg):
    ref, ours = pair
    changed = DuoGenDiT(cfg).eval()
    changed.load_diffusers_state_dict(ours.state_dict())
    with torch.no_grad():
        changed.transformer_blocks[0].attn2.norm_k.weight.add_(0.05)
    frames = _frames([(8, 12)] * 2, sigmas=[1e-4, 0.7], cond=[True, False])
    text = torch.randn(7, cfg.crossattn_proj_in_channels)
    with torch.no_grad():
        expected = dense_forward(ref, frames, text)
    got = torch.stack(_run(changed, [frames], [text])[0], dim=1)
    assert (got - expected).abs().max().item() > 1e-4


def test_pack_equals_each_sample_alone(pair, cfg):
    _, ours = pair
    samples = [_frames([(8, 8), (6, 10)]), _frames([(4, 4)]), _frames([(10, 6), (8, 8), (2, 2)])]
    texts = [torch.randn(n, cfg.crossattn_proj_in_channels) for n in (5, 9, 2)]
    packed = _run(ours, samples, texts)
    for sample, text, got in zip(samples, texts, packed, strict=True):
        alone = _run(ours, [sample], [text])[0]
        for a, b in zip(alone, got, strict=True):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_uniform_batch_with_padded_text_equals_alone(pair, cfg):
    """Same frame sizes take the batched path; text of different lengths is padded and masked."""
    _, ours = pair
    samples = [_frames([(6, 6), (6, 6)]) for _ in range(3)]
    texts = [torch.randn(n, cfg.crossattn_proj_in_channels) for n in (3, 8, 5)]
    pack = pack_samples(samples, texts, ours.config.patch_size)
    assert pack.uniform and not bool(pack.text_mask.all())
    packed = _run(ours, samples, texts)
    for sample, text, got in zip(samples, texts, packed, strict=True):
        torch.testing.assert_close(got[-1], _run(ours, [sample], [text])[0][-1], atol=1e-5, rtol=1e-5)


def test_rope_ids_follow_each_image(cfg):
    frames = _frames([(8, 12), (4, 4), (6, 2)])
    pack = pack_samples([frames], [torch.randn(2, 4)], cfg.patch_size)
    counts = pack.frame_token_counts()
    assert counts == [4 * 6, 2 * 2, 3 * 1]
    ids = pack.rope_ids.split(counts)
    for t, (frame_ids, (gh, gw)) in enumerate(zip(ids, pack.frame_grid, strict=True)):
        assert frame_ids[:, 0].eq(t).all()
        assert frame_ids[:, 1].max().item() == gh - 1 and frame_ids[:, 2].max().item() == gw - 1
        assert frame_ids[0].tolist() == [t, 0, 0]
    assert ids[1].tolist() == [[1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1]]


def test_rope_matches_diffusers_dense_grid(cfg):
    from diffusers.models.transformers.transformer_cosmos import CosmosRotaryPosEmbed

    ref = CosmosRotaryPosEmbed(
        cfg.attention_head_dim, cfg.max_size, cfg.patch_size, rope_scale=cfg.rope_scale
    )
    cos_ref, sin_ref = ref(torch.zeros(1, 18, 3, 8, 12))
    frames = _frames([(8, 12)] * 3)
    pack = pack_samples([frames], [torch.randn(2, 4)], cfg.patch_size)
    cos, sin = CosmosRope3D(cfg.attention_head_dim, cfg.rope_scale)(pack.rope_ids)
    torch.testing.assert_close(cos, cos_ref)
    torch.testing.assert_close(sin, sin_ref)


def test_save_load_round_trip_and_diffusers_reads_it(pair, tmp_path, cfg):
    from diffusers import CosmosTransformer3DModel

    _, ours = pair
    ours.save_pretrained(tmp_path / "dit")
    loaded = DuoGenDiT.from_pretrained(tmp_path / "dit")
    samples, texts = [_frames([(4, 6), (4, 6)])], [torch.randn(3, cfg.crossattn_proj_in_channels)]
    torch.testing.assert_close(_run(loaded, samples, texts)[0][-1], _run(ours, samples, texts)[0][-1])
    theirs = CosmosTransformer3DModel.from_pretrained(tmp_path / "dit")
    for k, v in theirs.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k]), k


def test_mismatched_checkpoint_names_the_tensor(pair, cfg):
    _, ours = pair
    state = dict(ours.state_dict())
    state["proj_out.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointMismatchError, match=r"proj_out\.weight.*\(3, 3\)"):
        DuoGenDiT(cfg).load_diffusers_state_dict(state)
    del state["proj_out.weight"]
    with pytest.raises(CheckpointMismatchError, match="missing tensors.*proj_out.weight"):
        DuoGenDiT(cfg).load_diffusers_state_dict(state)


@pytest.mark.parametrize(
    ("samples", "texts", "words"),
    [
        ([], [], "no samples"),
        ([[]], [torch.randn(2, 4)], "no frames"),
        ([[Frame(torch.randn(16, 5, 4))]], [torch.randn(2, 4)], "not divisible"),
        ([[Frame(torch.randn(16, 0, 4))]], [torch.randn(2, 4)], "latent must be"),
        ([[Frame(torch.randn(16, 4, 4))]], [torch.randn(0, 4)], "non-empty"),
        ([[Frame(torch.randn(16, 4, 4))] * 13], [torch.randn(2, 4)], "at most 12"),
    ],
)
def test_bad_packs_raise_clear_errors(cfg, samples, texts, words):
    with pytest.raises(DuoGenInputError, match=words):
        pack_samples(samples, texts, cfg.patch_size, max_frames=cfg.max_frames)


def test_the_learnable_absolute_position_embedding_equals_diffusers(cfg):
    """Cosmos' `extra_pos_embed_type="learnable"` (per t/h/w embeddings added at every block): the packed DiT
    loads diffusers' weights unchanged and gives its output; the embedding changes the output."""
    import dataclasses

    learnable = dataclasses.replace(cfg, extra_pos_embed_type="learnable")
    ref = diffusers_cosmos(learnable, seed=1)
    ours = DuoGenDiT(learnable).eval()
    ours.load_diffusers_state_dict(ref.state_dict())
    assert ours.learnable_pos_embed.pos_emb_h.shape == ref.learnable_pos_embed.pos_emb_h.shape
    frames = _frames([(8, 12)] * 2, sigmas=[1e-4, 0.7], cond=[True, False])
    text = torch.randn(5, cfg.crossattn_proj_in_channels)
    with torch.no_grad():
        expected = dense_forward(ref, frames, text)
    got = torch.stack(_run(ours, [frames], [text])[0], dim=1)
    assert (got - expected).abs().max().item() <= 1e-4
    with torch.no_grad():
        ours.learnable_pos_embed.pos_emb_w.mul_(-1.0)
    flipped = torch.stack(_run(ours, [frames], [text])[0], dim=1)
    assert (flipped - expected).abs().max().item() > 1e-3
