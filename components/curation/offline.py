"""The deterministic offline backend's task handlers: rules standing in for an LLM/MLLM, no network.

They do the same jobs as the prompts in `prompts/` do through an OpenAI-compatible endpoint, well enough
for the toy world (whose images the toy oracle can read) and sensibly for other inputs: link and junk
removal, a colour/shape caption, a coarse category, a question from a title, transition captions.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

JUNK = re.compile(
    r"\[edit\]|click here[^.!?]*[.!?]?|read more[.!]?|subscribe[^.!?]*[.!?]|advertisement|sponsored|"
    r"share this[^.!?]*[.!?]?|accept (all )?cookies[.!]?",
    re.I,
)
MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
URL = re.compile(r"https?://\S+")


def rewrite(text: str | None = None, **_: Any) -> str:
    """Markup, links and formatting junk out; the words of the text stay."""
    out = MD_LINK.sub(r"\1", text or "")
    out = URL.sub("", out)
    out = JUNK.sub("", out)
    out = re.sub(r"[*_`#]+", "", out)
    out = re.sub(r"\s+([.,!?;:])", r"\1", out)
    return " ".join(out.split())


def _image(images: Sequence[bytes]) -> Image.Image:
    return Image.open(io.BytesIO(images[0])).convert("RGB")


def caption(images: Sequence[bytes] = (), **_: Any) -> str:
    image = _image(images)
    try:
        from duogen.components.toyworld.oracle import caption_image

        text = caption_image(image)
        if text:
            return text
    except ImportError:
        pass
    arr = np.asarray(image.resize((32, 32)), dtype=np.float32)
    r, g, b = arr.reshape(-1, 3).mean(0)
    tone = "bright" if (r + g + b) / 3 > 160 else "dark" if (r + g + b) / 3 < 80 else "mid-toned"
    return f"A {tone} {image.width}x{image.height} image."


def categorise(images: Sequence[bytes] = (), **_: Any) -> str:
    """natural_photo / gui_screenshot / document_page / illustration from colour statistics.

    Flat drawings with few colours on a plain background (the toy world's) are `illustration`; mostly-white
    pages with many small dark marks are `document_page`; few colours with large flat areas and many
    straight edges are `gui_screenshot`; everything else is `natural_photo`.
    """
    image = _image(images)
    arr = np.asarray(image.resize((64, 64), Image.NEAREST), dtype=np.int16)
    quant = (arr // 32).reshape(-1, 3)
    counts = np.bincount(quant[:, 0] * 64 + quant[:, 1] * 8 + quant[:, 2], minlength=512)
    colours = np.count_nonzero(counts)
    top = counts.max() / counts.sum()
    grey = np.abs(arr - arr.mean(-1, keepdims=True)).max(-1) < 12
    dark = arr.mean(-1) < 100
    if top > 0.6 and grey.mean() > 0.9 and 0.02 < dark.mean() < 0.3:
        return "document_page"
    if colours <= 12 and top > 0.5:
        edges = (np.abs(np.diff(arr, axis=0)).sum(-1) > 60).mean()
        return "gui_screenshot" if edges > 0.08 else "illustration"
    return "natural_photo"


def is_advert(images: Sequence[bytes] = (), **_: Any) -> str:
    """Banner-shaped images (3:1 or wider, or as tall) are adverts; the markup cues catch the rest first."""
    image = _image(images)
    ratio = image.width / image.height
    return "yes" if ratio >= 3.0 or ratio <= 1 / 3 else "no"


def question(text: str | None = None, **_: Any) -> str:
    """The user's question from a page's title and intro: an explicit question wins, else 'How do I ...?'."""
    text = text or ""
    for sentence in re.split(r"(?<=[.!?])\s+|\n", text):
        if sentence.strip().endswith("?"):
            return rewrite(sentence.strip())
    title = rewrite(text.splitlines()[0] if text else "")
    core = re.sub(r"^(how to|how do i|guide:?)\s+", "", title, flags=re.I).rstrip(".!?")
    return f"How do I {core[:1].lower() + core[1:]}?" if core else "How do I do this?"


def caption_transition(images: Sequence[bytes] = (), **_: Any) -> str:
    from duogen.components.toyworld.oracle import caption_transition as oracle

    first = Image.open(io.BytesIO(images[0])).convert("RGB")
    last = Image.open(io.BytesIO(images[1])).convert("RGB")
    return oracle(first, last)


HANDLERS = {
    "rewrite": rewrite,
    "caption": caption,
    "categorise": categorise,
    "is_advert": is_advert,
    "question": question,
    "caption_transition": caption_transition,
}
