"""From curated shards to training examples for the two stages.

Stage 1 tunes the MLLM: a sample becomes the chat-format token sequence with labels (user turns and vision
tokens masked, `<BOV>` in the loss). Stage 2 trains connector + DiT with the MLLM frozen: one random target
image per sequence, the earlier images as condition latents, and the hidden states of every MLLM layer for
the tokens before the target's `<BOV>` as the text stream. With probability `text_dropout` the stream is
replaced by the CFG negative generation uses (the same stream without its last text chunk), so the
unconditional branch of CFG is a distribution the DiT has seen, not an empty stream it never met at inference.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

from duogen.components.curation.sample import Sample
from duogen.components.curation.shards import IndexedSample, index_shard, read_shard
from duogen.model.chat import EncodedConversation, ImagePart, TextPart, Turn
from duogen.model.flow import TrainingExample
from duogen.model.pair import DuoGenPair


def iter_samples(shards: Sequence[str | Path]) -> Iterator[tuple[Sample, dict[str, bytes]]]:
    for shard in shards:
        yield from read_shard(shard)


def index_samples(shards: Sequence[str | Path]) -> Iterator[IndexedSample]:
    """Every sample of the shards with its images left in place (see `shards.index_shard`)."""
    for shard in shards:
        yield from index_shard(shard)


Decoder = Callable[[dict[str, bytes]], dict[str, Image.Image]]


def pil_decode(encoded: dict[str, bytes]) -> dict[str, Image.Image]:
    return {ref: Image.open(io.BytesIO(data)).convert("RGB") for ref, data in encoded.items()}


def to_conversation(sample: Sample, images: dict[str, bytes], decode: Decoder | None = None) -> list[Turn]:
    """The sample as chat turns, its images decoded by `decode` (PIL by default; the trainer's DALI decoder
    on GPU nodes); `<BOV>` markers are implied (the chat format puts one before every assistant image), so
    they are checked here rather than copied."""
    pictures = (decode or pil_decode)({ref: images[ref] for ref in dict.fromkeys(sample.image_refs())})
    turns = []
    for turn in sample.turns:
        parts: list[TextPart | ImagePart] = []
        for i, part in enumerate(turn.parts):
            if part.type == "text":
                parts.append(TextPart(part.text))
            elif part.type == "image":
                after_bov = i > 0 and turn.parts[i - 1].type == "bov"
                if (turn.role == "assistant") != after_bov:
                    raise ValueError(f"sample {sample.id!r}: assistant images (and only they) follow <BOV>")
                parts.append(ImagePart(pictures[part.ref]))
        turns.append(Turn(turn.role, parts))
    return turns


def stage1_example(
    pair: DuoGenPair, sample: Sample, images: dict[str, bytes], decode: Decoder | None = None
) -> EncodedConversation:
    return pair.mllm.encode(to_conversation(sample, images, decode))


@torch.no_grad()
def stage2_example(
    pair: DuoGenPair,
    sample: Sample,
    images: dict[str, bytes],
    rng: random.Random,
    text_dropout: float = 0.0,
    decode: Decoder | None = None,
) -> TrainingExample | None:
    """One random assistant image as the target; None when the sample has no assistant image."""
    turns = to_conversation(sample, images, decode)
    enc = pair.mllm.encode(turns)
    if not enc.bov_positions:
        return None
    all_images = [p.image for t in turns for p in t.parts if isinstance(p, ImagePart)]
    assistant = [k for k, (s, _) in enumerate(enc.image_spans) if s - 2 in enc.bov_positions]
    target = rng.choice(assistant)
    bov = enc.image_spans[target][0] - 2  # <BOV>, <|vision_start|>, pads...
    keep = pair.config.dit.max_frames
    first = max(0, target - (keep - 1))
    latents = [pair.vae.encode_image(im, pair.pixel_multiple) for im in all_images[first : target + 1]]
    text, negative = pair.text_streams(enc, bov)
    if rng.random() < text_dropout:
        text = negative
    return TrainingExample(latents=latents, target=len(latents) - 1, text=text)


def example_tokens(example: TrainingExample, patch: tuple[int, int, int]) -> int:
    """DiT tokens of a Stage-2 example: every frame (condition and target) patchified."""
    return sum((lat.shape[-2] // patch[1]) * (lat.shape[-1] // patch[2]) for lat in example.latents)


def pack_by_token_budget(
    examples: list[TrainingExample], budget: int, patch: tuple[int, int, int]
) -> list[list[TrainingExample]]:
    """Consecutive examples grouped into packs of at most `budget` DiT tokens, in order. An example larger
    than the budget on its own is a pack by itself (trained, not dropped: the budget bounds memory, and one
    oversized sample must not stop a run)."""
    packs: list[list[TrainingExample]] = []
    used = 0
    for ex in examples:
        tokens = example_tokens(ex, patch)
        if not packs or used + tokens > budget:
            packs.append([])
            used = 0
        packs[-1].append(ex)
        used += tokens
    return packs
