"""Cosmos 3D RoPE computed per image, so every image of a pack gets the positions of its own size.

diffusers' `CosmosRotaryPosEmbed` builds one (T, H, W) grid for a dense video. A pack holds images of
different sizes, so we compute the same frequencies for explicit (t, h, w) ids per token: the spatial ids
run over the image's own grid and the temporal id is the image's index in its sample.
"""

from __future__ import annotations

import torch


class CosmosRope3D:
    """Frequencies identical to diffusers' `CosmosRotaryPosEmbed` (images, fps=None)."""

    def __init__(self, head_dim: int, rope_scale: tuple[float, float, float]) -> None:
        self.dim_h = head_dim // 6 * 2
        self.dim_w = head_dim // 6 * 2
        self.dim_t = head_dim - self.dim_h - self.dim_w
        ntk_t = rope_scale[0] ** (self.dim_t / (self.dim_t - 2))
        ntk_h = rope_scale[1] ** (self.dim_h / (self.dim_h - 2))
        ntk_w = rope_scale[2] ** (self.dim_w / (self.dim_w - 2))
        self.freqs_t = self._freqs(self.dim_t, 10000.0 * ntk_t)
        self.freqs_h = self._freqs(self.dim_h, 10000.0 * ntk_h)
        self.freqs_w = self._freqs(self.dim_w, 10000.0 * ntk_w)

    @staticmethod
    def _freqs(dim: int, theta: float) -> torch.Tensor:
        exponent = torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim
        return 1.0 / (theta**exponent)

    def __call__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids: [N, 3] integer (t, h, w) per token -> (cos, sin), each [N, head_dim] float32."""
        pos = ids.to(torch.float32)
        emb_t = torch.outer(pos[:, 0], self.freqs_t.to(pos.device))
        emb_h = torch.outer(pos[:, 1], self.freqs_h.to(pos.device))
        emb_w = torch.outer(pos[:, 2], self.freqs_w.to(pos.device))
        freqs = torch.cat([emb_t, emb_h, emb_w] * 2, dim=-1)
        return torch.cos(freqs), torch.sin(freqs)


def frame_rope_ids(t_index: int, height: int, width: int) -> torch.Tensor:
    """(t, h, w) ids of one frame's tokens in row-major order: [height * width, 3]."""
    hh, ww = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    tt = torch.full_like(hh, t_index)
    return torch.stack([tt, hh, ww], dim=-1).reshape(-1, 3)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE (diffusers `use_real_unbind_dim=-2`); x [N, heads, d], cos/sin [N, d]."""
    x_real, x_imag = x.unflatten(-1, (2, -1)).unbind(-2)
    rotated = torch.cat([-x_imag, x_real], dim=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)
