"""Flow matching for the packed DiT: the Stage-2 loss and the sampler (Euler / UniPC via diffusers).

x_sigma = (1 - sigma) x0 + sigma noise; the DiT predicts the velocity noise - x0. Condition frames (earlier
images) stay clean with sigma ~ 0 and carry no loss; one target frame per sample is noised. CFG is
`cond + g (cond - uncond)` where the negative keeps the visual conditions and drops the last text chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from .config import FlowConfig
from .errors import DuoGenInputError
from .packing import Frame, pack_samples, unpack


@dataclass
class TrainingExample:
    """One sequence for Stage 2: its image latents in order, which one to learn, and the text stream."""

    latents: list[torch.Tensor]  # normalised latents [C, h, w], conversation order
    target: int  # earlier images are condition frames, later ones are dropped
    text: torch.Tensor  # [L, connector_in] stacked MLLM layers of the tokens before the target's <BOV>


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The resolution shift of SD3/Cosmos: pushes sigmas towards 1 (more noise) for shift > 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_training_sigmas(n: int, cfg: FlowConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logit-normal sigmas with the configured shift."""
    u = torch.randn(n, generator=generator) * cfg.logit_std + cfg.logit_mean
    return shift_sigmas(torch.sigmoid(u), cfg.shift)


def drop_last_text_chunk(text: torch.Tensor, last_chunk: torch.Tensor) -> torch.Tensor:
    """The CFG negative: the same stream without the last text chunk (`last_chunk` is a bool mask over L).

    When the last chunk is the whole stream, one zero row stands for "no text" (cross-attention needs a key).
    """
    if last_chunk.shape[0] != text.shape[0]:
        raise DuoGenInputError(f"chunk mask covers {last_chunk.shape[0]} tokens, text has {text.shape[0]}")
    kept = text[~last_chunk]
    return kept if kept.shape[0] else text.new_zeros(1, text.shape[1])


def flow_matching_loss(
    dit: torch.nn.Module,
    examples: list[TrainingExample],
    cfg: FlowConfig,
    generator: torch.Generator | None = None,
    max_frames: int | None = None,
) -> torch.Tensor:
    """Mean squared velocity error over the target frames of a pack of examples."""
    sigmas = sample_training_sigmas(len(examples), cfg, generator)
    samples, texts, targets = [], [], []
    for ex, sigma in zip(examples, sigmas, strict=True):
        if not 0 <= ex.target < len(ex.latents):
            raise DuoGenInputError(f"target index {ex.target} outside the example's {len(ex.latents)} images")
        x0 = ex.latents[ex.target]
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        frames = [Frame(c, cfg.condition_sigma, True) for c in ex.latents[: ex.target]]
        frames.append(Frame((1 - sigma) * x0 + sigma * noise, sigma, False))
        samples.append(frames)
        texts.append(ex.text)
        targets.append(noise - x0)
    pack = pack_samples(samples, texts, dit.config.patch_size, max_frames=max_frames or dit.config.max_frames)
    pred = unpack(dit(pack), pack, dit.config.out_channels)
    losses = [((p[-1].float() - t.float()) ** 2).mean() for p, t in zip(pred, targets, strict=True)]
    return torch.stack(losses).mean()


def make_scheduler(name: str, shift: float):
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=shift)
    if name == "unipc":
        return UniPCMultistepScheduler(
            use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift
        )
    raise DuoGenInputError(f"unknown sampler {name!r}; use 'euler' or 'unipc'")


@torch.no_grad()
def sample_latent(
    dit: torch.nn.Module,
    conditions: list[torch.Tensor],
    latent_hw: tuple[int, int],
    text: torch.Tensor,
    negative: torch.Tensor | None,
    cfg: FlowConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one target latent [C, h, w] after the given clean condition latents.

    CFG runs when a negative is given and guidance is non-zero, only for sigmas inside `cfg.cfg_interval`;
    positive and negative go through the DiT as two samples of one pack.
    """
    channels = dit.config.out_channels
    scheduler = make_scheduler(cfg.sampler, cfg.shift)
    scheduler.set_timesteps(cfg.num_inference_steps)
    device = text.device
    x = torch.randn((channels, *latent_hw), generator=generator).to(device=device, dtype=text.dtype)
    cond_frames = [Frame(c, cfg.condition_sigma, True) for c in conditions]
    lo, hi = cfg.cfg_interval
    for i, t in enumerate(scheduler.timesteps):
        sigma = float(scheduler.sigmas[i])
        frames = [*cond_frames, Frame(x, sigma, False)]
        guided = negative is not None and cfg.guidance_scale != 0 and lo <= sigma <= hi
        samples, texts = ([frames, frames], [text, negative]) if guided else ([frames], [text])
        pack = pack_samples(samples, texts, dit.config.patch_size, max_frames=dit.config.max_frames)
        out = unpack(dit(pack), pack, channels)
        velocity = out[0][-1]
        if guided:
            velocity = velocity + cfg.guidance_scale * (velocity - out[1][-1])
        x = scheduler.step(velocity[None], t, x[None]).prev_sample[0]
    return x
