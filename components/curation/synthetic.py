"""The synthetic stage: prompt pool -> distinct instructions -> interleaved answers -> samples.

This module is the executor-facing entry point; the pool lives in `synthetic_pool` and the answerers in
`synthetic_generators`. Their public names are re-exported so callers keep importing from here.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .executor import Item, StageContext, WorkUnit
from .sample import Lineage, Part, Sample, Turn, sha256
from .synthetic_generators import (
    Generator,
    GeneratorError,
    OpenAICompatibleImageGenerator,
    Piece,
    ToyOracleGenerator,
    generator_for,
    parse_interleaved,
    png,
    task_from_request,
    user_pieces,
)
from .synthetic_pool import (
    Domain,
    Instruction,
    NearDuplicateFilter,
    Pool,
    PoolError,
    Subcategory,
    expand,
    expand_backend,
    expand_pool,
    jaccard,
    load_pool,
    normalise,
    parse_pool,
    shingles,
    split_of,
    toy_task,
)

STAGE_VERSION = "synthetic-1"


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
    "png",
    "shingles",
    "split_of",
    "synthetic_stage",
    "task_from_request",
    "toy_task",
]
