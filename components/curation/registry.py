"""The one registry of curation sources: what each source reads, which stage function curates it, and what it
is for in training. The CLI (`duogen curate`), the pipeline's fan-out, the dataset manifest and both training
stages read it, so a new source is one entry here, never a name to add in five places.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    name: str
    suffixes: tuple[str, ...]  # the input files it reads (lower-case name endings); () = planned, not read
    stage: str  # "module:function" under duogen.components.curation: the executor stage
    stage1: bool  # its samples are dialogues Stage 1 trains the MLLM on
    stage2_weight: float  # its share of Stage 2's draw (relative to the other sources)
    folder: str = ""  # where a toy-world (or any) folder keeps this source's inputs

    def stage_function(self) -> Callable:
        module, function = self.stage.split(":")
        return getattr(importlib.import_module(f"duogen.components.curation.{module}"), function)

    def files(self, paths: list[str | Path]) -> list[str]:
        """Input files under `paths` (files as given, folders searched recursively), sorted so shards are
        reproducible; FileNotFoundError names a path that does not exist."""
        out: list[str] = []
        for p in paths:
            path = Path(p)
            if path.is_dir():
                out += sorted(
                    str(f) for f in path.rglob("*") if f.is_file() and f.name.lower().endswith(self.suffixes)
                )
            elif path.exists():
                out.append(str(path))
            else:
                raise FileNotFoundError(f"{self.name} input {p} does not exist")
        return out


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        # how-to pages: HTML folders, WARC files, CoMM `results.json`
        Source("web", (".html", ".htm", ".warc", ".warc.gz", "results.json"), "web:web_stage", True, 0.2,
               folder="pages"),
        # videos: first and last frame of each clip as a transition
        Source("video", (".mp4", ".mkv", ".webm", ".mov", ".avi"), "video:video_stage", False, 0.05,
               folder="videos"),
        # dialogues grown from the prompt pool (planned by the pool's expansion, no input files)
        Source("synthetic", (), "synthetic:synthetic_stage", True, 0.75),
        # text-to-image / editing datasets (ShareGPT-4o-Image JSON, instruction-pair JSONL)
        Source("alignment", (".json", ".jsonl"), "alignment:alignment_stage", True, 0.25),
    )
}  # fmt: skip


def source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown curation source {name!r}; sources are {', '.join(SOURCES)}")
    return SOURCES[name]


def stage1_sources() -> tuple[str, ...]:
    return tuple(n for n, s in SOURCES.items() if s.stage1)


def stage2_mix() -> dict[str, float]:
    return {n: s.stage2_weight for n, s in SOURCES.items() if s.stage2_weight > 0}
