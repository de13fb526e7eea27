"""Data-engine benchmark: the web stage on the toy world's noisy pages, scored against ground truth.

Prints one JSON line: page counts and throughput, filter recalls/precision, reordering and step-count
accuracy, corrupt pages skipped vs planted, and `speedup_2_procs` (the same run with 2 worker processes vs
1, both measured here). Usage: python tests/benchmarks/data_engine.py [--pages 240] [--corrupt 12]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from duogen.components.curation.executor import plan, run_stage
from duogen.components.curation.sources import folder_inputs
from duogen.components.curation.web import web_stage
from duogen.components.curation.web_eval import evaluate
from duogen.components.toyworld.pages import make_site


def timed_run(inputs: list[str], out: Path, processes: int) -> tuple[float, dict]:
    start = time.perf_counter()
    report = run_stage(web_stage, plan(inputs, 10), out, processes=processes, progress=False)
    return time.perf_counter() - start, report.counters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=240)
    parser.add_argument("--corrupt", type=int, default=12)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        make_site(site, args.pages, seed=args.seed, corrupt_pages=args.corrupt)
        inputs = folder_inputs(site / "pages")
        t1, counters = timed_run(inputs, Path(tmp) / "one", 1)
        t2, counters2 = timed_run(inputs, Path(tmp) / "two", 2)
        assert counters == counters2, "1 and 2 processes must give the same counters"
        metrics = evaluate(site, Path(tmp) / "two")
    result = {
        "benchmark": "data_engine",
        "pages": len(inputs),
        "pages_per_s": round(len(inputs) / t2, 2),
        "pages_per_s_1_proc": round(len(inputs) / t1, 2),
        **{k: v for k, v in metrics.items() if k != "pages"},
        "corrupt_planted": args.corrupt,
        "corrupt_skipped": counters.get("pages_dropped:corrupt_page", 0),
        "images_kept": counters.get("images_kept", 0),
        "images_moved": counters.get("images_moved", 0),
        "speedup_2_procs": round(t1 / t2, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
