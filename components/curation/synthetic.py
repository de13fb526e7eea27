"""The synthetic stage: a hierarchical prompt pool -> many distinct instructions -> interleaved answers.

The pool (`data/prompt_pool.json`: domains -> subcategories -> seed questions) is expanded by the LLM
backend's `expand` task into new requests per seed; near-duplicates are dropped across the whole pool
(word-3-gram Jaccard), and an evaluation split is held out by a hash of the normalised text, so a request
never moves between splits from run to run.
Answers come from a pluggable interleaved generator: the toy world's oracle (which replays the task behind a
toy instruction and draws every step) or any OpenAI-compatible endpoint that answers with text and image parts
(an image-capable API, or a served DuoGen model).

The offline `expand` handler lives here (not in offline.py): for a toy-world subcategory it draws real tasks
with the subcategory's action kinds and phrases them from `describe()`, returning one JSON line per request
that carries the task, so the oracle needs no parsing; for other domains it writes templated paraphrases.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx
from duogen.components.toyworld.render import render
from duogen.components.toyworld.serialize import task_from_json, task_to_json
from duogen.components.toyworld.world import (
    DIRECTIONS,
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
    _region,
    apply,
    random_scene,
)
from duogen.platform.llm import Backend, Request, image_data_url, make_backend
from duogen.platform.prompts import PromptLibrary
from PIL import Image

from .executor import Item, StageContext, WorkUnit
from .offline import HANDLERS
from .sample import Lineage, Part, Sample, Turn, sha256

STAGE_VERSION = "synthetic-1"
PROMPTS = Path(__file__).parent / "prompts"
POOL = Path(__file__).parent / "data" / "prompt_pool.json"
ACTION_KINDS = ("move", "recolour", "add", "remove", "resize", "swap")
NEAR_DUPLICATE = 0.8


# ----------------------------------------------------------------------------------------------- the pool


class PoolError(ValueError):
    """The prompt pool file is missing or malformed; the message names the file and the JSON path."""


@dataclass(frozen=True)
class Subcategory:
    name: str
    seeds: tuple[str, ...]
    actions: tuple[str, ...] = ()  # toy-world action kinds the subcategory's requests use


@dataclass(frozen=True)
class Domain:
    name: str
    subcategories: tuple[Subcategory, ...]
    toyworld: bool = False  # requests the toy oracle can answer


@dataclass(frozen=True)
class Pool:
    domains: tuple[Domain, ...]

    def seeds(self) -> list[tuple[Domain, Subcategory, str]]:
        return [(d, s, q) for d in self.domains for s in d.subcategories for q in s.seeds]


def _name(obj: Any, where: str, path: Path) -> str:
    if not isinstance(obj, dict):
        raise PoolError(f"{path}: {where} must be an object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PoolError(f"{path}: {where} needs a non-empty string 'name'")
    return name.strip()


def _list(obj: dict, key: str, where: str, path: Path) -> list:
    value = obj.get(key)
    if not isinstance(value, list) or not value:
        raise PoolError(f"{path}: {where} needs a non-empty list {key!r}")
    return value


def parse_pool(data: Any, path: Path | str = "<pool>") -> Pool:
    """Validate the pool's JSON form; a PoolError names the first problem and where it is."""
    path = Path(path)
    if not isinstance(data, dict):
        raise PoolError(f"{path}: the pool must be a JSON object with a 'domains' list")
    domains, seen_domains = [], set()
    for i, d in enumerate(_list(data, "domains", "the pool", path)):
        where = f"domains[{i}]"
        name = _name(d, where, path)
        if name in seen_domains:
            raise PoolError(f"{path}: {where}: domain {name!r} appears twice")
        seen_domains.add(name)
        where = f"domains[{i}] ({name!r})"
        toy = d.get("toyworld", False)
        if not isinstance(toy, bool):
            raise PoolError(f"{path}: {where}: 'toyworld' must be true or false")
        subs, seen_subs = [], set()
        for j, s in enumerate(_list(d, "subcategories", where, path)):
            swhere = f"{where}.subcategories[{j}]"
            sname = _name(s, swhere, path)
            if sname in seen_subs:
                raise PoolError(f"{path}: {swhere}: subcategory {sname!r} appears twice in {name!r}")
            seen_subs.add(sname)
            swhere = f"{swhere} ({sname!r})"
            seeds = _list(s, "seeds", swhere, path)
            for k, q in enumerate(seeds):
                if not isinstance(q, str) or not q.strip():
                    raise PoolError(f"{path}: {swhere}.seeds[{k}] must be a non-empty string")
            actions = s.get("actions", list(ACTION_KINDS) if toy else [])
            if not isinstance(actions, list) or any(a not in ACTION_KINDS for a in actions):
                raise PoolError(f"{path}: {swhere}: 'actions' must be a list of {list(ACTION_KINDS)}")
            if toy and not actions:
                raise PoolError(f"{path}: {swhere}: a toy-world subcategory needs at least one action")
            subs.append(Subcategory(sname, tuple(q.strip() for q in seeds), tuple(actions)))
        domains.append(Domain(name, tuple(subs), toy))
    return Pool(tuple(domains))


