"""Does the main job's pair answer right? One JSON line.

Runs the main job (`duogen pipeline run --local` at its defaults) into a fresh folder and reads its
evaluation step: the trained pair answered 20 held-out toy tasks free-running (it writes and draws by
itself, greedy), judged by the toy-world judge: `t_com`, `i_com`, `it_co`, `i_co`, `i_q` (means; `ci95`
their bootstrap intervals), `train_minutes` (both stages), `total_minutes`, `finish_reasons`, an example.

    python tests/benchmarks/main_job_answers.py [--out DIR] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import collections
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
    parser.add_argument("--out", default=None, help="run folder, kept (default: a temporary one, removed)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a pipeline parameter"
    )
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="main_job_answers_"))
    if args.out and out.exists():
        shutil.rmtree(out)
    overrides = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    arguments = local_arguments(out, "default", overrides)
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_local(duogen_pipeline, arguments, out)
    steps = summary["steps"]
    folder = out / arguments.get("run_name", "toy") / "evaluate"
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    line = dict(steps["evaluate"]["outputs"]["metrics"])
    report = (folder / "report.md").read_text()
    line |= {
        "tasks": len(records),
        "train_minutes": round((steps["stage1"]["seconds"] + steps["stage2"]["seconds"]) / 60, 2),
        "total_minutes": round(summary["total_seconds"] / 60, 2),
        "finish_reasons": dict(collections.Counter(r["finish_reason"] for r in records)),
        "example": records[0]["answer"][:300],
        "promoted": steps["promote-champion"]["outputs"]["promoted"],
        "report": report[report.index("| metric") :].split("\n\n")[0],
    }
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
