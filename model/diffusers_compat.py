"""Bridges to diffusers' dense `CosmosTransformer3DModel`: the reference our packed DiT must equal.

diffusers resizes the padding mask with torchvision, which cannot be installed on CPU machines here; the
resize it needs (nearest, to the latent size) is done with `torch.nn.functional.interpolate` instead.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from .config import DiTConfig
from .packing import Frame


def _install_padding_mask_resize() -> None:
    from diffusers.models.transformers import transformer_cosmos

    if getattr(transformer_cosmos, "transforms", None) is not None:
        return

    def resize(x, size, interpolation=None):
        return F.interpolate(x, size=list(size), mode="nearest")

    transformer_cosmos.transforms = types.SimpleNamespace(
        functional=types.SimpleNamespace(resize=resize),
        InterpolationMode=types.SimpleNamespace(NEAREST="nearest"),
    )


def diffusers_cosmos(cfg: DiTConfig, seed: int | None = 0, std: float = 0.05):
    """diffusers' network for `cfg`; with `seed`, every weight is drawn at random (its init zeroes some)."""
    from diffusers import CosmosTransformer3DModel

    _install_padding_mask_resize()
    model = CosmosTransformer3DModel(**cfg.diffusers_kwargs())
    if seed is not None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * std + (1.0 if p.ndim == 1 else 0.0))
    return model.eval()


def dense_forward(model, frames: list[Frame], text: torch.Tensor) -> torch.Tensor:
    """Run diffusers on one sample of equal-size frames: returns [C, T, H, W] velocity."""
    latents = torch.stack([f.latent for f in frames], dim=1)[None]  # [1, C, T, H, W]
    t, h, w = latents.shape[2:]
    cond = torch.tensor([float(f.is_condition) for f in frames]).view(1, 1, t, 1, 1).expand(1, 1, t, h, w)
    sigmas = torch.stack([torch.as_tensor(f.sigma, dtype=torch.float32) for f in frames]).view(1, 1, t, 1, 1)
    out = model(
        hidden_states=latents,
        timestep=sigmas,
        encoder_hidden_states=text[None],
        condition_mask=cond.to(latents),
        padding_mask=latents.new_zeros(1, 1, h, w),
        return_dict=False,
    )[0]
    return out[0]
