"""The one chat format of DuoGen: interleaved text/image conversations -> Qwen2.5-VL token sequence.

Qwen's template, written out in tokens (no Jinja, so the masks below are exact): every turn is
`<|im_start|>{role}\\n ... <|im_end|>\\n`, an image is `<|vision_start|>` + `<|image_pad|>` x n +
`<|vision_end|>` with n = grid_thw.prod() // merge_size**2. In assistant turns each image is preceded by
`<BOV>`: the MLLM learns to emit `<BOV>`, the DiT draws the image, and the image is then fed back as ordinary
vision tokens so all later text sees it (DESIGN.md section 3). No default system prompt is inserted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from .config import MLLMConfig
from .errors import DuoGenInputError
from .images import to_rgb
from .tokenizer import IM_END, IM_START, IMAGE_PAD, VISION_END, VISION_START

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")
MAX_ASPECT_RATIO = 200  # Qwen2.5-VL's own limit (smart_resize raises above it)

Role = Literal["system", "user", "assistant"]


@dataclass
class TextPart:
    text: str


@dataclass
class ImagePart:
    image: Image.Image


@dataclass
class Turn:
    role: Role
    parts: list[TextPart | ImagePart]


Conversation = list[Turn]


@dataclass
class EncodedConversation:
    """One conversation as the MLLM sees it; all per-token tensors are 1-D of length T."""

    input_ids: torch.Tensor  # [T] long
    labels: torch.Tensor  # [T] long, IGNORE_INDEX where not in the loss
    chunk_ids: torch.Tensor  # [T] long: text chunks 0, 1, 2, ... in order; image k's vision tokens -(k + 1)
    mm_token_type_ids: torch.Tensor  # [T] long, 1 on image pad tokens (transformers needs it for 3-D RoPE)
    pixel_values: torch.Tensor | None  # [sum of patches, C*t*p*p], images in order
    image_grid_thw: torch.Tensor | None  # [num_images, 3]
    image_spans: list[tuple[int, int]]  # [start, end) of each image's pad tokens
    bov_positions: list[int]
    images: list[Image.Image]  # the prepared (RGB, resized) images, in order

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def prefix(self, n: int) -> EncodedConversation:
        """The first `n` tokens as a conversation of their own (the images wholly inside them kept). A causal
        model's states of those tokens do not depend on what follows, so this is all it needs to run for
        them. Cutting through an image's tokens is an error: an image is one block."""
        if not 0 < n <= len(self):
            raise DuoGenInputError(f"prefix of {n} tokens asked of a conversation of {len(self)}")
        kept = [k for k, (start, end) in enumerate(self.image_spans) if end <= n]
        if any(start < n < end for start, end in self.image_spans):
            raise DuoGenInputError(f"a prefix of {n} tokens would cut through an image")
        pixel_values = grid = None
        if kept:
            grid = self.image_grid_thw[: len(kept)]
            pixel_values = self.pixel_values[: int(grid.prod(-1).sum())]
        return EncodedConversation(
            input_ids=self.input_ids[:n],
            labels=self.labels[:n],
            chunk_ids=self.chunk_ids[:n],
            mm_token_type_ids=self.mm_token_type_ids[:n],
            pixel_values=pixel_values,
            image_grid_thw=grid,
            image_spans=self.image_spans[: len(kept)],
            bov_positions=[b for b in self.bov_positions if b < n],
            images=self.images[: len(kept)],
        )

    def model_inputs(self) -> dict[str, Any]:
        """Keyword arguments for `Qwen2_5_VLForConditionalGeneration` (batch of one)."""
        out: dict[str, Any] = {
            "input_ids": self.input_ids[None],
            "attention_mask": torch.ones_like(self.input_ids)[None],
            "mm_token_type_ids": self.mm_token_type_ids[None],
        }
        if self.pixel_values is not None:
            out["pixel_values"] = self.pixel_values
            out["image_grid_thw"] = self.image_grid_thw
        return out


