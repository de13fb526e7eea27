"""Named configurations: `duogen-7b-2b` (production, DESIGN.md section 3) and `tiny` (CPU tests, seconds)."""

from __future__ import annotations

import dataclasses

from .config import ConnectorConfig, DiTConfig, DuoGenConfig, FlowConfig, MLLMConfig, VAEConfig
from .errors import DuoGenInputError


def production() -> DuoGenConfig:
    """Qwen2.5-VL-7B-Instruct + Cosmos-Predict2.5-2B + Wan2.1 VAE, exactly the released sizes."""
    return DuoGenConfig(name="duogen-7b-2b")


def tiny() -> DuoGenConfig:
    """Same classes, small sizes: builds in well under a second and runs on one CPU core."""
    mllm = MLLMConfig(
        vocab_size=288,  # 256 byte tokens + Qwen's specials + <BOV>, rounded up
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        mrope_section=(2, 3, 3),
        vision_depth=2,
        vision_hidden_size=32,
        vision_intermediate_size=64,
        vision_num_heads=2,
        vision_fullatt_block_indexes=(1,),
        max_context=4096,
    )
    connector = ConnectorConfig(num_layers=2, layer_width=64, out_channels=32)
    dit = DiTConfig(
        num_attention_heads=2,
        attention_head_dim=32,
        num_layers=2,
        text_embed_dim=32,
        adaln_lora_dim=16,
        max_size=(128, 240, 240),
        crossattn_proj_in_channels=connector.in_channels,
        encoder_hidden_states_channels=32,
        max_frames=12,
    )
    vae = VAEConfig(
        base_dim=8,
        dim_mult=(1, 2, 4, 4),
        num_res_blocks=1,
        latents_mean=(0.0,) * 16,
        latents_std=(1.0,) * 16,
    )
    flow = FlowConfig(num_inference_steps=8, guidance_scale=3.0)
    return DuoGenConfig(name="tiny", mllm=mllm, connector=connector, dit=dit, vae=vae, flow=flow)


# The toy world's words (its requests, steps and answers; each seen 20+ times in the synthetic data): the toy
# tokenizer learns them whole, so copying "the green triangle" from a request is 3 tokens, not 18 bytes.
TOY_WORDS = (
    "Add", "How", "I", "Make", "Move", "Remove", "Show", "Step", "Swap", "What", "a", "add", "after", "and",
    "are", "at", "blue", "bottom", "can", "centre", "circle", "do", "down", "green", "how", "large", "left",
    "make", "me", "move", "of", "positions", "purple", "red", "remove", "right", "small", "square", "steps",
    "swap", "that", "the", "then", "to", "top", "triangle", "up", "want", "yellow",
)  # fmt: skip


def toy() -> DuoGenConfig:
    """The embedded default for the toy world: small enough to train on 2 CPU cores in minutes.

    Its images go through the exactly invertible pixel codec (space-to-depth by 4: 64x64 -> 16x16x48), so
    a drawn picture is exactly what the DiT produced (see `vae.PixelCodec` for why not a Wan VAE here).
    """
    mllm = MLLMConfig(
        vocab_size=512,  # bytes + the toy words' merges (TOY_WORDS) + specials, rounded up
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        mrope_section=(4, 4, 4),
        vision_depth=2,
        vision_hidden_size=48,
        vision_intermediate_size=96,
        vision_num_heads=2,
        vision_fullatt_block_indexes=(1,),
        max_context=4096,
        bpe_words=TOY_WORDS,
    )
    connector = ConnectorConfig(num_layers=3, layer_width=96, out_channels=128)
    dit = DiTConfig(
        in_channels=49,
        out_channels=48,
        # 256 wide: a patch token carries 2x2x48 = 192 latent values, so a narrower DiT is a bottleneck (at
        # 128 wide the flow loss fell half as fast per step on toy-world edits). 4 heads of 64, not 8 of 32:
        # q/k are RMS-normed, so a head's attention logits are bounded by sqrt(head_dim), and copying a
        # condition frame needs sharp attention to one position (x0 error at sigma 1 after 400 steps:
        # 0.196 vs 0.222).
        num_attention_heads=4,
        attention_head_dim=64,
        num_layers=4,
        text_embed_dim=128,
        adaln_lora_dim=32,
        crossattn_proj_in_channels=connector.in_channels,
        encoder_hidden_states_channels=128,
        max_frames=8,
        # Cosmos' learnable absolute position embedding: "add a square at the top left" needs absolute
        # position, which RoPE's relative attention cannot give (add / move 0-2 of 30 without it)
        extra_pos_embed_type="learnable",
    )
    vae = VAEConfig(
        kind="pixel", z_dim=48, scale_factor_spatial=4, latents_mean=(0.0,) * 48, latents_std=(1.0,) * 48
    )
    # Each picture is drawn from the previous one (flow source = previous latent + 0.5 noise) and the DiT
    # predicts the change to it (x0-prediction suits pixel patches as wide as the DiT; see FlowConfig).
    flow = FlowConfig(
        num_inference_steps=12, guidance_scale=2.0, prediction="residual", source="previous", source_noise=0.5
    )
    # both parts start pretrained (`duogen pretrain mllm`, then `duogen pretrain dit` on that MLLM's hidden
    # states), as production's start from Qwen2.5-VL-Instruct and Cosmos
    return DuoGenConfig(
        name="toy",
        mllm=mllm,
        connector=connector,
        dit=dit,
        vae=vae,
        flow=flow,
        mllm_init="toy",
        dit_init="toy",
    )


def toy_scratch() -> DuoGenConfig:
    """The toy preset with random weights in both parts (`--from-scratch`): what pretraining starts from,
    and the path before the pretrained parts shipped."""
    return dataclasses.replace(toy(), name="toy-scratch", mllm_init=None, dit_init=None)


PRESETS = {"tiny": tiny, "toy": toy, "toy-scratch": toy_scratch, "duogen-7b-2b": production}


def get_preset(name: str) -> DuoGenConfig:
    if name not in PRESETS:
        raise DuoGenInputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
