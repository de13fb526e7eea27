"""Interleaved generation: the MLLM writes; on `<BOV>` the DiT draws; the image joins the context.

This is the plain loop, with no caches: each new token re-runs the MLLM over the whole sequence. It is the
reference the cached loop must reproduce, and it is what `duogen demo` runs. Events come out in order
(text deltas, image started, image done, finished) so a server can stream them and a notebook collect them.

Frame budget: a sample holds at most `dit.max_frames` images, so when a conversation has more, the most
recent `max_frames - 1` images are the condition frames of the next one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from PIL import Image

from .chat import ImagePart, append_image, append_tokens, to_turns
from .flow import sample_latent
from .pair import DuoGenPair
from .vae import fit_to_multiple


@dataclass
class GenerationOptions:
    max_new_tokens: int = 128
    max_images: int = 4
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    force_bov_every: int | None = None  # force `<BOV>` after this many text tokens in a row (T2I, demos)
    image_size: tuple[int, int] = (64, 64)  # (width, height) of a drawn image when no earlier image sets it
    guidance_scale: float | None = None  # None: the pair's flow config
    num_inference_steps: int | None = None
    sampler: str | None = None


@dataclass
class TextDelta:
    text: str


@dataclass
class ImageStarted:
    index: int


@dataclass
class ImageDone:
    index: int
    image: Image.Image


@dataclass
class Finished:
    reason: str  # "stop" (end of turn), "length" (max_new_tokens) or "context" (MLLM context full)
    new_tokens: int
    images: int


Event = TextDelta | ImageStarted | ImageDone | Finished


def pick_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


@torch.no_grad()
def generate(pair: DuoGenPair, conversation, options: GenerationOptions | None = None) -> Iterator[Event]:
    opts = options or GenerationOptions()
    mllm, cfg = pair.mllm, pair.config
    flow = dataclasses.replace(
        cfg.flow,
        **{k: v for k, v in (("guidance_scale", opts.guidance_scale), ("num_inference_steps",
            opts.num_inference_steps), ("sampler", opts.sampler)) if v is not None},
    )  # fmt: skip
    generator = torch.Generator().manual_seed(opts.seed)
    multiple = pair.pixel_multiple
    turns = to_turns(conversation)
    enc = mllm.encode(turns, add_generation_prompt=True)
    given = [p.image for t in turns for p in t.parts if isinstance(p, ImagePart)]  # full size, not the MLLM's
    latents = [pair.vae.encode_image(img, multiple) for img in given]
    last_size = given[-1].size if given else opts.image_size
    bov, end = mllm.bov_token_id, mllm.im_end_token_id
    text_ids: list[int] = []
    emitted = ""
    new_tokens = images = run = 0
    reason = "length"
    while new_tokens < opts.max_new_tokens:
        if len(enc) >= cfg.mllm.max_context:
            reason = "context"
            break
        logits = mllm.forward_logits(enc)[-1]
        if images >= opts.max_images:
            logits[bov] = float("-inf")
        forced = opts.force_bov_every is not None and run >= opts.force_bov_every and images < opts.max_images
        token = bov if forced else pick_token(logits, opts.temperature, opts.top_p, generator)
        new_tokens += 1
        if token == end:
            reason = "stop"
            break
        if token != bov:
            enc = append_tokens(enc, [token], mllm.tokenizer)
            text_ids.append(token)
            run += 1
            decoded = mllm.tokenizer.decode(text_ids)
            if not decoded.endswith("\ufffd") and len(decoded) > len(emitted):
                yield TextDelta(decoded[len(emitted) :])
                emitted = decoded
            continue
        yield ImageStarted(images)
        text, negative = pair.text_streams(enc, len(enc))
        enc = append_tokens(enc, [bov], mllm.tokenizer)
        w, h = fit_to_multiple(Image.new("RGB", last_size), multiple).size
        conditions = latents[-(cfg.dit.max_frames - 1) :] if cfg.dit.max_frames > 1 else []
        latent = sample_latent(pair.dit, conditions, (h // pair.vae.compression, w // pair.vae.compression),
                               text, negative, flow, generator)  # fmt: skip
        image = pair.vae.decode_image(latent)
        latents.append(pair.vae.encode_image(image, multiple))
        enc = append_image(enc, image, mllm.tokenizer, mllm.image_processor, cfg.mllm.max_image_side)
        last_size = image.size
        yield ImageDone(images, image)
        images += 1
        run, text_ids, emitted = 0, [], ""
    yield Finished(reason, new_tokens, images)
