"""Toy-world learning benchmark: does the `toy` pair learn the toy world on this CPU? Prints one JSON line.

One run of the main job (the local pipeline at its defaults: toy world -> data engine shards -> Stage 1 ->
Stage 2; no deploy), into a fresh folder, then the trained pair is judged on held-out dialogues: the first
`--dialogues` of the synthetic stage's evaluation split (held out by a hash of the request text; the trainer
never sees it), whose toy tasks are re-derived from the same seeded prompt-pool expansion, so the truth scene
of every step is known exactly.

Metrics (all measured in this run; the judge is `duogen.components.evaluation.toyworld_teacher`):

- `bov_f1`: teacher-forced over every assistant position of every held-out dialogue (each token that is in
  the Stage-1 loss: assistant text, `<BOV>`, the closing `<|im_end|>`), the model's greedy next token (with
  the structure tokens generation never samples banned, as in `generate`) is "BOV" or "not BOV"; the
  reference is whether that position holds `<BOV>`. F1 of the BOV class (with precision and recall).
- `instruction_following`: for every step of every held-out dialogue, the step's picture is drawn
  teacher-forced (the reference history: the earlier reference images as condition frames, the MLLM's hidden
  states of the reference text up to the step's `<BOV>` as the text stream, CFG as in generation), read back
  with the toy checker (`find_shapes`) and compared with the truth scene after the step: 1 if every shape
  matches (kind, colour, size, position within 4 px) and there is no extra shape. An `add` instruction names
  only a region ("at the top left"), not a pixel position, so the added shape must match kind, colour, size
  and lie in the named region; every other shape is held to the exact check.
  `instruction_following_strict` holds added shapes to the exact position of the truth as well.
- `consistency`: on the same pictures, `scene_consistency`: the fraction of shapes the step's action does
  not touch that keep kind, colour, size and place (mean over steps).
- `tp2_vs_tp1_max_loss_diff`: `tests/tp_worker.py` under torchrun with 2 processes (gloo): the largest
  difference between the TP=2 and the dense losses over its 3 AdamW steps, for the DiT (Stage 2) and the
  MLLM (Stage 1).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from duogen.components.curation.synthetic import instruction_id, plan_instructions
from duogen.components.curation.synthetic_generators import instruction_task
from duogen.components.curation.synthetic_pool import Instruction
from duogen.components.evaluation.toyworld_teacher import evaluate_teacher_forced
from duogen.components.pipeline.pipeline import FROM_SCRATCH, duogen_pipeline
from duogen.components.training.data import iter_samples
from duogen.components.training.loop import shard_files
from duogen.model.pair import DuoGenPair
from duogen.platform.kfp_runner import local_arguments, run_local
from duogen.platform.launch import torchrun

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "tp_worker.py"

# The benchmark's recipe: the main job's own defaults (the pretrained parts, Stage 1's tuning, Stage 2's
# connector alignment); each can be changed from the command line.
SETTINGS = {
    name: inspect.signature(duogen_pipeline.pipeline_func).parameters[name].default
    for name in ("preset", "pages", "videos", "synthetic_per_seed", "stage1_steps", "stage2_steps",
                 "batch_size", "stage1_lr", "stage2_lr", "stage2_dit_lr_ratio")
}  # fmt: skip


# ---------------------------------------------------------------------------------------- held-out set


def held_out(run: Path, per_seed: int, seed: int = 0, limit: int = 80):
    """(sample, images, task) of the synthetic stage's evaluation split, as the data engine wrote them."""
    instructions = [Instruction.from_dict(d) for d in plan_instructions(per_seed=per_seed, seed=seed)]
    tasks = {instruction_id(i): instruction_task(i) for i in instructions if i.split == "eval"}
    out = []
    for sample, images in iter_samples(shard_files([str(p) for p in sorted(run.glob("curate-synthetic-*"))])):
        if sample.lineage.stages.get("split") == "eval" and tasks.get(sample.id) is not None:
            out.append((sample, images, tasks[sample.id]))
        if len(out) == limit:
            break
    if not out:
        raise SystemExit("no held-out dialogues: raise synthetic_per_seed")
    return out


# ------------------------------------------------------------------------------------- tensor parallel


def tp_max_loss_diff() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tp.json"
        proc = torchrun([str(WORKER), str(out)], nproc=2, timeout=300, cwd=str(ROOT))
        if proc.returncode != 0:
            raise SystemExit(f"tp_worker failed:\n{proc.stderr[-3000:]}")
        result = json.loads(out.read_text())
    pairs = [("tp_losses", "dense_losses"), ("mllm_tp_losses", "mllm_dense_losses")]  # Stage 2, Stage 1
    return max(abs(a - b) for tp, dense in pairs for a, b in zip(result[tp], result[dense], strict=True))


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="run folder (default: a fresh temporary one, removed)")
    for key, value in SETTINGS.items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=value)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: these small ops gain little from 2, and lose 10x or more when "
        "another process holds the second core)",
    )
    parser.add_argument("--dialogues", type=int, default=80, help="held-out dialogues judged (default 80)")
    parser.add_argument(
        "--from-scratch", action="store_true", help="both parts from random weights (preset toy-scratch)"
    )
    args = parser.parse_args()
    if args.from_scratch:
        vars(args).update(FROM_SCRATCH)  # random parts: a long Stage 1, the whole DiT in Stage 2
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="toyworld_learning_"))
    if args.out and out.exists():
        shutil.rmtree(out)  # a fresh run: resuming would hide the training time
    settings = {k: getattr(args, k) for k in SETTINGS}
    arguments = local_arguments(out, "default", {**settings, "eval_tasks": 1, "deploy_model": False})
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the trainers' log lines: stdout holds only the result
        summary = run_local(duogen_pipeline, arguments, out)
    steps = summary["steps"]
    dialogues = held_out(out / "toy", args.synthetic_per_seed, limit=args.dialogues)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        pair = DuoGenPair.from_pretrained(steps["stage2"]["outputs"]["model"]).eval()
    scores = evaluate_teacher_forced(pair, dialogues, 0)
    eval_seconds = time.perf_counter() - t0
    tp_diff = tp_max_loss_diff()
    result = {
        "stage1_minutes": round(steps["stage1"]["seconds"] / 60, 2),
        "stage2_minutes": round(steps["stage2"]["seconds"] / 60, 2),
        **scores,
        "tp2_vs_tp1_max_loss_diff": tp_diff,
        "stage1_last_loss": round(steps["stage1"]["outputs"]["last_loss"], 4),
        "stage2_last_loss": round(steps["stage2"]["outputs"]["last_loss"], 4),
        "train_samples": json.loads((out / "toy" / "dataset" / "manifest.json").read_text())["counters"],
        "eval_minutes": round(eval_seconds / 60, 2),
        "total_minutes": round((time.perf_counter() - start) / 60, 2),
        "settings": settings,
    }
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
