"""Interleaved answerers: the toy-world oracle and OpenAI-compatible endpoints, behind one protocol.

Kept apart from the pool so adding a generator touches nothing else; toy requests are parsed back into
tasks here because only answering needs them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import random
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from PIL import Image

from duogen.components.toyworld.render import render
from duogen.components.toyworld.serialize import task_from_json
from duogen.components.toyworld.world import (
    Action,
    Add,
    Move,
    Recolour,
    Remove,
    Resize,
    Scene,
    Shape,
    Swap,
    Task,
    WorldConfig,
    apply,
    region_name,
)
from duogen.platform.llm import ChatClient, LLMError, image_data_url

from .synthetic_pool import Instruction, normalise

# -------------------------------------------------------------------------------- parsing toy requests

_CFG = WorldConfig()
_COL = "|".join(_CFG.colours)
_KIND = "|".join(_CFG.kinds)
_REF = rf"(it|(?:the\s+)?(?:{_COL})\s+(?:{_KIND}))"
_VERB = r"(?:move|shift|make|add|remove|delete|swap|resize|recolou?r|paint|turn)"
_SPLIT = re.compile(
    rf"\s*[,;.]?\s*(?:and\s+)?(?:then|after that|finally|next|afterwards|followed by)[,\s]+"
    rf"|\s*[,;]\s*(?:and\s+)?(?={_VERB}\b)|\s+and\s+(?={_VERB}\b)"
)
_PREFIX = re.compile(
    r"^(?:how (?:do|can|should) i|show me how to|what are the steps to|i want to|i'?d like to|please)\s+"
)
_SIZE_WORDS = {"small": "small", "smaller": "small", "large": "large", "big": "large", "bigger": "large"}
_REGIONS = (
    "top left",
    "top right",
    "bottom left",
    "bottom right",
    "top",
    "bottom",
    "left",
    "right",
    "centre",
)


def parse_toy_request(text: str) -> list[tuple] | None:
    """Symbolic steps from a toy request ('How do I move the red circle up, then make it large?'), or None."""
    body = _PREFIX.sub("", text.strip().lower())
    body = re.sub(r"(?:\.\s*how)?\s*[?.!]+$", "", body).strip()
    steps: list[tuple] = []
    for clause in _SPLIT.split(body):
        clause = clause.strip()
        if m := re.fullmatch(rf"(?:move|shift)\s+{_REF}\s+(?:to\s+the\s+)?(left|right|up|down)", clause):
            steps.append(("move", m[1], m[2]))
        elif m := re.fullmatch(rf"swap\s+(?:the\s+positions\s+of\s+)?{_REF}\s+(?:and|with)\s+{_REF}", clause):
            steps.append(("swap", m[1], m[2]))
        elif m := re.fullmatch(rf"(?:remove|delete)\s+{_REF}", clause):
            steps.append(("remove", m[1]))
        elif m := re.fullmatch(
            rf"add\s+an?\s+(?:(small|large)\s+)?({_COL})\s+({_KIND})(?:\s+(?:at|in)\s+the\s+(center|{'|'.join(_REGIONS)}))?",
            clause,
        ):
            steps.append(("add", m[1], m[2], m[3], (m[4] or "").replace("center", "centre")))
        elif m := re.fullmatch(
            rf"(?:make|paint|turn|colou?r|recolou?r|resize)\s+{_REF}\s+(?:to\s+)?(\w+)", clause
        ):
            if m[2] in _CFG.colours:
                steps.append(("recolour", m[1], m[2]))
            elif m[2] in _SIZE_WORDS:
                steps.append(("resize", m[1], _SIZE_WORDS[m[2]]))
            else:
                return None
        else:
            return None
    return steps or None


def _ref_name(ref: str, last: str | None) -> str | None:
    return last if ref == "it" else re.sub(r"^the\s+", "", ref)


def task_from_request(
    text: str, seed: int = 0, cfg: WorldConfig | None = None, tries: int = 200
) -> Task | None:
    """Rebuild a task for a toy request: a seeded scene holding the shapes it names, then its actions."""
    cfg = cfg or WorldConfig()
    steps = parse_toy_request(text)
    if steps is None:
        return None
    rng = random.Random(
        int.from_bytes(hashlib.sha256(f"{seed}|{normalise(text)}".encode()).digest()[:8], "big")
    )
    for _ in range(tries):
        try:
            return _realise(steps, rng, cfg)
        except (ValueError, LookupError):
            continue
    return None


def _realise(steps: list[tuple], rng: random.Random, cfg: WorldConfig) -> Task:
    """One random attempt; ValueError/LookupError when this draw cannot carry the steps out."""
    sizes = cfg.sizes
    # shapes that must exist before the first step: named before anything creates them
    initial: dict[str, int] = {}
    created: set[str] = set()
    colour_of: dict[str, str] = {}
    last = None
    for st in steps:
        if st[0] == "add":
            name = f"{st[2]} {st[3]}"
            created.add(name)
            last = name
            continue
        for ref in st[1:3] if st[0] == "swap" else st[1:2]:
            name = _ref_name(ref, last)
            if name is None:
                raise LookupError("'it' with nothing named before")
            if name not in created and name not in initial and name not in colour_of:
                size = rng.choice(list(sizes.values()))
                if st[0] == "resize" and _ref_name(st[1], last) == name:
                    size = next(v for k, v in sizes.items() if k != st[2])
                initial[name] = size
            last = name
        if st[0] == "recolour":
            old = _ref_name(st[1], last)
            new = f"{st[2]} {old.split()[1]}"
            colour_of[new] = old
            created.add(new)
            last = new
    scene = Scene((), cfg.width, cfg.height)
    for name, size in initial.items():
        colour, kind = name.split()
        for _ in range(100):
            x, y = (
                rng.randint(size // 2, cfg.width - size + size // 2),
                rng.randint(size // 2, cfg.height - size + size // 2),
            )
            try:
                scene = apply(scene, Add(Shape(kind, colour, x, y, size)), cfg)
                break
            except ValueError:
                continue
        else:
            raise ValueError("could not place the named shapes")
    scenes, actions, last = [scene], [], None
    for st in steps:
        cur = scenes[-1]
        names = [s.name for s in cur.shapes]
        if st[0] == "add":
            size = sizes[st[1]] if st[1] else rng.choice(list(sizes.values()))
            for _ in range(100):
                x = rng.randint(size // 2, cfg.width - size + size // 2)
                y = rng.randint(size // 2, cfg.height - size + size // 2)
                if not st[4] or region_name(x, y, cfg.width, cfg.height) == st[4]:
                    break
            action: Action = Add(Shape(st[3], st[2], x, y, size))
            last = f"{st[2]} {st[3]}"
        else:
            name = _ref_name(st[1], last)
            i = names.index(name)
            if st[0] == "move":
                action = Move(i, st[2])
            elif st[0] == "remove":
                action = Remove(i)
            elif st[0] == "resize":
                action = Resize(i, sizes[st[2]])
            elif st[0] == "recolour":
                action = Recolour(i, st[2])
                name = f"{st[2]} {name.split()[1]}"
            else:
                other = _ref_name(st[2], name)
                action = Swap(i, names.index(other))
                name = other
            last = name
        scenes.append(apply(cur, action, cfg))
        actions.append(action)
    return Task(tuple(scenes), tuple(actions))


# --------------------------------------------------------------------------------------------- generators


@dataclass(frozen=True)
class Piece:
    """One item of an interleaved turn: text, the `<BOV>` marker, or an encoded image."""

    type: Literal["text", "bov", "image"]
    text: str | None = None
    image: bytes | None = None


class GeneratorError(RuntimeError):
    """The generator failed on one instruction (network, malformed answer); the stage counts and skips it."""


class Generator(Protocol):
    name: str

    def answer(self, instruction: Instruction) -> list[Piece] | None: ...


def png(scene: Scene, cfg: WorldConfig | None = None) -> bytes:
    buf = io.BytesIO()
    render(scene, cfg).save(buf, "PNG", optimize=False)
    return buf.getvalue()


def instruction_task(instruction: Instruction) -> Task | None:
    """The toy task behind an instruction: the expander's, else parsed from the text (None if neither)."""
    if instruction.task is not None:
        try:
            return task_from_json(instruction.task)
        except (KeyError, TypeError, ValueError):
            return None
    return task_from_request(instruction.text)


