"""Wan2.1 VAE (diffusers `AutoencoderKLWan`), used one image at a time: an image is one latent frame.

Latents are normalised with the model's per-channel mean/std (as the Cosmos-Predict-2.5 pipeline does), so
the DiT always sees unit-scale latents. Images are fitted to a multiple of `vae compression x DiT patch`
so every latent patchifies exactly.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from PIL import Image
from torch import nn

from .config import VAEConfig
from .errors import DuoGenInputError
from .images import to_rgb


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> [3, H, W] float in [-1, 1]."""
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    """[3, H, W] in [-1, 1] -> PIL RGB."""
    arr = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy())


def fit_to_multiple(image: Image.Image, multiple: int, max_side: int | None = None) -> Image.Image:
    """Resize so both sides are multiples of `multiple` (at least one), optionally capping the long side."""
    w, h = image.size
    if max_side is not None and max(w, h) > max_side:
        scale = max_side / max(w, h)
        w, h = w * scale, h * scale
    tw = max(multiple, int(round(w / multiple)) * multiple)
    th = max(multiple, int(round(h / multiple)) * multiple)
    return image if (tw, th) == image.size else image.resize((tw, th), Image.BICUBIC)


class LatentCodec(nn.Module):
    """What the pair needs of an image codec: one RGB image <-> one normalised latent frame."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.config = cfg
        self.register_buffer("mean", torch.tensor(cfg.latents_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.latents_std).view(-1, 1, 1), persistent=False)

    @property
    def compression(self) -> int:
        return self.config.scale_factor_spatial

    def _check(self, pixels: torch.Tensor) -> None:
        if pixels.ndim != 3 or pixels.shape[0] != 3:
            raise DuoGenInputError(f"VAE encodes one RGB image [3, H, W], got {tuple(pixels.shape)}")
        if pixels.shape[1] % self.compression or pixels.shape[2] % self.compression:
            raise DuoGenInputError(
                f"image {pixels.shape[1]}x{pixels.shape[2]} not a multiple of {self.compression}"
            )

    def encode_image(self, image: Image.Image, multiple: int, max_side: int | None = None) -> torch.Tensor:
        image = fit_to_multiple(to_rgb(image), multiple, max_side)
        return self.encode(image_to_tensor(image).to(self.mean.device))

    def decode_image(self, latent: torch.Tensor) -> Image.Image:
        return tensor_to_image(self.decode(latent))


class DuoGenVAE(LatentCodec):
    """Wan2.1's VAE (diffusers `AutoencoderKLWan`).

    `AutoencoderKLWan` keeps its causal-convolution feature caches on the module during a call, so two
    threads encoding or decoding at once corrupt each other's caches: calls are serialised by a lock (a
    server generates several requests in threads).
    """

    def __init__(self, cfg: VAEConfig, model: AutoencoderKLWan | None = None) -> None:
        super().__init__(cfg)
        self.model = model if model is not None else AutoencoderKLWan(**cfg.diffusers_kwargs())
        self._lock = threading.Lock()

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[3, H, W] in [-1, 1] -> normalised latent [z, H/8, W/8] (posterior mode: deterministic)."""
        self._check(pixels)
        x = pixels.to(self.model.dtype)[None, :, None]
        with self._lock:
            latent = self.model.encode(x).latent_dist.mode()[0, :, 0]
        return (latent - self.mean.to(latent)) / self.std.to(latent)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent [z, h, w] -> [3, 8h, 8w] in [-1, 1]."""
        z = latent * self.std.to(latent) + self.mean.to(latent)
        with self._lock:
            return self.model.decode(z[None, :, None].to(self.model.dtype)).sample[0, :, 0]

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(str(path))

    @classmethod
    def from_pretrained(cls, path: str | Path, cfg: VAEConfig) -> DuoGenVAE:
        return cls(cfg, AutoencoderKLWan.from_pretrained(str(path)))


class PixelCodec(LatentCodec):
    """An exactly invertible pixel-space codec: space-to-depth by `s` (3 s^2 latent channels), no weights.

    The `toy` preset uses it instead of a Wan VAE: nothing pretrained exists here and a random VAE decodes
    nothing a DiT could learn, while a VAE trained on CPU would reconstruct only approximately and add its
    own error to every judged picture. With this codec every error in a picture is the DiT's.
    """

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self._check(pixels)
        latent = F.pixel_unshuffle(pixels[None].float(), self.compression)[0]
        return (latent - self.mean.to(latent)) / self.std.to(latent)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        z = latent.float() * self.std.to(latent.device) + self.mean.to(latent.device)
        return F.pixel_shuffle(z[None], self.compression)[0].clamp(-1, 1)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(
            json.dumps({"_class_name": "PixelCodec", **dataclasses.asdict(self.config)})
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, cfg: VAEConfig) -> PixelCodec:
        return cls(cfg)


def make_codec(cfg: VAEConfig) -> LatentCodec:
    return PixelCodec(cfg) if cfg.kind == "pixel" else DuoGenVAE(cfg)


def load_codec(path: str | Path, cfg: VAEConfig) -> LatentCodec:
    return (PixelCodec if cfg.kind == "pixel" else DuoGenVAE).from_pretrained(path, cfg)
