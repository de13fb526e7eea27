"""Configuration dataclasses of the pair, with a JSON round trip.

Field names follow the libraries the parts come from (transformers' Qwen2.5-VL, diffusers'
`CosmosTransformer3DModel` and `AutoencoderKLWan`), so a config maps onto theirs without a lookup table.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _from_dict(cls, data: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            kwargs[f.name] = (
                tuple(value) if isinstance(value, list) and str(f.type).startswith("tuple") else value
            )
    return cls(**kwargs)


@dataclass
class MLLMConfig:
    """Qwen2.5-VL text + vision sizes, plus what DuoGen adds (the `<BOV>` token, the 480 px cap)."""

    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    max_position_embeddings: int = 128000
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    mrope_section: tuple[int, ...] = (16, 24, 24)
    tie_word_embeddings: bool = False
    vision_depth: int = 32
    vision_hidden_size: int = 1280
    vision_intermediate_size: int = 3420
    vision_num_heads: int = 16
    vision_patch_size: int = 14
    vision_spatial_merge_size: int = 2
    vision_temporal_patch_size: int = 2
    vision_window_size: int = 112
    vision_fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    max_image_side: int = 480
    max_context: int = 32768
    bov_token: str = "<BOV>"
    # Words the offline tokenizer learns whole (byte-level BPE trained on them; empty: bytes only). The toy
    # preset names its world's words, so a shape's name is one token instead of a dozen bytes.
    bpe_words: tuple[str, ...] = ()


@dataclass
class ConnectorConfig:
    """Cosmos-Predict-2.5 `crossattn_proj`: every MLLM layer normalised, concatenated, Linear -> GELU."""

    num_layers: int = 28
    layer_width: int = 3584
    out_channels: int = 1024
    norm_eps: float = 1e-8

    @property
    def in_channels(self) -> int:
        return self.num_layers * self.layer_width


@dataclass
class DiTConfig:
    """Arguments of diffusers' `CosmosTransformer3DModel` (Predict-2.5 layout) plus DuoGen's frame budget."""

    in_channels: int = 17  # 16 latent + 1 condition mask; the padding-mask channel is added on top
    out_channels: int = 16
    num_attention_heads: int = 16
    attention_head_dim: int = 128
    num_layers: int = 28
    mlp_ratio: float = 4.0
    text_embed_dim: int = 1024
    adaln_lora_dim: int = 256
    max_size: tuple[int, int, int] = (128, 240, 240)
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_scale: tuple[float, float, float] = (1.0, 3.0, 3.0)
    concat_padding_mask: bool = True
    use_crossattn_projection: bool = True
    crossattn_proj_in_channels: int = 100352
    encoder_hidden_states_channels: int = 1024
    max_frames: int = 16  # images (condition + target) one sample may hold
    # Cosmos' learnable absolute position embedding (per t, h, w; added at every block), besides 3D RoPE:
    # None (Predict-2.5's setting) or "learnable". Relative attention alone cannot say "at the top left".
    extra_pos_embed_type: str | None = None

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def diffusers_kwargs(self) -> dict[str, Any]:
        """The keyword arguments diffusers' `CosmosTransformer3DModel` takes for the same network."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "max_frames"}


