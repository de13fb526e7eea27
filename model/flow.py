"""Flow matching for the packed DiT: the Stage-2 loss and the sampler (Euler / UniPC via diffusers).

x_sigma = (1 - sigma) x0 + sigma source (noise, or the previous picture plus noise: `FlowConfig.source`); the
velocity is source - x0, which the DiT predicts directly or through an x0 / residual prediction
(`FlowConfig.prediction`, `to_velocity`). Condition frames (earlier images) stay clean with sigma ~ 0 and
carry no loss; one target frame per sample is noised. CFG is `cond + g (cond - uncond)` on velocities, where
the negative keeps the visual conditions and drops the last text chunk.
"""

from __future__ import annotations

from collections.abc import Callable
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


def to_velocity(
    output: torch.Tensor,
    noisy: torch.Tensor,
    sigma,
    cfg: FlowConfig,
    base: torch.Tensor | None = None,
    min_sigma: float = 1e-6,
) -> torch.Tensor:
    """The velocity the DiT's `output` stands for at noise level `sigma` (see `FlowConfig.prediction`);
    `base` is the previous picture's latent (a "residual" prediction adds it when the sizes match)."""
    if cfg.prediction == "velocity":
        return output
    if cfg.prediction not in ("sample", "residual"):
        raise DuoGenInputError(
            f"unknown prediction {cfg.prediction!r}; use 'velocity', 'sample' or 'residual'"
        )
    if cfg.prediction == "residual" and base is not None and base.shape == output.shape:
        output = output + base
    return (noisy - output) / max(float(sigma), min_sigma)


def source_of(noise: torch.Tensor, base: torch.Tensor | None, cfg: FlowConfig) -> torch.Tensor:
    """Where the flow starts (sigma = 1): noise, or (`source="previous"`) the previous picture plus
    `source_noise` times noise when there is a previous picture of the same size."""
    if cfg.source not in ("noise", "previous"):
        raise DuoGenInputError(f"unknown flow source {cfg.source!r}; use 'noise' or 'previous'")
    if cfg.source == "previous" and base is not None and base.shape == noise.shape:
        return base + cfg.source_noise * noise
    return noise


EDIT_THRESHOLD = 1e-3  # a latent position counts as edited when some channel moved more than this


def flow_matching_loss(
    dit: torch.nn.Module,
    examples: list[TrainingExample],
    cfg: FlowConfig,
    generator: torch.Generator | None = None,
    max_frames: int | None = None,
) -> torch.Tensor:
    """Mean squared velocity error over the target frames of a pack of examples."""
    sigmas = sample_training_sigmas(len(examples), cfg, generator)
    samples, texts, targets, noisy, bases = [], [], [], [], []
    for ex, sigma in zip(examples, sigmas, strict=True):
        if not 0 <= ex.target < len(ex.latents):
            raise DuoGenInputError(f"target index {ex.target} outside the example's {len(ex.latents)} images")
        x0 = ex.latents[ex.target]
        bases.append(ex.latents[ex.target - 1] if ex.target else None)
        source = source_of(torch.randn(x0.shape, generator=generator).to(x0), bases[-1], cfg)
        frames = [Frame(c, cfg.condition_sigma, True) for c in ex.latents[: ex.target]]
        noisy.append((1 - sigma) * x0 + sigma * source)
        frames.append(Frame(noisy[-1], sigma, False))
        samples.append(frames)
        texts.append(ex.text)
        targets.append(source - x0)
    pack = pack_samples(samples, texts, dit.config.patch_size, max_frames=max_frames or dit.config.max_frames)
    pred = unpack(dit(pack), pack, dit.config.out_channels)
    losses = []
    for ex, p, x, s, t, base in zip(examples, pred, noisy, sigmas, targets, bases, strict=True):
        velocity = to_velocity(p[-1], x, s, cfg, base, min_sigma=cfg.min_sigma)
        err = (velocity.float() - t.float()) ** 2
        if cfg.edit_weight != 1.0 and base is not None and base.shape == t.shape:
            changed = (ex.latents[ex.target] - base).abs().amax(0, keepdim=True) > EDIT_THRESHOLD
            weight = 1.0 + (cfg.edit_weight - 1.0) * changed.float()  # [1, h, w], over every channel
            losses.append((err * weight).sum() / (weight.sum() * err.shape[0]))
        else:
            losses.append(err.mean())
    return torch.stack(losses).mean()


# One DiT forward over a list of samples (each a list of frames) and their text streams, returning each
# sample's per-frame outputs. `run_dit` is the plain one; a server passes its own to batch requests together.
# The text streams it receives are already projected by the DiT's connector (`DuoGenDiT.project_text`).
DiTForward = Callable[[list[list[Frame]], list[torch.Tensor]], list[list[torch.Tensor]]]


def run_dit(dit: torch.nn.Module, samples: list[list[Frame]], texts: list[torch.Tensor]):
    """One packed forward: samples of any sizes go through the DiT together; outputs come back per sample.
    `texts` are projected streams (`dit.project_text`): inference projects each image's stream once."""
    pack = pack_samples(
        samples, texts, dit.config.patch_size, max_frames=dit.config.max_frames, text_projected=True
    )
    return unpack(dit(pack), pack, dit.config.out_channels)


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
    forward: DiTForward | None = None,
) -> torch.Tensor:
    """Draw one target latent [C, h, w] after the given clean condition latents.

    CFG runs when a negative is given and guidance is non-zero, only for sigmas inside `cfg.cfg_interval`;
    positive and negative go through the DiT as two samples of one pack. `forward` replaces the plain
    `run_dit` (a server's scheduler packs several requests' steps into one forward).
    """
    forward = forward or (lambda samples, texts: run_dit(dit, samples, texts))
    ph, pw = dit.config.patch_size[1:]
    dit.check_grid([(latent_hw[0] // ph, latent_hw[1] // pw)])  # before any work
    text = dit.project_text(text)  # once per image: the stream is the same at every step and branch
    negative = dit.project_text(negative) if negative is not None else None
    scheduler = make_scheduler(cfg.sampler, cfg.shift)
    scheduler.set_timesteps(cfg.num_inference_steps)
    device = text.device
    x = torch.randn((dit.config.out_channels, *latent_hw), generator=generator).to(
        device=device, dtype=text.dtype
    )
    base = conditions[-1].to(x) if conditions else None
    x = source_of(x, base, cfg)
    cond_frames = [Frame(c.to(x), cfg.condition_sigma, True) for c in conditions]
    lo, hi = cfg.cfg_interval
    for i, t in enumerate(scheduler.timesteps):
        sigma = float(scheduler.sigmas[i])
        frames = [*cond_frames, Frame(x, sigma, False)]
        guided = negative is not None and cfg.guidance_scale != 0 and lo <= sigma <= hi
        samples, texts = ([frames, frames], [text, negative]) if guided else ([frames], [text])
        out = forward(samples, texts)
        velocity = to_velocity(out[0][-1], x, sigma, cfg, base)
        if guided:
            negative_velocity = to_velocity(out[1][-1], x, sigma, cfg, base)
            velocity = velocity + cfg.guidance_scale * (velocity - negative_velocity)
        x = scheduler.step(velocity[None], t, x[None]).prev_sample[0]
    return x
