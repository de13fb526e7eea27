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

SOURCES = ("web", "video", "synthetic", "alignment")


@dataclass
class CurationPlan:
    """Where each source's inputs come from: the toy world (or any folder of pages / videos), the
    prompt pool, alignment datasets."""

    world: str  # folder with pages/ and videos/
    synthetic_per_seed: int = 40
    alignment: str = ""  # folder or file of alignment datasets (.json / .jsonl); empty: none
    per_shard: int = 16
    seed: int = 0


def source_inputs(source: str, p: CurationPlan) -> list[Any]:
    from .sources import folder_inputs

    world = Path(p.world)
    if source in ("web", "video") and not world.is_dir():
        raise FileNotFoundError(
            f"the world folder {p.world} does not exist (its pages and videos are {source}'s inputs)"
        )
    if source == "web":
        return folder_inputs(world / "pages")
    if source == "video":
        return sorted(str(f) for f in (world / "videos").glob("*.mp4"))
    if source == "synthetic":
        from .synthetic import plan_instructions

        return plan_instructions(per_seed=p.synthetic_per_seed, seed=p.seed)
    if source == "alignment":
        if not p.alignment:
            return []
        root = Path(p.alignment)
        files = (
            [root]
            if root.is_file()
            else sorted(f for f in root.rglob("*") if f.suffix in (".json", ".jsonl"))
        )
        return [str(f) for f in files]
    raise ValueError(f"unknown curation source {source!r}; choose from {SOURCES}")


def stage_for(source: str):
    if source == "web":
        from .web import web_stage as stage
    elif source == "video":
        from .video import video_stage as stage
    elif source == "synthetic":
        from .synthetic import synthetic_stage as stage
    else:
        from .alignment import alignment_stage as stage
    return stage


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
