"""The DiT: Cosmos-Predict-2.5 over a *pack* of samples, each a list of images of any sizes.

Same network and parameter names as diffusers' `CosmosTransformer3DModel` (Predict-2.5 config, with
`crossattn_proj`), so its state dicts load unchanged. What differs is the input: a `Pack` (see packing.py)
instead of a dense `B, C, T, H, W` tensor. Per-frame timestep modulation is computed once per frame and
broadcast to its tokens (diffusers computes the AdaLN MLPs once per token); self-attention and
cross-attention never cross samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .config import DiTConfig
from .connector import Connector
from .errors import CheckpointMismatchError, DuoGenInputError
from .packing import Pack
from .rope import CosmosRope3D, apply_rope

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def timestep_embedding(sigmas: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding as diffusers' `Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)`."""
    half = dim // 2
    exponent = -torch.log(torch.tensor(10000.0)) * torch.arange(
        half, dtype=torch.float32, device=sigmas.device
    )
    emb = sigmas[:, None].float() * torch.exp(exponent / half)[None, :]
    return torch.cat([torch.cos(emb), torch.sin(emb)], dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


class PatchEmbed(nn.Module):
    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(hidden, hidden, bias=False)
        self.linear_2 = nn.Linear(hidden, 3 * hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimeEmbed(nn.Module):
    """Per-frame sigma -> (temb [F, 3D] for AdaLN, embedded timestep [F, D])."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.t_embedder = TimestepEmbedder(hidden)
        self.norm = RMSNorm(hidden, eps=1e-6)

    def forward(self, sigmas: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        proj = timestep_embedding(sigmas, self.hidden).to(dtype)
        return self.t_embedder(proj), self.norm(proj)


class AdaLNModulation(nn.Module):
    """The LoRA-style AdaLN MLP (`linear_1`, `linear_2`) of diffusers' `CosmosAdaLayerNorm[Zero]`."""

    def __init__(self, hidden: int, lora_dim: int, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.linear_1 = nn.Linear(hidden, lora_dim, bias=False)
        self.linear_2 = nn.Linear(lora_dim, chunks * hidden, bias=False)

    def forward(self, embedded: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        out = self.linear_2(self.linear_1(F.silu(embedded)))
        return out + temb[..., : out.shape[-1]]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + scale) + shift


class Attention(nn.Module):
    """q/k RMSNorm attention with diffusers' names (`to_q`, `norm_q`, `to_out.0`)."""

    def __init__(self, hidden: int, heads: int, head_dim: int, kv_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        kv_dim = kv_dim or hidden
        self.to_q = nn.Linear(hidden, inner, bias=False)
        self.to_k = nn.Linear(kv_dim, inner, bias=False)
        self.to_v = nn.Linear(kv_dim, inner, bias=False)
        self.norm_q = RMSNorm(head_dim, eps=1e-5)
        self.norm_k = RMSNorm(head_dim, eps=1e-5)
        self.to_out = nn.ModuleList([nn.Linear(inner, hidden, bias=False), nn.Dropout(0.0)])

    def project(self, x: torch.Tensor, context: torch.Tensor):
        q = self.norm_q(self.to_q(x).unflatten(-1, (self.heads, -1)))
        k = self.norm_k(self.to_k(context).unflatten(-1, (self.heads, -1)))
        v = self.to_v(context).unflatten(-1, (self.heads, -1))
        return q, k, v

    def out(self, o: torch.Tensor) -> torch.Tensor:
        return self.to_out[0](o.flatten(-2))


def _sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """[B, N, H, d] layout in and out."""
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return o.transpose(1, 2)


class FeedForward(nn.Module):
    def __init__(self, hidden: int, mult: float) -> None:
        super().__init__()
        inner = int(hidden * mult)
        proj = nn.Module()
        proj.proj = nn.Linear(hidden, inner, bias=False)
        self.net = nn.ModuleList([proj, nn.Dropout(0.0), nn.Linear(inner, hidden, bias=False)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](F.gelu(self.net[0].proj(x)))


class LearnablePosEmbed(nn.Module):
    """Cosmos' `CosmosLearnablePositionalEmbed` per packed token: pos_emb_t[t] + pos_emb_h[h] + pos_emb_w[w]
    (indices from the pack's RoPE ids), scaled to unit RMS per token, as diffusers does on a dense grid."""

    def __init__(
        self, hidden: int, max_size: tuple[int, int, int], patch: tuple[int, int, int], eps: float = 1e-6
    ):
        super().__init__()
        sizes = [m // p for m, p in zip(max_size, patch, strict=True)]
        self.eps = eps
        # random, not diffusers' zeros (there a checkpoint fills them): at zero the unit-RMS scaling divides
        # by eps and the first gradients are huge
        self.pos_emb_t = nn.Parameter(torch.randn(sizes[0], hidden))
        self.pos_emb_h = nn.Parameter(torch.randn(sizes[1], hidden))
        self.pos_emb_w = nn.Parameter(torch.randn(sizes[2], hidden))

    def forward(self, rope_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        t, h, w = rope_ids.long().unbind(-1)
        emb = self.pos_emb_t[t] + self.pos_emb_h[h] + self.pos_emb_w[w]
        norm = torch.linalg.vector_norm(emb, dim=-1, keepdim=True, dtype=torch.float32)
        norm = torch.add(self.eps, norm, alpha=(1 / emb.shape[-1]) ** 0.5)
        return (emb / norm).to(dtype)


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d, heads, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.attention_head_dim
        self.norm1 = AdaLNModulation(d, cfg.adaln_lora_dim, 3)
        self.attn1 = Attention(d, heads, hd)
        self.norm2 = AdaLNModulation(d, cfg.adaln_lora_dim, 3)
        self.attn2 = Attention(d, heads, hd, kv_dim=cfg.text_embed_dim)
        self.norm3 = AdaLNModulation(d, cfg.adaln_lora_dim, 3)
        self.ff = FeedForward(d, cfg.mlp_ratio)

    def forward(self, x: torch.Tensor, ctx: _Context) -> torch.Tensor:
        if ctx.extra_pos is not None:  # diffusers adds it at the start of every block
            x = x + ctx.extra_pos
        shift, scale, gate = ctx.per_token(self.norm1(ctx.embedded, ctx.temb)).chunk(3, dim=-1)
        h = modulate(x, shift, scale)
        q, k, v = self.attn1.project(h, h)
        q, k = apply_rope(q, ctx.cos, ctx.sin), apply_rope(k, ctx.cos, ctx.sin)
        x = x + gate * self.attn1.out(ctx.self_attention(q, k, v))

        shift, scale, gate = ctx.per_token(self.norm2(ctx.embedded, ctx.temb)).chunk(3, dim=-1)
        h = modulate(x, shift, scale)
        q, k, v = self.attn2.project(h, ctx.text)
        x = x + gate * self.attn2.out(ctx.cross_attention(q, k, v))

        shift, scale, gate = ctx.per_token(self.norm3(ctx.embedded, ctx.temb)).chunk(3, dim=-1)
        return x + gate * self.ff(modulate(x, shift, scale))


class _Context:
    """What every block needs about the pack: token->frame broadcast and sample-restricted attention."""

    def __init__(self, pack: Pack, temb, embedded, text, cos, sin, extra_pos=None) -> None:
        self.pack, self.temb, self.embedded, self.text, self.cos, self.sin = (
            pack,
            temb,
            embedded,
            text,
            cos,
            sin,
        )
        self.extra_pos = extra_pos
        counts = pack.frame_token_counts()
        self._same_frame_size = len(set(counts)) == 1
        self._frame_tokens = counts[0]

    def per_token(self, per_frame: torch.Tensor) -> torch.Tensor:
        if self._same_frame_size:  # a view, no gather
            f = per_frame.shape[0]
            return per_frame[:, None, :].expand(f, self._frame_tokens, -1).reshape(-1, per_frame.shape[-1])
        return per_frame[self.pack.frame_of_token]

    def self_attention(self, q, k, v) -> torch.Tensor:
        s = self.pack.num_samples
        if self.pack.uniform:
            return _sdpa(q.unflatten(0, (s, -1)), k.unflatten(0, (s, -1)), v.unflatten(0, (s, -1))).flatten(
                0, 1
            )
        outs = [
            _sdpa(qs[None], ks[None], vs[None])[0]
            for qs, ks, vs in zip(*(t.split(self.pack.sample_tokens) for t in (q, k, v)), strict=True)
        ]
        return torch.cat(outs)

    def cross_attention(self, q, k, v) -> torch.Tensor:
        """q [N, H, d] over the pack; k/v [S, L, H, d] padded text; padded text keys are masked out."""
        mask = self.pack.text_mask
        if self.pack.uniform:
            m = None if bool(mask.all()) else mask[:, None, None, :]
            return _sdpa(q.unflatten(0, (mask.shape[0], -1)), k, v, m).flatten(0, 1)
        lengths = mask.sum(dim=1).tolist()
        outs = [
            _sdpa(qs[None], k[i : i + 1, : lengths[i]], v[i : i + 1, : lengths[i]])[0]
            for i, qs in enumerate(q.split(self.pack.sample_tokens))
        ]
        return torch.cat(outs)


class DuoGenDiT(nn.Module):
    """Packed Cosmos-Predict-2.5 DiT. `forward(pack)` -> velocity tokens [N, p_h * p_w * p_t * C_out]."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.config = cfg
        d = cfg.hidden_size
        p = cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
        in_ch = cfg.in_channels + (1 if cfg.concat_padding_mask else 0)
        self.patch_embed = PatchEmbed(in_ch * p, d)
        self.time_embed = TimeEmbed(d)
        self.transformer_blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.num_layers)])
        self.norm_out = AdaLNModulation(d, cfg.adaln_lora_dim, 2)
        self.proj_out = nn.Linear(d, p * cfg.out_channels, bias=False)
        if cfg.use_crossattn_projection:
            self.crossattn_proj = Connector(
                cfg.crossattn_proj_in_channels, cfg.encoder_hidden_states_channels
            )
        self.rope = CosmosRope3D(cfg.attention_head_dim, cfg.rope_scale)
        if cfg.extra_pos_embed_type not in (None, "learnable"):
            raise DuoGenInputError(
                f"extra_pos_embed_type must be None or 'learnable', got {cfg.extra_pos_embed_type!r}"
            )
        self.learnable_pos_embed = (
            LearnablePosEmbed(d, cfg.max_size, cfg.patch_size)
            if cfg.extra_pos_embed_type == "learnable"
            else None
        )
        self.gradient_checkpointing = False
        self.text_projections = 0  # connector calls so far (inference projects once per image, not per step)

    @property
    def max_grid(self) -> tuple[int, int]:
        c = self.config
        return c.max_size[1] // c.patch_size[1], c.max_size[2] // c.patch_size[2]

    def check_grid(self, frame_grid: list[tuple[int, int]]) -> None:
        """Refuse frames larger than the positions the DiT was built for (`max_size`): a clear error instead
        of an out-of-memory or RoPE tables indexed past their end."""
        mh, mw = self.max_grid
        for gh, gw in frame_grid:
            if gh > mh or gw > mw:
                ph, pw = self.config.patch_size[1:]
                raise DuoGenInputError(
                    f"a {gh * ph}x{gw * pw} latent ({gh}x{gw} patches) is larger than this DiT's largest, "
                    f"{mh * ph}x{mw * pw} (max_size {tuple(self.config.max_size)}): use smaller images"
                )

    def project_text(self, text: torch.Tensor) -> torch.Tensor:
        """The connector (`crossattn_proj`) on a text stream [..., L, connector_in] -> [..., L, D_text], in
        the DiT's dtype. Inference calls it once per image and hands packs the result (`text_projected`):
        the stream does not change across denoising steps or CFG branches."""
        self.text_projections += 1
        text = text.to(self.patch_embed.proj.weight.dtype)
        return self.crossattn_proj(text) if self.config.use_crossattn_projection else text

    def forward(self, pack: Pack) -> torch.Tensor:
        self.check_grid(pack.frame_grid)
        dtype = self.patch_embed.proj.weight.dtype
        x = self.patch_embed(pack.tokens.to(dtype))
        temb, embedded = self.time_embed(pack.sigmas, dtype)
        text = pack.text.to(dtype) if pack.text_projected else self.project_text(pack.text)
        cos, sin = self.rope(pack.rope_ids)
        extra = None if self.learnable_pos_embed is None else self.learnable_pos_embed(pack.rope_ids, dtype)
        ctx = _Context(pack, temb, embedded, text, cos, sin, extra)
        for block in self.transformer_blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, ctx, use_reentrant=False)
            else:
                x = block(x, ctx)
        shift, scale = ctx.per_token(self.norm_out(embedded, temb)).chunk(2, dim=-1)
        return self.proj_out(modulate(x, shift, scale))

    # --- weights -------------------------------------------------------------------------------------------
    def load_diffusers_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a diffusers `CosmosTransformer3DModel` (Predict-2.5) state dict; names mismatching tensors."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        wrong = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in own if k in state_dict and state_dict[k].shape != own[k].shape]  # fmt: skip
        if missing or unexpected or wrong:
            parts = []
            if wrong:
                parts.append("shape mismatch: " + "; ".join(wrong[:5]))
            if missing:
                parts.append(f"missing tensors: {missing[:5]}")
            if unexpected:
                parts.append(f"unexpected tensors: {unexpected[:5]}")
            raise CheckpointMismatchError("DiT checkpoint does not fit the config: " + " | ".join(parts))
        self.load_state_dict(state_dict, strict=True)

    def save_pretrained(self, path: str | Path) -> None:
        """diffusers' layout (config.json + safetensors), so `CosmosTransformer3DModel` loads it too."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": "CosmosTransformer3DModel", **self.config.diffusers_kwargs()}
        config["max_frames"] = self.config.max_frames
        (path / "config.json").write_text(json.dumps(config, indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, path: str | Path, cfg: DiTConfig | None = None) -> DuoGenDiT:
        path = Path(path)
        if cfg is None:
            raw = json.loads((path / "config.json").read_text())
            fields = DiTConfig.__dataclass_fields__
            cfg = DiTConfig(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields}
            )
        model = cls(cfg)
        model.load_diffusers_state_dict(load_file(str(path / WEIGHTS_NAME)))
        return model
