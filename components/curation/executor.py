"""The local executor: runs one stage over many shards in parallel processes, resumably.

Stages are plain functions `stage(unit, ctx) -> list[(Sample, images)]` over one work unit (a list of
inputs); the executor owns everything around them (as NeMo Curator separates stages from executors): the
shard files, skipping shards that are already complete (a shard is complete once its manifest exists), the
progress bar, and per-stage counters (kept, dropped by reason) merged into `_report.json`. A killed run is
restarted with the same arguments and redoes only the unfinished shards, so it loses nothing.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .sample import Sample
from .shards import manifest_path, write_shard

Item = tuple[Sample, dict[str, bytes]]


@dataclass
class StageContext:
    """What a stage gets besides its inputs: counters to fill and the stage's settings."""

    shard_index: int
    settings: dict[str, Any] = field(default_factory=dict)
    counters: Counter = field(default_factory=Counter)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n


@dataclass
class WorkUnit:
    index: int
    inputs: list[Any]


def plan(inputs: Sequence[Any], per_shard: int) -> list[WorkUnit]:
    """Deterministic split: the same inputs and shard size always give the same shards."""
    if per_shard < 1:
        raise ValueError("per_shard must be at least 1")
    return [
        WorkUnit(i, list(inputs[s : s + per_shard])) for i, s in enumerate(range(0, len(inputs), per_shard))
    ]


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.tar"


def _stats_path(out_dir: Path, index: int) -> Path:
    return out_dir / (shard_name(index) + ".stats.json")


def _run_unit(args: tuple[Callable, WorkUnit, str, dict]) -> tuple[int, dict[str, int], float]:
    stage, unit, out_dir, settings = args
    start = time.perf_counter()
    ctx = StageContext(unit.index, settings)
    items = stage(unit, ctx)
    out = Path(out_dir)
    # stats first, manifest last: a shard whose manifest exists has its stats too
    _stats_path(out, unit.index).write_text(json.dumps(dict(ctx.counters), sort_keys=True))
    write_shard(out / shard_name(unit.index), items)
    return unit.index, dict(ctx.counters), time.perf_counter() - start


@dataclass
class RunReport:
    stage: str
    shards: int
    shards_skipped: int
    counters: dict[str, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "shards": self.shards,
            "shards_skipped": self.shards_skipped,
            "counters": self.counters,
            "seconds": round(self.seconds, 3),
        }


def run_stage(
    stage: Callable[[WorkUnit, StageContext], list[Item]],
    units: Sequence[WorkUnit],
    out_dir: str | Path,
    processes: int = 1,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
    name: str | None = None,
) -> RunReport:
    """Run `stage` over every unit whose shard is not complete yet; returns (and writes) the merged report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or getattr(stage, "__name__", "stage")
    todo = [u for u in units if not manifest_path(out / shard_name(u.index)).exists()]
    start = time.perf_counter()
    jobs = [(stage, u, str(out), settings or {}) for u in todo]
    with tqdm(
        total=len(units), initial=len(units) - len(todo), desc=name, unit="shard", disable=not progress
    ) as bar:
        if processes > 1 and len(jobs) > 1:
            with mp.get_context("fork").Pool(processes) as pool:
                for _ in pool.imap_unordered(_run_unit, jobs):
                    bar.update(1)
        else:
            for job in jobs:
                _run_unit(job)
                bar.update(1)
    totals: Counter = Counter()
    for u in units:
        stats = _stats_path(out, u.index)
        if stats.exists():
            totals.update(json.loads(stats.read_text()))
    report = RunReport(
        name, len(units), len(units) - len(todo), dict(sorted(totals.items())), time.perf_counter() - start
    )
    (out / "_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report
