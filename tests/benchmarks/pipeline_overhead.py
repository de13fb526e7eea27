"""How much of a local pipeline run is orchestration? One JSON line.

Runs `duogen pipeline run --local` once into a fresh folder (the main job's default size, about 5
minutes; `--size small` does little work in each step, the worst case for overhead) and reads each step's
record: `step_seconds` (time inside each stage's own work), `total_seconds` (wall time of the whole run),
`orchestration_overhead` (time outside the stage functions / total: KFP's local runner, one Python process
per task, imports, the hand-over of outputs; target <= 0.15 at the default size).

    python tests/benchmarks/pipeline_overhead.py [--size default|small]

Parallel curation parts overlap in time, so their summed seconds slightly overstate the work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from duogen.components.pipeline.pipeline import duogen_pipeline
from duogen.platform.kfp_runner import local_arguments, run_local


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["small", "default"], default="default")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="pipeline_overhead_"))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            summary = run_local(duogen_pipeline, local_arguments(out, args.size, {}), out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    step_seconds = {k: v["seconds"] for k, v in summary["steps"].items()}
    total = summary["total_seconds"]
    work = sum(step_seconds.values())
    line = {
        "size": args.size,
        "total_seconds": total,
        "work_seconds": round(work, 2),
        "orchestration_overhead": round((total - work) / total, 4),
        "tasks": len(step_seconds),
        "step_seconds": step_seconds,
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
