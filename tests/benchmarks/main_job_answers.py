"""Does the main job's pair answer right, and where is the loss when it does not? One JSON line.

Runs the main job (`duogen pipeline run --local` at its defaults) into a fresh folder and reads its
evaluation step: the trained pair answered `eval_tasks` held-out toy tasks free-running (it writes and draws
by itself, greedy), judged by the toy-world judge: `t_com`, `i_com`, `it_co`, `i_co`, `i_q` (means; `ci95`
their bootstrap intervals), `train_minutes` (both stages), `total_minutes`, `finish_reasons`, an example.

Then, on the same trained pair:

- `forms`: the same judge on the request forms users send besides the default (`toyworld_eval.FORMS`: the
  picture before the text, wordings the training data never uses, three-step tasks), `--form-tasks` each.
- `links`: the picture chain measured link by link on one held-out set (the pretraining stream's eval split:
  `--dialogues` dialogues of 2-4 steps, each step drawn teacher-forced, `instruction_following` and
  `consistency`), so the loss between links is visible: the shipped DiT with its own text encoder (the
  shipped MLLM) on single-step edits and on the dialogues; the Stage-1 pair (the tuned MLLM feeding the
  shipped DiT, before alignment); the Stage-2 pair; and the main job free-running (`it_co`, `i_co`).

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
import time
from pathlib import Path

import torch

from duogen.components.curation.synthetic_stream import StreamConfig, held_out_dialogues
from duogen.components.evaluation.dit_edits import judge_edits
from duogen.components.evaluation.toyworld_eval import FORMS, ToyEvalConfig, evaluate_forms
from duogen.components.evaluation.toyworld_judge import METRICS, summarise
from duogen.components.evaluation.toyworld_teacher import evaluate_teacher_forced
from duogen.components.pipeline.pipeline import duogen_pipeline
from duogen.components.training.pretrain_data import DialogueData
from duogen.model.pair import DuoGenPair
from duogen.model.presets import get_preset
from duogen.platform.kfp_runner import local_arguments, run_local


def links(stage1: str, stage2: str, dialogues: int, edits: int, free: dict) -> dict:
    """instruction_following / consistency of each link of the chain on the same held-out dialogues."""
    stream = StreamConfig()
    held = held_out_dialogues(stream, dialogues, steps=(2, 3, 4))

    def teacher(pair):
        r = evaluate_teacher_forced(pair.eval(), held, 0)
        return {k: r[k] for k in ("instruction_following", "consistency", "held_out_steps")}

    shipped = DuoGenPair.build(get_preset("toy"), seed=0)
    single = judge_edits(shipped, DialogueData(shipped, "stage2", stream).held_out_edits(edits), seed=0)
    return {
        "dit_single_step_own_encoder": {k: single[k] for k in ("instruction_following", "consistency")},
        "dit_multi_step_own_encoder": teacher(shipped),
        "after_stage1": teacher(DuoGenPair.from_pretrained(stage1)),
        "after_stage2": teacher(DuoGenPair.from_pretrained(stage2)),
        "main_job_free_running": {"it_co": free["it_co"], "i_co": free["i_co"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=None, help="run folder, kept (default: a temporary one, removed)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a pipeline parameter"
    )
    parser.add_argument("--form-tasks", type=int, default=20, help="held-out tasks per other request form")
    parser.add_argument("--dialogues", type=int, default=40, help="held-out dialogues of the link table")
    parser.add_argument("--edits", type=int, default=120, help="held-out single-step edits (first link)")
    args = parser.parse_args()
    torch.set_num_threads(2)
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
    judged = summarise(records)
    line = {m: judged[m]["mean"] for m in METRICS} | {"ci95": {m: judged[m]["ci95"] for m in METRICS}}
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
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        pair = DuoGenPair.from_pretrained(steps["stage2"]["outputs"]["model"]).eval()
        others = [f for f in FORMS if f != "default"]
        forms = evaluate_forms(pair, ToyEvalConfig(tasks=args.form_tasks), others)
        line["forms"] = {f: {m: s[m]["mean"] for m in METRICS[:4]} for f, s in forms.items()}
        line["links"] = links(
            steps["stage1"]["outputs"]["model"], steps["stage2"]["outputs"]["model"], args.dialogues,
            args.edits, line,
        )  # fmt: skip
    line["analysis_minutes"] = round((time.perf_counter() - started) / 60, 2)
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
