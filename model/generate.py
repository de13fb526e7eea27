"""Interleaved generation: the MLLM writes; on `<BOV>` the DiT draws; the image joins the context.

Caches (`use_cache=True`, the default): the MLLM runs under a KV cache that each new token or image block
extends (`MLLMSession`); the hidden states of all layers are kept per token as they are computed, so an
image's text stream is a slice; every image (user-given or generated) is VAE-encoded once and its latent
reused as a condition frame for every later image. With `use_cache=False` the same loop re-runs the MLLM
over the whole sequence per token and re-encodes every earlier image per new image: the reference the
cached loop must reproduce, and the benchmark's baseline.

Policies: a sample holds at most `dit.max_frames` images, so the most recent `max_frames - 1` images are the
condition frames of the next one; a token or an image block that would not fit the MLLM's context ends the
turn with reason "context" (never half an image).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from PIL import Image

from .chat import EncodedConversation, ImagePart, append_image, append_tokens, image_token_count, to_turns
from .flow import DiTForward, sample_latent
from .pair import DuoGenPair
from .session import MLLMSession
from .tokenizer import ENDOFTEXT, IM_START, IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_PAD, VISION_START
from .vae import fit_to_multiple

NOT_GENERATED = (ENDOFTEXT, IM_START, IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_PAD, VISION_START)


@dataclass
class GenerationOptions:
    max_new_tokens: int = 128
    min_new_tokens: int = 0  # the end of the turn is not written before this many tokens
    max_images: int = 4
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()  # end the turn as soon as the written text contains one of these
    force_bov: bool = False  # start the answer with `<BOV>` (text-to-image, editing)
    force_bov_every: int | None = None  # force `<BOV>` after this many text tokens in a row (demos)
    image_size: tuple[int, int] = (64, 64)  # (width, height) of a drawn image when no earlier image sets it
    guidance_scale: float | None = None  # None: the pair's flow config
    num_inference_steps: int | None = None
    sampler: str | None = None
    use_cache: bool = True


@dataclass
class Usage:
    prompt_tokens: int = 0  # the conversation as given, before the answer
    new_tokens: int = 0
    images: int = 0
    vae_encodes: int = 0
    mllm_prefill_tokens: int = 0
    dit_seconds: float = 0.0
    non_dit_seconds_per_image: list[float] = field(default_factory=list)


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
    reason: str  # "stop" (end of turn or stop string), "length" (max_new_tokens), "context" (context full)
    usage: Usage

    @property
    def new_tokens(self) -> int:
        return self.usage.new_tokens

    @property
    def images(self) -> int:
        return self.usage.images


Event = TextDelta | ImageStarted | ImageDone | Finished


class Answer:
    """An answer put together from its events: `parts` in order (text as str, pictures as PIL images) and
    the `Finished` event. Every consumer of the loop (page writer, evaluation, server) collects with it."""

    def __init__(self) -> None:
        self.parts: list[str | Image.Image] = []
        self.finished: Finished | None = None

    def add(self, event: Event) -> Event:
        if isinstance(event, TextDelta):
            if self.parts and isinstance(self.parts[-1], str):
                self.parts[-1] += event.text
            else:
                self.parts.append(event.text)
        elif isinstance(event, ImageDone):
            self.parts.append(event.image)
        elif isinstance(event, Finished):
            self.finished = event
        return event

    @property
    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))

    @property
    def images(self) -> list[Image.Image]:
        return [p for p in self.parts if not isinstance(p, str)]


def generate_answer(pair, conversation, options: GenerationOptions | None = None, on_event=None) -> Answer:
    """The whole answer of `generate`, collected; `on_event(event)` sees each event as it comes (progress)."""
    answer = Answer()
    for event in generate(pair, conversation, options):
        answer.add(event)
        if on_event is not None:
            on_event(event)
    return answer


def pick_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


class _Latents:
    """Condition latents of the conversation's images: encoded once (cached) or every time (reference)."""

    def __init__(self, pair: DuoGenPair, use_cache: bool, usage: Usage) -> None:
        self.pair, self.use_cache, self.usage = pair, use_cache, usage
        self.images: list[Image.Image] = []
        self.latents: list[torch.Tensor] = []

    def _encode(self, image: Image.Image) -> torch.Tensor:
        self.usage.vae_encodes += 1
        return self.pair.vae.encode_image(image, self.pair.pixel_multiple)

    def add(self, image: Image.Image) -> None:
        self.images.append(image)
        if self.use_cache:
            self.latents.append(self._encode(image))

    def conditions(self, keep: int) -> list[torch.Tensor]:
        if keep <= 0:
            return []
        if self.use_cache:
            return self.latents[-keep:]
        return [self._encode(image) for image in self.images[-keep:]]


