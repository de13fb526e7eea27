"""Packing: every image of every sample, at its own resolution, as one flat token sequence.

No public Cosmos code does this (diffusers takes dense `B, C, T, H, W`). A sample is a list of frames
(earlier images as clean condition frames, then the noisy target); each frame is patchified on its own,
keeps its (h, w) and its index in the sample (the temporal RoPE id), and tokens of one sample stay
contiguous so attention can be restricted to the sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import DuoGenInputError
from .rope import frame_rope_ids


@dataclass
class Frame:
    """One image latent in a sample. `sigma` is its own timestep; condition frames are clean (sigma ~ 0)."""

    latent: torch.Tensor  # [C, h, w], normalised latent
    sigma: float | torch.Tensor = 0.0
    is_condition: bool = False
    padding_mask: torch.Tensor | None = None  # [h, w], 1 where the frame is padding


@dataclass
class Pack:
    """A packed batch; built by `pack_samples`, read by the DiT and by `unpack`."""

    tokens: torch.Tensor  # [N, (C + masks) * p_t * p_h * p_w]
    rope_ids: torch.Tensor  # [N, 3] (t, h, w)
    frame_of_token: torch.Tensor  # [N] frame index into `sigmas`
    sigmas: torch.Tensor  # [F]
    frame_grid: list[tuple[int, int]]  # per frame: (h, w) in patches
    frame_sample: list[int]  # per frame: its sample
    sample_tokens: list[int]  # per sample: its number of tokens
    text: torch.Tensor  # [S, L, D_in] padded text streams
    text_mask: torch.Tensor  # [S, L] True where a text token is real
    patch_size: tuple[int, int, int]
    channels: int
    text_projected: bool = False  # `text` already went through the DiT's connector (`DuoGenDiT.project_text`)
    _uniform: bool | None = field(default=None, repr=False)

    @property
    def num_samples(self) -> int:
        return len(self.sample_tokens)

    @property
    def uniform(self) -> bool:
        """All samples have the same frames; then attention runs batched instead of per sample."""
        if self._uniform is None:
            grids = {}
            for s, g in zip(self.frame_sample, self.frame_grid, strict=True):
                grids.setdefault(s, []).append(g)
            self._uniform = len({tuple(v) for v in grids.values()}) == 1
        return self._uniform

    def frame_token_counts(self) -> list[int]:
        return [h * w for h, w in self.frame_grid]


def patchify(x: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """[C, H, W] -> [H/ph * W/pw, C*ph*pw] in `CosmosPatchEmbed` feature order (C, p_t, p_h, p_w)."""
    c, h, w = x.shape
    ph, pw = patch
    x = x.reshape(c, h // ph, ph, w // pw, pw).permute(1, 3, 0, 2, 4)
    return x.reshape((h // ph) * (w // pw), c * ph * pw)


def unpatchify(
    tokens: torch.Tensor, grid: tuple[int, int], patch: tuple[int, int], channels: int
) -> torch.Tensor:
    """[h*w, ph*pw*C] (diffusers' output order p_h, p_w, p_t, C) -> [C, h*ph, w*pw]."""
    gh, gw = grid
    ph, pw = patch
    x = tokens.reshape(gh, gw, ph, pw, channels).permute(4, 0, 2, 1, 3)
    return x.reshape(channels, gh * ph, gw * pw)


def pack_samples(
    samples: list[list[Frame]],
    texts: list[torch.Tensor],
    patch_size: tuple[int, int, int] = (1, 2, 2),
    max_frames: int | None = None,
    max_grid: tuple[int, int] | None = None,
    concat_padding_mask: bool = True,
    text_projected: bool = False,
) -> Pack:
    """Patchify every frame (adding condition-mask and padding-mask channels) and lay samples end to end."""
    if not samples:
        raise DuoGenInputError("empty pack: no samples")
    if len(texts) != len(samples):
        raise DuoGenInputError(f"{len(samples)} samples but {len(texts)} text streams")
    if patch_size[0] != 1:
        raise DuoGenInputError("packing handles images: temporal patch size must be 1")
    ph, pw = patch_size[1], patch_size[2]
    tokens, ids, frame_of_token, sigmas, grids, frame_sample, sample_tokens = [], [], [], [], [], [], []
    channels = None
    for s, frames in enumerate(samples):
        if not frames:
            raise DuoGenInputError(f"sample {s} has no frames")
        if max_frames is not None and len(frames) > max_frames:
            raise DuoGenInputError(
                f"sample {s} has {len(frames)} images; this DiT allows at most {max_frames}"
            )
        count = 0
        for t, fr in enumerate(frames):
            lat = fr.latent
            if lat.ndim != 3 or lat.shape[1] == 0 or lat.shape[2] == 0:
                raise DuoGenInputError(
                    f"sample {s} frame {t}: latent must be [C, h, w], got {tuple(lat.shape)}"
                )
            c, h, w = lat.shape
            channels = channels or c
            if c != channels:
                raise DuoGenInputError(f"sample {s} frame {t}: {c} channels, expected {channels}")
            if h % ph or w % pw:
                raise DuoGenInputError(
                    f"sample {s} frame {t}: latent {h}x{w} not divisible by patch {ph}x{pw}"
                )
            gh, gw = h // ph, w // pw
            if max_grid is not None and (gh > max_grid[0] or gw > max_grid[1]):
                raise DuoGenInputError(f"sample {s} frame {t}: {gh}x{gw} patches exceed the DiT's {max_grid}")
            parts = [lat, torch.full_like(lat[:1], float(fr.is_condition))]
            if concat_padding_mask:
                pad = fr.padding_mask if fr.padding_mask is not None else torch.zeros_like(lat[0])
                parts.append(pad.to(lat.dtype)[None])
            tokens.append(patchify(torch.cat(parts, dim=0), (ph, pw)))
            ids.append(frame_rope_ids(t, gh, gw))
            frame_of_token.append(torch.full((gh * gw,), len(grids), dtype=torch.long))
            sigmas.append(torch.as_tensor(fr.sigma, dtype=torch.float32).reshape(()))
            grids.append((gh, gw))
            frame_sample.append(s)
            count += gh * gw
        sample_tokens.append(count)
    text, text_mask = pad_texts(texts)
    device = tokens[0].device
    return Pack(
        tokens=torch.cat(tokens),
        rope_ids=torch.cat(ids).to(device),
        frame_of_token=torch.cat(frame_of_token).to(device),
        sigmas=torch.stack(sigmas).to(device),
        frame_grid=grids,
        frame_sample=frame_sample,
        sample_tokens=sample_tokens,
        text=text,
        text_mask=text_mask,
        patch_size=patch_size,
        channels=channels,
        text_projected=text_projected,
    )


def pad_texts(texts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length text streams [L_i, D] -> padded [S, L, D] and a key-padding mask [S, L]."""
    for i, t in enumerate(texts):
        if t.ndim != 2 or t.shape[0] == 0:
            raise DuoGenInputError(f"text stream {i} must be a non-empty [L, D] tensor, got {tuple(t.shape)}")
    longest = max(t.shape[0] for t in texts)
    dim = texts[0].shape[1]
    text = texts[0].new_zeros(len(texts), longest, dim)
    mask = torch.zeros(len(texts), longest, dtype=torch.bool, device=texts[0].device)
    for i, t in enumerate(texts):
        if t.shape[1] != dim:
            raise DuoGenInputError(f"text stream {i} has width {t.shape[1]}, expected {dim}")
        text[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return text, mask


def unpack(out: torch.Tensor, pack: Pack, out_channels: int) -> list[list[torch.Tensor]]:
    """Split the DiT output [N, p*p*C] back into per-sample lists of per-frame tensors [C, H, W]."""
    patch = (pack.patch_size[1], pack.patch_size[2])
    result: list[list[torch.Tensor]] = [[] for _ in range(pack.num_samples)]
    chunks = out.split(pack.frame_token_counts())
    for chunk, grid, s in zip(chunks, pack.frame_grid, pack.frame_sample, strict=True):
        result[s].append(unpatchify(chunk, grid, patch, out_channels))
    return result
