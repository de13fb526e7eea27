"""Curation split into independent parts, so a pipeline can fan it out (one pod per part on a cluster).

Each source's inputs are planned into shards exactly as one local run would plan them; part k of n runs
the shards whose index is k mod n. The union of all parts is therefore the same set of shard files as one
run over everything, and each part resumes on its own (finished shards are skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .executor import plan, run_stage
from .registry import source as registered


@dataclass
class CurationPlan:
    """Where each source's inputs come from: the toy world (or any folder whose `pages/` and `videos/` hold
    web and video inputs), the prompt pool, alignment datasets."""

    world: str  # folder with pages/ and videos/
    synthetic_per_seed: int = 40
    alignment: str = ""  # folder or file of alignment datasets (.json / .jsonl); empty: none
    per_shard: int = 16
    seed: int = 0


def source_inputs(name: str, p: CurationPlan) -> list[Any]:
    """A source's inputs, found as `duogen curate` finds them (the registry's input kinds)."""
    src = registered(name)
    if name == "synthetic":
        from .synthetic import plan_instructions

        return plan_instructions(per_seed=p.synthetic_per_seed, seed=p.seed)
    if name == "alignment":
        return src.files([p.alignment]) if p.alignment else []
    world = Path(p.world)
    if not world.is_dir():
        raise FileNotFoundError(
            f"the world folder {p.world} does not exist (its {src.folder}/ holds {name}'s inputs)"
        )
    return src.files([world / src.folder]) if (world / src.folder).is_dir() else []


def stage_for(name: str):
    return registered(name).stage_function()


def parts(p: CurationPlan, sources: list[str], shards: int) -> list[dict[str, Any]]:
    """The work items of a fan-out: up to `shards` parts per source (never more parts than shards)."""
    items = []
    for source in sources:
        units = plan(source_inputs(source, p), p.per_shard)
        n = min(max(1, shards), len(units))
        items += [{"source": source, "part": k, "parts": n} for k in range(n)]
    return items


def curate_part(
    p: CurationPlan, source: str, part: int, n_parts: int, out: str | Path, processes: int = 1
) -> dict:
    """Run part `part` of `n_parts` of one source into `out` (the source's shard folder)."""
    units = [u for u in plan(source_inputs(source, p), p.per_shard) if u.index % n_parts == part]
    report = run_stage(stage_for(source), units, out, processes=processes, progress=False, name=source)
    return report.to_dict()