def last_text_chunk_mask(chunk_ids: torch.Tensor, upto: int) -> torch.Tensor:
    """Bool mask [upto] over positions < `upto` marking the text run that leads into position `upto`.

    `upto` is where a `<BOV>` sits (training) or is about to be generated (`upto == len`, inference). `<BOV>`
    belongs to the text chunk before it, so the chunk is `chunk_ids[upto]`, or at the end the last token's;
    when that is an image (`<BOV>` right after an image) there is no text since the image and the mask is
    all False. CFG's negative prompt drops exactly the marked tokens and keeps everything else, images too.
    """
    n = int(chunk_ids.shape[0])
    if not 0 < upto <= n:
        raise DuoGenInputError(f"upto={upto} is outside the sequence of {n} tokens")
    chunk = int(chunk_ids[upto] if upto < n else chunk_ids[n - 1])
    if chunk < 0:
        return torch.zeros(upto, dtype=torch.bool, device=chunk_ids.device)
    return chunk_ids[:upto] == chunk


def build_image_processor(cfg: MLLMConfig) -> Qwen2VLImageProcessorPil:
    """Qwen's PIL image processor (no torchvision) with the model's patch, merge and temporal sizes."""
    return Qwen2VLImageProcessorPil(
        patch_size=cfg.vision_patch_size,
        merge_size=cfg.vision_spatial_merge_size,
        temporal_patch_size=cfg.vision_temporal_patch_size,
    )


