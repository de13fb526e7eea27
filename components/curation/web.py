"""The web stage: how-to pages -> clean user/assistant dialogues with `<BOV>` where the pictures go.

Per page: main content to Markdown blocks -> image filters (advert, boilerplate, corrupt/unsupported,
tracking pixel, icon, QR code) -> drop pages with no valid image -> drop near-identical consecutive images
-> move each image after its description -> rewrite texts, caption and categorise images (LLM backend)
-> dialogise (the user's question, with the page's opening image if any; the assistant's steps, each
followed by `<BOV>` and its image). A page that cannot be read is counted and skipped, never fatal.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from duogen.platform.llm import Backend, LLMError, Request, make_backend
from duogen.platform.prompts import PromptLibrary

from .executor import Item, StageContext, WorkUnit
from .html_blocks import PageError, TextBlock, page_blocks
from .image_filters import DecodedImage, check_image, near_duplicate
from .offline import HANDLERS
from .sample import Lineage, Part, Sample, Turn, sha256
from .sources import RawPage, read_input

STAGE_VERSION = "web-1"
PROMPTS = Path(__file__).parent / "prompts"
STEP = re.compile(r"^(#+\s*)?(step\s*\d+|\d+[.)]\s|\(\d+\))", re.I)


@dataclass
class Section:
    texts: list[str] = field(default_factory=list)
    images: list[DecodedImage] = field(default_factory=list)


_BACKENDS: dict[str, Backend] = {}


def backend_for(spec: str) -> Backend:
    """One backend per process and spec (HTTP clients and caches are reused across pages)."""
    if spec not in _BACKENDS:
        _BACKENDS[spec] = make_backend(spec, prompts=PromptLibrary(PROMPTS), handlers=HANDLERS)
    return _BACKENDS[spec]


def _filtered_blocks(
    page: RawPage, ctx: StageContext, dropped: dict[str, str]
) -> tuple[str, list[TextBlock | DecodedImage]]:
    host = urlparse(page.url).netloc or None
    out: list[TextBlock | DecodedImage] = []
    title, blocks = page_blocks(page.html)
    for block in blocks:
        if isinstance(block, TextBlock):
            out.append(block)
            continue
        data = None if block.boilerplate else page.fetch(block.src)
        result = check_image(block, data, host)
        if isinstance(result, str):
            ctx.count(f"images_dropped:{result}")
            dropped[block.src] = result
            continue
        previous = next((b for b in reversed(out) if isinstance(b, DecodedImage)), None)
        if previous is not None and near_duplicate(previous.image, result.image):
            ctx.count("images_dropped:duplicate")
            dropped[block.src] = "duplicate"
            continue
        out.append(result)
    return title, out


def _mllm_ad_check(blocks, backend: Backend, ctx: StageContext, dropped: dict[str, str]) -> list:
    """Optional second opinion on adverts from the MLLM, for ads without markup cues."""
    images = [b for b in blocks if isinstance(b, DecodedImage)]
    answers = backend.run_many([Request("is_advert", images=(img.data,)) for img in images])
    ads = {
        id(img) for img, answer in zip(images, answers, strict=True) if answer.strip().lower().startswith("y")
    }
    for img in images:
        if id(img) in ads:
            ctx.count("images_dropped:advert_mllm")
            dropped[img.src] = "advert_mllm"
    return [b for b in blocks if id(b) not in ads]


def _sections(blocks: list[TextBlock | DecodedImage]) -> tuple[Section, list[Section]]:
    """Intro (before the first step) and steps; without step markers every text block is a step."""
    marked = any(isinstance(b, TextBlock) and STEP.match(b.text) for b in blocks)
    intro, steps = Section(), []
    current = intro
    for b in blocks:
        if isinstance(b, TextBlock):
            starts = STEP.match(b.text) if marked else (current is not intro or intro.texts)
            if starts:
                current = Section()
                steps.append(current)
            current.texts.append(b.text)
        else:
            current.images.append(b)
    return intro, steps


def _move_images_after_descriptions(intro: Section, steps: list[Section], ctx: StageContext) -> None:
    """Images placed before their descriptions shift every following step's image one section back; undo it.

    Walking from the last step backwards, a step without an image takes the last image of the section before
    it (which may in turn take from its predecessor). The intro keeps one opening image if it had any.
    """
    sections = [intro, *steps]
    for j in range(len(sections) - 1, 0, -1):
        prev, step = sections[j - 1], sections[j]
        keep = 1 if prev is intro else 0
        if not step.images and len(prev.images) > keep:
            step.images.append(prev.images.pop())
            ctx.count("images_moved")


def _stored(img: DecodedImage, index: int) -> tuple[str, bytes]:
    """PNG and JPEG bytes are kept as they came; other formats (GIF, WebP, BMP) are stored as PNG."""
    if img.data[:8] == b"\x89PNG\r\n\x1a\n":
        return f"img{index}.png", img.data
    if img.data[:3] == b"\xff\xd8\xff":
        return f"img{index}.jpg", img.data
    buf = io.BytesIO()
    img.image.save(buf, format="PNG")
    return f"img{index}.png", buf.getvalue()


def process_page(page: RawPage, backend: Backend, ctx: StageContext) -> Item | None:
    """One page -> one sample, or None with the reason counted (a bad page never fails the shard)."""
    dropped: dict[str, str] = {}
    try:
        title, blocks = _filtered_blocks(page, ctx, dropped)
    except PageError as err:
        ctx.count("pages_dropped:corrupt_page")
        ctx.count(f"corrupt:{str(err).split(' (')[0]}")
        return None
    if not any(isinstance(b, DecodedImage) for b in blocks):
        ctx.count("pages_dropped:no_valid_image")
        return None
    try:
        return _dialogue(page, title, blocks, backend, ctx, dropped)
    except LLMError as err:
        ctx.count("pages_dropped:llm_error")
        ctx.count(f"llm_error:{err.status or 'network'}")
        return None


def _dialogue(
    page: RawPage, title: str, blocks: list, backend: Backend, ctx: StageContext, dropped: dict[str, str]
) -> Item | None:
    if ctx.settings.get("mllm_ad_check"):
        blocks = _mllm_ad_check(blocks, backend, ctx, dropped)
    intro, steps = _sections(blocks)
    if not steps:
        ctx.count("pages_dropped:no_steps")
        return None
    _move_images_after_descriptions(intro, steps, ctx)

    texts = [" ".join(s.texts) for s in steps]
    ctx.count("images_dropped:extra_intro_image", max(0, len(intro.images) - 1))
    images = intro.images[:1] + [img for s in steps for img in s.images]
    requests = [Request("question", text="\n".join([title, *intro.texts]))]
    requests += [Request("rewrite", text=t) for t in texts]
    requests += [Request(task, images=(img.data,)) for img in images for task in ("caption", "categorise")]
    answers = backend.run_many(requests)
    question, rewritten, described = answers[0], answers[1 : 1 + len(texts)], answers[1 + len(texts) :]

    files: dict[str, bytes] = {}
    parts_of: dict[int, Part] = {}
    for i, img in enumerate(images):
        ref, data = _stored(img, i)
        files[ref] = data
        part = Part("image", ref=ref, caption=described[2 * i], category=described[2 * i + 1])
        parts_of[id(img)] = part
    user = [Part("text", text=question)] + [parts_of[id(img)] for img in intro.images[:1]]
    assistant: list[Part] = []
    for step, text in zip(steps, rewritten, strict=True):
        assistant.append(Part("text", text=text))
        for img in step.images:
            assistant += [Part("bov"), parts_of[id(img)]]
    ctx.count("images_kept", len(images))
    ctx.count("pages_kept")
    sample = Sample(
        id=f"web-{sha256(page.url.encode())[:16]}",
        turns=[Turn("user", user), Turn("assistant", assistant)],
        source="web",
        lineage=Lineage(
            page.url,
            {"web": STAGE_VERSION, "backend": backend.name},
            {ref: sha256(data) for ref, data in files.items()},
            dropped,
        ),
    )
    return sample, files


def web_stage(unit: WorkUnit, ctx: StageContext) -> list[Item]:
    """Executor stage: every input of the unit (html / warc / CoMM json path) -> samples."""
    backend = backend_for(ctx.settings.get("backend", "offline"))
    items = []
    for spec in unit.inputs:
        ctx.count("inputs")
        try:
            pages = list(read_input(spec))
        except (OSError, ValueError) as err:
            ctx.count("pages_dropped:unreadable_input")
            ctx.count(f"unreadable:{type(err).__name__}")
            continue
        for page in pages:
            ctx.count("pages_in")
            item = process_page(page, backend, ctx)
            if item is not None:
                items.append(item)
    return items
