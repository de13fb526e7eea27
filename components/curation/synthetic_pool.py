"""The prompt pool and its expansion into distinct, split instructions.

Kept apart from answering so the pool format, deduplication and split rules can change without touching
generators. The split is a hash of the normalised text, so a request never moves between splits across
runs. The offline `expand` handler lives here (not in offline.py) because it draws real toy tasks, letting
the oracle answer without parsing.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from duogen.components.toyworld.serialize import task_to_json
from duogen.components.toyworld.world import (
    Action,
    Task,
    WorldConfig,
    apply,
    random_action,
    random_scene,
)
from duogen.platform.llm import Backend, Request, make_backend
from duogen.platform.prompts import PromptLibrary

from .offline import HANDLERS

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


def toy_task(
    rng: random.Random,
    kinds: Sequence[str],
    steps: int,
    cfg: WorldConfig | None = None,
    weights: Sequence[float] | None = None,
) -> Task:
    """A random valid task whose actions all have one of `kinds`, drawn by `weights` (default: alike);
    invalid draws are rejected and redrawn."""
    cfg = cfg or WorldConfig()
    for _ in range(200):
        scenes = [random_scene(rng, cfg, rng.randint(2, cfg.max_shapes - 1))]
        actions: list[Action] = []
        for _ in range(200):
            if len(actions) == steps:
                return Task(tuple(scenes), tuple(actions))
            kind = rng.choices(list(kinds), weights)[0] if weights else rng.choice(list(kinds))
            if kind == "remove" and len(scenes[-1].shapes) == 1:
                continue  # keep one shape so every step has something to see
            try:
                action = random_action(rng, scenes[-1], cfg, kind)
                scenes.append(apply(scenes[-1], action, cfg))
            except ValueError:
                continue
            actions.append(action)
    raise ValueError(f"could not draw a {steps}-step task with actions {list(kinds)}")


# How users ask for a toy task: the framings and the words between steps the synthetic data is written in.
# Many everyday ones, so the MLLM learns to copy the steps out of any of them, not one template; the
# evaluation's "other wordings" form asks in framings that are deliberately not here (`toyworld_eval`).
REQUEST_WORDINGS = (
    "How do I {0}?",
    "How can I {0}?",
    "Show me how to {0}.",
    "What are the steps to {0}?",
    "I want to {0}. How?",
    "How would I {0}?",
    "Can you show me how to {0}?",
    "Please show me how to {0}.",
    "I'd like to {0}.",
    "Help me {0}.",
    "Walk me through how to {0}.",
    "Explain how to {0}.",
    "What's the way to {0}?",
    "{0}. How do I do that?",
    "Steps to {0}, please.",
    "Could you show me step by step how to {0}?",
)
STEP_JOINS = (
    ", then ", " and then ", ", after that ", ". Then ", "; then ", ", and then ", " then ", ", next ",
    " and next ", ", followed by ", " and afterwards ", ". After that, ", ", and ", " and ", "; ", ". Next, ",
)  # fmt: skip


def phrase(task: Task, rng: random.Random, cfg: WorldConfig | None = None) -> str:
    """A user request from the task's `describe()` sentences: 'How do I X, then Y?' in one of the framings,
    each step joined to the one before by one of the joins."""
    clauses = [s[0].lower() + s[1:].rstrip(".") for s in task.instructions(cfg)]
    body = clauses[0] + "".join(rng.choice(STEP_JOINS) + c for c in clauses[1:])
    text = rng.choice(REQUEST_WORDINGS).format(body)
    return text[0].upper() + text[1:]


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