@dataclass
class VAEConfig:
    """Arguments of diffusers' `AutoencoderKLWan` (Wan2.1: 16 latent channels, 4x8x8 compression), or, with
    `kind="pixel"`, an exactly invertible space-to-depth codec (z_dim = 3 * scale_factor_spatial ** 2)."""

    kind: str = "wan"  # "wan" or "pixel"
    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    scale_factor_spatial: int = 8
    latents_mean: tuple[float, ...] = (
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    )  # fmt: skip
    latents_std: tuple[float, ...] = (
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.kind not in ("wan", "pixel"):
            raise ValueError(f"VAE kind must be 'wan' or 'pixel', got {self.kind!r}")
        if self.kind == "pixel" and self.z_dim != 3 * self.scale_factor_spatial**2:
            need = 3 * self.scale_factor_spatial**2
            raise ValueError(f"a pixel codec with factor {self.scale_factor_spatial} has {need} channels")
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError(f"latents_mean/std need {self.z_dim} values")

    def diffusers_kwargs(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        out.pop("kind")
        return out


@dataclass
class FlowConfig:
    """Flow matching: x_t = (1-s) x0 + s noise, target noise - x0, logit-normal s with a shift."""

    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 3.0
    condition_sigma: float = 1e-4  # "timestep ~0" given to clean condition frames
    num_inference_steps: int = 35
    guidance_scale: float = 7.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)  # sigma range where CFG applies
    sampler: str = "unipc"  # "unipc" or "euler"
    # What the DiT's output means: "velocity" (noise - x0, Cosmos/diffusers), "sample" (x0; the velocity is
    # then (x_s - x0) / s) or "residual" (x0 = the previous picture's latent + output: the DiT predicts the
    # change; the first picture, or one of another size than its predecessor, falls back to "sample").
    # x0-prediction suits pixel-space patches whose dimension is close to the DiT's width: clean images lie
    # on a low-dimensional manifold, noise does not (Li & He 2025, "Back to Basics: Let Denoising Generative
    # Models Denoise"). In a conversation each picture edits the one before, so under "residual" keeping
    # every untouched shape is the default, not something learned. The loss stays on the velocity.
    prediction: str = "velocity"
    # Where a picture's flow starts: "noise", or "previous": the previous picture's latent plus
    # `source_noise` x noise (a bridge from the last picture; the first picture, or one of another size
    # than its predecessor, starts from noise). The drawn picture then sees what it edits in its own tokens.
    source: str = "noise"
    source_noise: float = 1.0
    min_sigma: float = 0.05  # the loss divides an x0-prediction by at least this s (bounds its weight)
    # Loss weight of the latent positions where the target differs from the previous picture (the edit)
    # against the unchanged ones (1: a plain mean). An edit touches a few percent of a picture, so a plain
    # mean mostly rewards copying; a weighted mean (sum w err^2 / sum w) makes the edit count.
    edit_weight: float = 1.0


@dataclass
class DuoGenConfig:
    """The whole pair: what `save_pretrained` writes as `duogen_config.json`."""

    name: str = "duogen-7b-2b"
    mllm: MLLMConfig = field(default_factory=MLLMConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    # where `DuoGenPair.build` starts the MLLM and the DiT: a part shipped in the package (`model.pretrained`,
    # e.g. "toy") or None (random weights); a saved pair's parts are its own, whatever these say
    mllm_init: str | None = None
    dit_init: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        c, m, d = self.connector, self.mllm, self.dit
        if c.num_layers != m.num_hidden_layers or c.layer_width != m.hidden_size:
            raise ValueError(
                f"connector reads {c.num_layers} layers x {c.layer_width} but the MLLM has "
                f"{m.num_hidden_layers} x {m.hidden_size}"
            )
        if (
            d.crossattn_proj_in_channels != c.in_channels
            or d.encoder_hidden_states_channels != c.out_channels
        ):
            raise ValueError(
                f"DiT crossattn_proj is {d.crossattn_proj_in_channels}->{d.encoder_hidden_states_channels}, "
                f"connector is {c.in_channels}->{c.out_channels}"
            )
        if d.text_embed_dim != d.encoder_hidden_states_channels:
            raise ValueError(
                "DiT text_embed_dim must equal encoder_hidden_states_channels (the connector output)"
            )
        if d.in_channels != self.vae.z_dim + 1 or d.out_channels != self.vae.z_dim:
            raise ValueError(
                f"DiT channels {d.in_channels}/{d.out_channels} do not fit VAE z_dim {self.vae.z_dim}"
            )
        if sum(m.mrope_section) * 2 != m.hidden_size // m.num_attention_heads:
            raise ValueError("MLLM mrope_section must sum to head_dim / 2")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DuoGenConfig:
        parts = {"mllm": MLLMConfig, "connector": ConnectorConfig, "dit": DiTConfig, "vae": VAEConfig,
                 "flow": FlowConfig}  # fmt: skip
        kwargs = {k: _from_dict(parts[k], v) if k in parts else v for k, v in data.items()}
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> DuoGenConfig:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> DuoGenConfig:
        return cls.from_json(Path(path).read_text())