def prepare_image(img: Any, max_side: int, factor: int = 1) -> Image.Image:
    """Validate an image, convert it to RGB and resize it so the long side is <= `max_side`, keeping aspect.

    With `factor` > 1 (the MLLM passes patch * merge = 28) both sides are also rounded to multiples of
    `factor` in the same single resize, i.e. to the exact size the vision tower sees; Qwen's processor then
    leaves the size alone, so its min-pixel rule cannot push a very thin image past the cap. Images are never
    enlarged except for this rounding. Transparent pixels are composited on white, as Qwen's processor does.
    """
    img = to_rgb(img)
    w, h = img.size
    if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        raise DuoGenInputError(f"image aspect ratio {w}x{h} is more extreme than {MAX_ASPECT_RATIO}:1")
    if max_side < factor:
        raise DuoGenInputError(f"max_side={max_side} is smaller than the size factor {factor}")
    scale = min(1.0, max_side / max(w, h))
    top = (max_side // factor) * factor
    new_w, new_h = (min(top, max(factor, round(s * scale / factor) * factor)) for s in (w, h))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    return img


def _part(item: Any) -> TextPart | ImagePart:
    if isinstance(item, TextPart | ImagePart):
        return item
    if isinstance(item, str):
        return TextPart(item)
    if isinstance(item, Image.Image):
        return ImagePart(item)
    if isinstance(item, dict):
        kind = item.get("type")
        if kind == "text" and isinstance(item.get("text"), str):
            return TextPart(item["text"])
        if kind == "image" and "image" in item:
            return ImagePart(item["image"])
    raise DuoGenInputError(
        f"unknown content item {item!r:.80}: expected {{'type': 'text', 'text': str}} or "
        "{'type': 'image', 'image': PIL.Image}"
    )


def to_turns(conversation: Any) -> Conversation:
    """Normalise `Turn`s or chat dicts (`{"role": ..., "content": str | list[item]}`) into `Turn`s."""
    if not isinstance(conversation, list | tuple) or len(conversation) == 0:
        raise DuoGenInputError("conversation is empty: give at least one turn")
    turns = []
    for i, turn in enumerate(conversation):
        if isinstance(turn, Turn):
            role, content = turn.role, turn.parts
        elif isinstance(turn, dict):
            role, content = turn.get("role"), turn.get("content", turn.get("parts"))
        else:
            raise DuoGenInputError(f"turn {i} is a {type(turn).__name__}, expected a Turn or a dict")
        if role not in ROLES:
            raise DuoGenInputError(f"turn {i} has unknown role {role!r}; roles are {', '.join(ROLES)}")
        if isinstance(content, str | Image.Image):
            content = [content]
        if not isinstance(content, list | tuple):
            raise DuoGenInputError(
                f"turn {i} content must be a str or a list of parts, got {type(content).__name__}"
            )
        parts = [_part(p) for p in content]
        if role == "system" and any(isinstance(p, ImagePart) for p in parts):
            raise DuoGenInputError(f"turn {i}: a system turn cannot hold an image")
        turns.append(Turn(role, parts))
    return turns


def encode_conversation(
    conversation: Any,
    tokenizer,
    image_processor: Qwen2VLImageProcessorPil,
    *,
    bov_token: str = "<BOV>",
    max_image_side: int = 480,
    max_context: int | None = None,
    max_images: int | None = None,
    add_generation_prompt: bool = False,
) -> EncodedConversation:
    """Tokenise a conversation in Qwen's chat format with `<BOV>` before assistant images.

    Labels: system/user turns, the `<|im_start|>assistant\\n` header, the `\\n` after `<|im_end|>` and every
    vision token (start, pads, end) are IGNORE_INDEX; assistant text, `<BOV>` and the assistant `<|im_end|>`
    are in the loss. Chunks: a new text chunk starts at every system/user turn and right after every
    assistant image (ids 0, 1, 2, ... along the sequence); an assistant turn continues the chunk of the
    request it answers, so the CFG negative of an answer's first picture drops the request with the answer's
    words, not just a turn header. A user's own pictures do not split the request: its text is one chunk
    whether the pictures stand before or after it, so the negative means the same for either part order
    (DESIGN.md section 3). Image k's vision tokens are a chunk of their own, id -(k + 1), so the ids alone
    tell text from image. `<BOV>` joins the text chunk before it. User text is encoded with special tokens
    split, so a literal "<BOV>" typed by a user stays plain text.
    """
    turns = to_turns(conversation)
    bov_id = tokenizer.convert_tokens_to_ids(bov_token)
    if bov_id is None or bov_id == tokenizer.unk_token_id:
        raise DuoGenInputError(f"the tokenizer has no {bov_token!r} token")
    im_start, im_end = tokenizer.convert_tokens_to_ids(IM_START), tokenizer.convert_tokens_to_ids(IM_END)
    raw = [p.image for t in turns for p in t.parts if isinstance(p, ImagePart)]
    if max_images is not None and len(raw) > max_images:
        raise DuoGenInputError(f"conversation has {len(raw)} images, more than the limit of {max_images}")
    images, pixel_values, grid = _process_images(raw, image_processor, max_image_side)

    enc = _empty()
    chunk = -1  # current text chunk

    def put(new: list[int], in_loss: bool) -> None:
        nonlocal enc
        enc = _extend(enc, new, new if in_loss else [IGNORE_INDEX] * len(new), chunk, 0)

    for turn in turns:
        if turn.role != "assistant" or chunk < 0:  # an answer continues the chunk of what it answers
            chunk += 1
        train = turn.role == "assistant"
        put([im_start, *_text(tokenizer, f"{turn.role}\n")], False)
        for part in _merge_text(turn.parts):
            if isinstance(part, TextPart):
                put(_text(tokenizer, part.text), train)
                continue
            if train:
                enc.bov_positions.append(len(enc))
                put([bov_id], True)
            enc = _add_vision(enc, tokenizer, grid[len(enc.image_spans)], int(image_processor.merge_size))
            if train:  # a user's picture, before or after the words, does not split the request
                chunk += 1
        put([im_end], train)
        put(_text(tokenizer, "\n"), False)
    if add_generation_prompt:
        put([im_start, *_text(tokenizer, "assistant\n")], False)

    if max_context is not None and len(enc) > max_context:
        n_vision = sum(e - s + 2 for s, e in enc.image_spans)
        raise DuoGenInputError(
            f"conversation is {len(enc)} tokens ({len(enc) - n_vision} text + {n_vision} image), "
            f"longer than the context of {max_context} tokens"
        )
    return dataclasses.replace(enc, pixel_values=pixel_values, image_grid_thw=grid, images=images)


def append_tokens(
    enc: EncodedConversation, tokens: list[int], tokenizer, bov_token: str = "<BOV>"
) -> EncodedConversation:
    """`enc` plus generated tokens (inference), labelled and chunked as `encode_conversation` would do.

    Tokens continue the last text chunk, or open the next one right after an image; `<BOV>`s are recorded.
    """
    last = int(enc.chunk_ids[-1])
    chunk = last if last >= 0 else int(enc.chunk_ids.max()) + 1
    bov_id = tokenizer.convert_tokens_to_ids(bov_token)
    bovs = [len(enc) + i for i, t in enumerate(tokens) if t == bov_id]
    out = _extend(enc, tokens, tokens, chunk, 0)
    return dataclasses.replace(out, bov_positions=enc.bov_positions + bovs)


def append_image(
    enc: EncodedConversation,
    image: Image.Image,
    tokenizer,
    image_processor: Qwen2VLImageProcessorPil,
    max_image_side: int = 480,
) -> EncodedConversation:
    """`enc` plus one image as vision tokens, out of the loss (a generated image fed back after `<BOV>`)."""
    images, pixel_values, grid = _process_images([image], image_processor, max_image_side)
    out = _add_vision(enc, tokenizer, grid[0], int(image_processor.merge_size))
    return dataclasses.replace(
        out,
        pixel_values=_cat(enc.pixel_values, pixel_values),
        image_grid_thw=_cat(enc.image_grid_thw, grid),
        images=[*enc.images, *images],
    )


def image_token_count(size: tuple[int, int], image_processor, max_image_side: int = 480) -> int:
    """Tokens an image of `size` (w, h) adds: `<|vision_start|>`, its pads and `<|vision_end|>`."""
    patch, merge = int(image_processor.patch_size), int(image_processor.merge_size)
    w, h = prepare_image(Image.new("RGB", size), max_image_side, patch * merge).size
    return (w // patch) * (h // patch) // merge**2 + 2


def _text(tokenizer, s: str) -> list[int]:
    return tokenizer.encode(s, add_special_tokens=False, split_special_tokens=True) if s else []


def _process_images(raw: list[Any], image_processor, max_side: int):
    """Validated, resized RGB images plus Qwen's flattened patches and grids (None, None without images)."""
    factor = int(image_processor.patch_size) * int(image_processor.merge_size)
    images = [prepare_image(im, max_side, factor) for im in raw]
    if not images:
        return [], None, None
    feats = image_processor(images=images, return_tensors="pt")
    return images, feats["pixel_values"], feats["image_grid_thw"].long()


def _empty() -> EncodedConversation:
    z = torch.zeros(0, dtype=torch.long)
    return EncodedConversation(z, z, z, z, None, None, [], [], [])


def _extend(enc: EncodedConversation, ids: list[int], labels: list[int], chunk: int, mm_type: int):
    """Append tokens that share one chunk id and one modality type (tensors are rebuilt, `enc` is kept)."""
    new = torch.tensor(ids, dtype=torch.long)
    return dataclasses.replace(
        enc,
        input_ids=torch.cat([enc.input_ids, new]),
        labels=torch.cat([enc.labels, torch.tensor(labels, dtype=torch.long)]),
        chunk_ids=torch.cat([enc.chunk_ids, torch.full_like(new, chunk)]),
        mm_token_type_ids=torch.cat([enc.mm_token_type_ids, torch.full_like(new, mm_type)]),
        image_spans=list(enc.image_spans),
        bov_positions=list(enc.bov_positions),
    )


def _add_vision(enc: EncodedConversation, tokenizer, grid: torch.Tensor, merge: int) -> EncodedConversation:
    """`<|vision_start|>` + pads + `<|vision_end|>` for the next image: chunk -(k + 1), never in the loss."""
    start, pad, end = (tokenizer.convert_tokens_to_ids(t) for t in (VISION_START, IMAGE_PAD, VISION_END))
    n_pad, chunk = int(grid.prod()) // merge**2, -(len(enc.image_spans) + 1)
    span = (len(enc) + 1, len(enc) + 1 + n_pad)
    enc = _extend(enc, [start], [IGNORE_INDEX], chunk, 0)
    enc = _extend(enc, [pad] * n_pad, [IGNORE_INDEX] * n_pad, chunk, 1)
    enc = _extend(enc, [end], [IGNORE_INDEX], chunk, 0)
    enc.image_spans.append(span)
    return enc


def _cat(old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    return new if old is None else torch.cat([old, new.to(old.dtype)])


def _merge_text(parts: list[TextPart | ImagePart]) -> list[TextPart | ImagePart]:
    """Join neighbouring text parts, so "a" + "b" tokenises like "ab" (as Qwen's string template does)."""
    out: list[TextPart | ImagePart] = []
    for p in parts:
        if isinstance(p, TextPart) and out and isinstance(out[-1], TextPart):
            out[-1] = TextPart(out[-1].text + p.text)
        else:
            out.append(p)
    return out