def picture_first(text: str) -> bool:
    """Whether a request's picture goes before its text: half of the requests each way, fixed by a hash of
    the text. Clients send both orders, so the data shows both (DESIGN.md section 3)."""
    return hashlib.sha256(("order|" + normalise(text)).encode()).digest()[0] % 2 == 1


def user_pieces(instruction: Instruction) -> list[Piece]:
    """The user's turn: the request, plus the initial scene when the request is about one (before or after
    the text, `picture_first`)."""
    pieces = [Piece("text", text=instruction.text)]
    task = instruction_task(instruction)
    if task is not None:
        picture = Piece("image", image=png(task.scenes[0]))
        pieces = [picture, *pieces] if picture_first(instruction.text) else [*pieces, picture]
    return pieces


class ToyOracleGenerator:
    """Answers toy requests exactly: per step the `describe()` sentence, `<BOV>` and the scene after it."""

    name = "toyworld-oracle"

    def __init__(self, cfg: WorldConfig | None = None):
        self.cfg = cfg or WorldConfig()

    def answer(self, instruction: Instruction) -> list[Piece] | None:
        task = instruction_task(instruction)
        if task is None or not task.actions:
            return None
        scene = task.scenes[0]
        for action, expected in zip(task.actions, task.scenes[1:], strict=True):
            try:
                scene = apply(scene, action, self.cfg)
            except ValueError:
                return None
            if scene != expected:  # a task whose scenes do not follow from its actions is not trusted
                return None
        pieces = []
        for k, (sentence, after) in enumerate(zip(task.instructions(self.cfg), task.scenes[1:], strict=True)):
            pieces += [
                Piece("text", text=f"Step {k + 1}: {sentence}"),
                Piece("bov"),
                Piece("image", image=png(after)),
            ]
        return pieces


_DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,(.*)$", re.S)
_BOV = re.compile(r"<\s*BOV\s*>", re.I)


def _decode_image(url: str) -> bytes:
    m = _DATA_URL.match(url)
    if not m:
        raise GeneratorError(f"image part is not a PNG/JPEG/WebP data URL: {url[:60]!r}")
    try:
        data = base64.b64decode(m[2], validate=True)
        Image.open(io.BytesIO(data)).verify()
    except (binascii.Error, ValueError, OSError) as err:
        raise GeneratorError(f"image part does not decode: {err}") from None
    return data


def parse_interleaved(content: Any) -> list[Piece]:
    """Message content (a string or a list of text / image_url parts) -> pieces; `<BOV>` before each image."""
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise GeneratorError(f"message content is neither text nor a list of parts: {type(content).__name__}")
    pieces: list[Piece] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = " ".join(_BOV.sub(" ", str(part.get("text", ""))).split())
            if text:
                pieces.append(Piece("text", text=text))
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise GeneratorError("image_url part without a url")
            pieces += [Piece("bov"), Piece("image", image=_decode_image(url))]
        else:
            raise GeneratorError(f"unknown content part {part!r:.80}")
    return pieces


class OpenAICompatibleImageGenerator:
    """POSTs the user's turn to `{base_url}/chat/completions` and reads an interleaved text+image answer.

    The answer's message content is a list of `{"type": "text"}` and `{"type": "image_url"}` parts (data
    URLs), which is also how a served DuoGen model answers. An answer without images is not interleaved: None.
    Transient failures (transport errors, 429, 5xx) are retried with backoff; the rest raise GeneratorError.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        max_tokens: int = 2048,
    ):
        self.name = f"openai-image:{model}"
        self.model, self.max_tokens = model, max_tokens
        self.chat = ChatClient(base_url, api_key, timeout=timeout, max_retries=max_retries, backoff=backoff)
        self.url = self.chat.url

    def close(self) -> None:
        self.chat.close()

    def payload(self, instruction: Instruction) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for p in user_pieces(instruction):
            if p.type == "text":
                content.append({"type": "text", "text": p.text})
            else:
                content.append({"type": "image_url", "image_url": {"url": image_data_url(p.image)}})
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "modalities": ["text", "image"],
            "max_tokens": self.max_tokens,
        }

    def answer(self, instruction: Instruction) -> list[Piece] | None:
        try:
            content = self.chat.complete(self.payload(instruction), self.url)
        except LLMError as err:
            raise GeneratorError(str(err)) from None
        pieces = parse_interleaved(content)
        return pieces if any(p.type == "image" for p in pieces) else None


_GENERATORS: dict[str, Generator] = {}


def generator_for(spec: str = "toyworld", model: str | None = None) -> Generator:
    """`toyworld` (the oracle) or an OpenAI-compatible base URL; one instance per process and spec."""
    key = f"{spec}|{model}"
    if key not in _GENERATORS:
        if spec == "toyworld":
            _GENERATORS[key] = ToyOracleGenerator()
        elif spec.startswith(("http://", "https://")):
            model = model or os.environ.get("DUOGEN_GENERATOR_MODEL") or "duogen"
            api_key = os.environ.get("DUOGEN_GENERATOR_API_KEY") or None
            _GENERATORS[key] = OpenAICompatibleImageGenerator(spec, model, api_key)
        else:
            raise ValueError(
                f"unknown generator {spec!r}; use 'toyworld' or an http(s):// base URL ending in /v1"
            )
    return _GENERATORS[key]
