"""Does the main job's pair answer right? One JSON line.

Runs the main job (`run_local`, the defaults of `duogen run`) into a fresh folder, then asks the trained pair
20 held-out toy tasks free-running (it writes and draws by itself, greedy) and judges each answer with the
toy-world judge: `t_com`, `i_com`, `it_co`, `i_co`, `i_q` (means; `ci95` holds their bootstrap intervals),
`train_minutes` (both stages), `finish_reasons`.

    python tests/benchmarks/main_job_answers.py [--tasks 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from duogen.components.evaluation.report import write_report
from duogen.components.evaluation.toyworld_eval import ToyEvalConfig, evaluate_free_running
from duogen.components.local_run import LocalRunConfig, run_local
from duogen.model.pair import DuoGenPair


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20, help="held-out tasks (default: 20)")
    parser.add_argument("--out", default=None, help="run folder, kept (default: a temporary one, removed)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="main_job_answers_"))
    if args.out and out.exists():
        shutil.rmtree(out)
    cfg = LocalRunConfig(out=str(out))
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_local(cfg, log=lambda m: print(m, file=sys.stderr))
        pair = DuoGenPair.from_pretrained(summary["model"]).eval()
    result = evaluate_free_running(pair, ToyEvalConfig(tasks=args.tasks, seed=cfg.seed))
    write_report(result, out / "eval", "Main job: free-running answers to held-out toy tasks")
    line = {k: v["mean"] for k, v in result["summary"].items()}
    line |= {
        "ci95": {k: v["ci95"] for k, v in result["summary"].items()},
        "tasks": args.tasks,
        "train_minutes": round((summary["seconds"]["stage1"] + summary["seconds"]["stage2"]) / 60, 2),
        "finish_reasons": dict(collections.Counter(r["finish_reason"] for r in result["records"])),
        "example": result["records"][0]["answer"][:300],
        "total_minutes": round((time.perf_counter() - start) / 60, 2),
    }
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