def load_pool(path: str | Path | None = None) -> Pool:
    """Read and validate the pool file (default: the packaged `data/prompt_pool.json`)."""
    path = Path(path) if path is not None else POOL
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PoolError(f"{path}: cannot read the prompt pool ({err.strerror or err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PoolError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    return parse_pool(data, path)


# ------------------------------------------------------------------------------------------ instructions


@dataclass
class Instruction:
    domain: str
    subcategory: str
    text: str
    split: Literal["train", "eval"] = "train"
    task: dict[str, Any] | None = None  # the toy task (serialize.task_to_json) when the expander made one
    seed_question: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instruction:
        return cls(
            d["domain"],
            d["subcategory"],
            d["text"],
            d.get("split", "train"),
            d.get("task"),
            d.get("seed_question", ""),
        )


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: what near-duplicate checks and the split hash see."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def shingles(text: str, n: int = 3) -> frozenset[str]:
    words = normalise(text).split()
    if len(words) < n:
        return frozenset([" ".join(words)])
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDuplicateFilter:
    """Greedy: keeps a text unless its word-3-gram Jaccard with any kept text is >= threshold.

    An inverted index from shingle to kept texts finds the candidates: only texts sharing a shingle compare.
    """

    def __init__(self, threshold: float = NEAR_DUPLICATE):
        self.threshold = threshold
        self.kept: list[frozenset[str]] = []
        self.index: dict[str, list[int]] = {}

    def add(self, text: str) -> bool:
        grams = shingles(text)
        shared: Counter = Counter()
        for g in grams:
            shared.update(self.index.get(g, ()))
        for k, common in shared.items():
            if common / (len(grams) + len(self.kept[k]) - common) >= self.threshold:
                return False
        for g in grams:
            self.index.setdefault(g, []).append(len(self.kept))
        self.kept.append(grams)
        return True


def split_of(text: str, eval_fraction: float = 0.1) -> Literal["train", "eval"]:
    """Deterministic hold-out: the normalised text's hash, so a request lands in the same split every run."""
    h = int.from_bytes(hashlib.sha256(normalise(text).encode()).digest()[:8], "big") / 2**64
    return "eval" if h < eval_fraction else "train"


_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s*")


def _parse_expansion(answer: str, count: int) -> list[tuple[str, dict | None]]:
    """One request per line; a JSON line {"text", "task"} (the offline toy expander) keeps its task."""
    out = []
    for line in answer.splitlines():
        line = line.strip()
        if not line:
            continue
        task = None
        if line.startswith("{"):
            try:
                record = json.loads(line)
                line, task = str(record["text"]), record.get("task")
            except (ValueError, KeyError, TypeError):
                continue
        line = _LIST_MARK.sub("", line).strip().strip('"').strip()
        if line:
            out.append((line, task))
    return out[:count]


def expand_pool(
    pool: Pool,
    backend: Backend,
    per_seed: int,
    seed: int = 0,
    eval_fraction: float = 0.1,
    counters: Counter | None = None,
) -> list[Instruction]:
    """`per_seed` new requests per seed question; near-duplicates dropped pool-wide; eval split held out."""
    if per_seed < 1:
        raise ValueError("per_seed must be at least 1")
    counters = counters if counters is not None else Counter()
    seeds = pool.seeds()
    requests = []
    for d, s, q in seeds:
        params: dict[str, Any] = {"domain": d.name, "subcategory": s.name, "count": per_seed, "seed": seed}
        if d.toyworld:
            params["actions"] = ",".join(s.actions)
        requests.append(Request("expand", text=q, params=params))
    answers = backend.run_many(requests)
    dedup = NearDuplicateFilter()
    out = []
    for (d, s, q), answer in zip(seeds, answers, strict=True):
        for text, task in _parse_expansion(answer, per_seed):
            counters["instructions_generated"] += 1
            if not dedup.add(text):
                counters["instructions_dropped:near_duplicate"] += 1
                continue
            split = split_of(text, eval_fraction)
            counters[f"instructions_{split}"] += 1
            out.append(Instruction(d.name, s.name, text, split, task if d.toyworld else None, q))
    return out


# ------------------------------------------------------------------------------ the offline expand handler


def _random_shape(rng: random.Random, cfg: WorldConfig) -> Shape:
    size = rng.choice(list(cfg.sizes.values()))
    left, top = rng.randint(0, cfg.width - size), rng.randint(0, cfg.height - size)
    return Shape(
        rng.choice(cfg.kinds), rng.choice(list(cfg.colours)), left + size // 2, top + size // 2, size
    )


def _draw_action(rng: random.Random, scene: Scene, kind: str, cfg: WorldConfig) -> Action:
    if kind == "add":
        return Add(_random_shape(rng, cfg))
    n = len(scene.shapes)
    i = rng.randrange(n)
    if kind == "move":
        return Move(i, rng.choice(list(DIRECTIONS)))
    if kind == "recolour":
        return Recolour(i, rng.choice(list(cfg.colours)))
    if kind == "remove":
        return Remove(i)
    if kind == "resize":
        return Resize(i, rng.choice(list(cfg.sizes.values())))
    return Swap(i, rng.randrange(n))


def toy_task(rng: random.Random, kinds: Sequence[str], steps: int, cfg: WorldConfig | None = None) -> Task:
    """A random valid task whose actions all have one of `kinds` (invalid draws are rejected and redrawn)."""
    cfg = cfg or WorldConfig()
    for _ in range(200):
        scenes = [random_scene(rng, cfg, rng.randint(2, cfg.max_shapes - 1))]
        actions: list[Action] = []
        for _ in range(200):
            if len(actions) == steps:
                return Task(tuple(scenes), tuple(actions))
            kind = rng.choice(list(kinds))
            if kind == "remove" and len(scenes[-1].shapes) == 1:
                continue  # keep one shape so every step has something to see
            try:
                action = _draw_action(rng, scenes[-1], kind, cfg)
                scenes.append(apply(scenes[-1], action, cfg))
            except ValueError:
                continue
            actions.append(action)
    raise ValueError(f"could not draw a {steps}-step task with actions {list(kinds)}")


_ONE = (
    "How do I {0}?",
    "How can I {0}?",
    "Show me how to {0}.",
    "What are the steps to {0}?",
    "I want to {0}. How?",
)
_JOIN = (", then ", " and then ", ", after that ")


def phrase(task: Task, rng: random.Random, cfg: WorldConfig | None = None) -> str:
    """A user request from the task's `describe()` sentences: 'How do I X, then Y?'."""
    clauses = [s[0].lower() + s[1:].rstrip(".") for s in task.instructions(cfg)]
    return rng.choice(_ONE).format(rng.choice(_JOIN).join(clauses))


_PARAPHRASE = (
    "What is the easiest way to {core}?",
    "Can you show me step by step how to {core}?",
    "I'm a complete beginner: how do I {core}?",
    "What do I need, and what are the steps, to {core}?",
    "Walk me through how to {core}, with a picture for each step.",
    "What mistakes should I avoid when I {core}?",
    "How would a professional {core}?",
    "Is there a quick way to {core} on a budget?",
    "In {subcategory}, how should I {core} the first time?",
    "Could you explain with illustrations how to {core}?",
)
_LEAD = re.compile(
    r"^(how (do|can|should|would) i|how to|what'?s the best way to|can you show me how to)\s+", re.I
)


def _rng_for(text: str, params: dict[str, Any]) -> random.Random:
    key = f"{params.get('seed', 0)}|{params.get('domain')}|{params.get('subcategory')}|{text}"
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def expand(text: str | None = None, params: dict[str, Any] | None = None, **_: Any) -> str:
    """Offline `expand`: `count` requests, one per line, seeded by a hash of the seed question.

    With `actions` (a toy-world subcategory) each line is JSON {"text", "task"} for a freshly drawn task;
    otherwise each line is a templated paraphrase of the seed question.
    """
    params = dict(params or {})
    count = int(params.get("count", 5))
    rng = _rng_for(text or "", params)
    actions = [a for a in str(params.get("actions") or "").split(",") if a]
    if actions:
        lines = []
        for _ in range(count):
            steps = rng.randint(2, 3) if len(actions) > 1 else rng.randint(1, 2)
            task = toy_task(rng, actions, steps)
            lines.append(json.dumps({"text": phrase(task, rng), "task": task_to_json(task)}, sort_keys=True))
        return "\n".join(lines)
    core = _LEAD.sub("", (text or "").strip()).rstrip("?.! ")
    core = core[:1].lower() + core[1:] or "do this"
    templates = rng.sample(_PARAPHRASE, len(_PARAPHRASE))
    sub = str(params.get("subcategory", "this"))
    return "\n".join(templates[i % len(templates)].format(core=core, subcategory=sub) for i in range(count))


_BACKENDS: dict[str, Backend] = {}


def expand_backend(spec: str = "offline") -> Backend:
    """The LLM backend with this module's offline `expand` handler registered next to the shared ones."""
    if spec not in _BACKENDS:
        _BACKENDS[spec] = make_backend(
            spec, prompts=PromptLibrary(PROMPTS), handlers={**HANDLERS, "expand": expand}
        )
    return _BACKENDS[spec]


def plan_instructions(
    pool_path: str | Path | None = None,
    per_seed: int = 5,
    seed: int = 0,
    eval_fraction: float = 0.1,
    backend: str = "offline",
    counters: Counter | None = None,
) -> list[dict[str, Any]]:
    """Executor inputs for `synthetic_stage`: the expanded pool as serialised Instructions."""
    pool = load_pool(pool_path)
    return [
        i.to_dict()
        for i in expand_pool(pool, expand_backend(backend), per_seed, seed, eval_fraction, counters)
    ]


# -------------------------------------------------------------------------------- parsing toy requests

_CFG = WorldConfig()
_COL = "|".join(_CFG.colours)
_KIND = "|".join(_CFG.kinds)
_REF = rf"(it|(?:the\s+)?(?:{_COL})\s+(?:{_KIND}))"
_VERB = r"(?:move|shift|make|add|remove|delete|swap|resize|recolou?r|paint|turn)"
_SPLIT = re.compile(
    rf"\s*[,;]?\s*(?:and\s+)?(?:then|after that|finally)\s+"
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
                if not st[4] or _region(x, y, cfg.width, cfg.height) == st[4]:
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


def user_pieces(instruction: Instruction) -> list[Piece]:
    """The user's turn: the request, plus the initial scene when the request is about one."""
    pieces = [Piece("text", text=instruction.text)]
    task = instruction_task(instruction)
    if task is not None:
        pieces.append(Piece("image", image=png(task.scenes[0])))
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
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_retries, self.backoff, self.max_tokens = model, max_retries, backoff, max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)

    def close(self) -> None:
        self._client.close()

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
        body = self.payload(instruction)
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
                continue
            if response.status_code == 200:
                try:
                    content = response.json()["choices"][0]["message"]["content"]
                except (ValueError, KeyError, IndexError, TypeError):
                    raise GeneratorError(f"malformed response {response.text[:200]!r}") from None
                pieces = parse_interleaved(content)
                return pieces if any(p.type == "image" for p in pieces) else None
            last = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code != 429 and response.status_code < 500:
                break
        raise GeneratorError(f"{self.url}: {last}")


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


# ------------------------------------------------------------------------------------------------ the stage


def _ext(data: bytes) -> str:
    if data[:4] == b"\x89PNG":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    return "webp"


def instruction_id(instruction: Instruction) -> str:
    key = f"{instruction.domain}|{instruction.subcategory}|{normalise(instruction.text)}"
    return f"syn-{sha256(key.encode())[:16]}"


def make_sample(instruction: Instruction, assistant: list[Piece], generator_name: str) -> Item:
    files: dict[str, bytes] = {}
    turns = []
    for role, pieces in (("user", user_pieces(instruction)), ("assistant", assistant)):
        parts = []
        for p in pieces:
            if p.type == "image":
                ref = f"img{len(files)}.{_ext(p.image)}"
                files[ref] = p.image
                parts.append(Part("image", ref=ref))
            else:
                parts.append(Part(p.type, text=p.text))
        turns.append(Turn(role, parts))
    sample = Sample(
        id=instruction_id(instruction),
        turns=turns,
        source="synthetic",
        lineage=Lineage(
            f"pool://{quote(instruction.domain, safe='')}/{quote(instruction.subcategory, safe='')}",
            {"synthetic": STAGE_VERSION, "generator": generator_name, "split": instruction.split},
            {ref: sha256(data) for ref, data in files.items()},
        ),
    )
    sample.validate()
    return sample, files


def synthetic_stage(unit: WorkUnit, ctx: StageContext) -> list[Item]:
    """Executor stage: serialised Instructions (from `plan_instructions`) -> interleaved samples."""
    generator = generator_for(ctx.settings.get("generator", "toyworld"), ctx.settings.get("generator_model"))
    items = []
    for record in unit.inputs:
        ctx.count("instructions_in")
        try:
            instruction = Instruction.from_dict(record)
        except (KeyError, TypeError):
            ctx.count("instructions_dropped:malformed")
            continue
        try:
            pieces = generator.answer(instruction)
        except GeneratorError:
            ctx.count("instructions_dropped:generator_error")
            continue
        if not pieces:
            ctx.count("instructions_dropped:unanswerable")
            continue
        items.append(make_sample(instruction, pieces, generator.name))
        ctx.count("samples_kept")
        ctx.count(f"samples_{instruction.split}")
        ctx.count("images_kept", len(items[-1][1]))
    return items


__all__ = [
    "Domain",
    "Generator",
    "GeneratorError",
    "Instruction",
    "NearDuplicateFilter",
    "OpenAICompatibleImageGenerator",
    "Piece",
    "Pool",
    "PoolError",
    "Subcategory",
    "ToyOracleGenerator",
    "expand",
    "expand_backend",
    "expand_pool",
    "generator_for",
    "jaccard",
    "load_pool",
    "parse_interleaved",
    "parse_pool",
    "plan_instructions",
    "shingles",
    "split_of",
    "synthetic_stage",
    "task_from_request",
    "toy_task",
]