@torch.no_grad()
def generate(
    pair: DuoGenPair,
    conversation,
    options: GenerationOptions | None = None,
    dit_forward: DiTForward | None = None,
    mllm_advance: Callable[[MLLMSession, EncodedConversation], None] | None = None,
) -> Iterator[Event]:
    """Yield the answer's events in order. `dit_forward` (one denoising step) and `mllm_advance` (run a
    session over its conversation's new tokens) let a server batch the model work across requests."""
    opts = options or GenerationOptions()
    mllm, cfg = pair.mllm, pair.config
    overrides = {
        "guidance_scale": opts.guidance_scale,
        "num_inference_steps": opts.num_inference_steps,
        "sampler": opts.sampler,
    }
    flow = dataclasses.replace(cfg.flow, **{k: v for k, v in overrides.items() if v is not None})
    generator = torch.Generator().manual_seed(opts.seed)
    usage = Usage()
    turns = to_turns(conversation)
    pair.check_image_size(opts.image_size, "the requested image size")
    given = [p.image for t in turns for p in t.parts if isinstance(p, ImagePart)]
    for k, image in enumerate(given):  # condition frames go in at full size: refuse before any work
        pair.check_image_size(image.size, f"input image {k + 1}")
    enc = mllm.encode(turns, add_generation_prompt=True)
    usage.prompt_tokens = len(enc)
    latents = _Latents(pair, opts.use_cache, usage)
    for image in given:
        latents.add(image)  # full size: the MLLM sees its own 480 px copies
    last_size = latents.images[-1].size if latents.images else opts.image_size
    session = MLLMSession(mllm, use_cache=opts.use_cache, norm_eps=cfg.connector.norm_eps)
    advance = mllm_advance or MLLMSession.advance
    advance(session, enc)
    bov, end = mllm.bov_token_id, mllm.im_end_token_id
    # Structure tokens are the loop's to place, never the model's to write: a sampled <|image_pad|> would
    # claim an image that does not exist.
    banned = [mllm.tokenizer.convert_tokens_to_ids(t) for t in NOT_GENERATED]
    text_ids: list[int] = []
    written = emitted = ""
    run = 0
    reason = "length"
    while usage.new_tokens < opts.max_new_tokens:
        if len(enc) + 1 > cfg.mllm.max_context:
            reason = "context"
            break
        logits = session.logits.clone()
        logits[banned] = float("-inf")
        if usage.images >= opts.max_images:
            logits[bov] = float("-inf")
        if usage.new_tokens < opts.min_new_tokens:
            logits[end] = float("-inf")
        can_draw = usage.images < opts.max_images
        forced = can_draw and (
            (opts.force_bov and usage.new_tokens == 0)
            or (opts.force_bov_every is not None and run >= opts.force_bov_every)
        )
        token = bov if forced else pick_token(logits, opts.temperature, opts.top_p, generator)
        usage.new_tokens += 1
        if token == end:
            reason = "stop"
            break
        if token != bov:
            enc = append_tokens(enc, [token], mllm.tokenizer)
            advance(session, enc)
            text_ids.append(token)
            run += 1
            decoded = mllm.tokenizer.decode(text_ids)
            if not decoded.endswith("\ufffd") and len(decoded) > len(emitted):
                yield TextDelta(decoded[len(emitted) :])
                written += decoded[len(emitted) :]
                emitted = decoded
            if any(s in written for s in opts.stop):
                reason = "stop"
                break
            continue

        # <BOV>: draw, conditioned on earlier images and on the hidden states before <BOV>
        started = time.perf_counter()
        w, h = fit_to_multiple(Image.new("RGB", last_size), pair.pixel_multiple).size
        needed = 1 + image_token_count((w, h), mllm.image_processor, cfg.mllm.max_image_side)
        if len(enc) + needed > cfg.mllm.max_context:
            reason = "context"
            break
        yield ImageStarted(usage.images)
        text, negative = pair.text_streams(enc, len(enc), session.text_stream(len(enc)))
        conditions = latents.conditions(cfg.dit.max_frames - 1)
        dit_start = time.perf_counter()
        latent = sample_latent(
            pair.dit,
            conditions,
            (h // pair.vae.compression, w // pair.vae.compression),
            text,
            negative,
            flow,
            generator,
            dit_forward,
        )
        dit_seconds = time.perf_counter() - dit_start
        image = pair.vae.decode_image(latent)
        with_bov = append_tokens(enc, [bov], mllm.tokenizer)
        enc = append_image(with_bov, image, mllm.tokenizer, mllm.image_processor, cfg.mllm.max_image_side)
        advance(session, enc)
        latents.add(image)
        last_size = image.size
        usage.dit_seconds += dit_seconds
        usage.non_dit_seconds_per_image.append(time.perf_counter() - started - dit_seconds)
        yield ImageDone(usage.images, image)
        usage.images += 1
        run, text_ids, emitted = 0, [], ""
    usage.mllm_prefill_tokens = session.prefill_tokens
    yield Finished(reason, usage)
