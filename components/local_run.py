"""The main job on one machine: toy world -> data engine -> Stage 1 -> Stage 2 -> a generated conversation.

The same stage libraries the Kubeflow pipeline will chain, called in order as plain functions on the
embedded toy world. Every step writes into its own folder under `out`, so a rerun resumes: finished shards
are skipped and training continues from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from duogen.components.curation.executor import plan, run_stage
from duogen.components.curation.sources import folder_inputs
from duogen.components.curation.synthetic import plan_instructions, synthetic_stage
from duogen.components.curation.video import video_stage
from duogen.components.curation.web import web_stage
from duogen.components.toyworld.pages import make_site
from duogen.components.toyworld.videos import make_videos
from duogen.components.training.config import TrainConfig
from duogen.components.training.run import train


@dataclass
class LocalRunConfig:
    out: str = "outputs/run"
    preset: str = "toy"
    pages: int = 60
    videos: int = 8
    # Stage 1 decides whether the answer reads right (the MLLM writes the steps and places <BOV>).
    # Free-running on 20 held-out tasks (`tests/benchmarks/main_job_answers.py`): 150 steps on ~330
    # dialogues wrote gibberish (T-Com 0.0, I-Com 0.73); 1,500 steps on ~720 write each step with its picture
    # (T-Com 0.49, I-Com 0.98 with a byte tokenizer; 0.65 and 1.0 with the toy words as whole tokens).
    synthetic_per_seed: int = 40  # exact toy-oracle dialogues per prompt-pool seed (cheap to make)
    stage1_steps: int = 1500
    stage2_steps: int = 300
    batch_size: int = 4
    stage1_lr: float = 3e-3
    stage2_lr: float = 1e-3
    text_dropout: float = 0.1  # stage 2, for CFG
    # Stage 2 mostly on the exact synthetic dialogues; web pictures are cleaned but noisier, and the video
    # transitions are 128x128 frames, another resolution than the 64x64 canvas the answers are drawn on.
    stage2_mix: dict[str, float] = field(
        default_factory=lambda: {"synthetic": 0.75, "web": 0.2, "video": 0.05}
    )
    processes: int = 2  # data-engine worker processes
    train_processes: int = 2  # data-parallel training ranks (torchrun on 127.0.0.1); 1 trains in-process
    seed: int = 0


def _curate(stage, inputs: list, out: Path, cfg: LocalRunConfig, per_shard: int = 16) -> dict:
    return run_stage(stage, plan(inputs, per_shard), out, processes=cfg.processes, progress=False).counters


def run_local(cfg: LocalRunConfig, log=print) -> dict:
    out = Path(cfg.out)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def done(name: str) -> None:
        timings[name] = round(time.perf_counter() - start - sum(timings.values()), 2)
        log(f"[duogen run] {name} done in {timings[name]} s")

    toy = out / "toyworld"
    if not (toy / "truth").exists():
        make_site(toy, cfg.pages, seed=cfg.seed, corrupt_pages=max(1, cfg.pages // 20))
        make_videos(toy, cfg.videos, seed=cfg.seed)
    done("toyworld")
    shards = out / "shards"
    counters = {
        "web": _curate(web_stage, folder_inputs(toy / "pages"), shards / "web", cfg),
        "video": _curate(
            video_stage, sorted(str(p) for p in (toy / "videos").glob("*.mp4")), shards / "video", cfg
        ),
        "synthetic": _curate(
            synthetic_stage,
            plan_instructions(per_seed=cfg.synthetic_per_seed, seed=cfg.seed),
            shards / "synthetic",
            cfg,
        ),
    }
    done("curation")
    common = {"batch_size": cfg.batch_size, "seed": cfg.seed, "log_every": 20, "ckpt_every": 50}
    stage1, _ = train(
        TrainConfig(
            stage="stage1",
            model=cfg.preset,
            shards=[str(shards / "web"), str(shards / "synthetic")],
            out=str(out / "stage1"),
            steps=cfg.stage1_steps,
            lr=cfg.stage1_lr,
            warmup_steps=5,
            **common,
        ),
        cfg.train_processes,
    )
    done("stage1")
    stage2, _ = train(
        TrainConfig(
            stage="stage2",
            model=stage1.model_dir,
            shards=[str(shards / k) for k in counters],
            out=str(out / "stage2"),
            steps=cfg.stage2_steps,
            lr=cfg.stage2_lr,
            warmup_steps=10,
            text_dropout=cfg.text_dropout,
            mix=cfg.stage2_mix,
            **common,
        ),
        cfg.train_processes,
    )
    done("stage2")
    page = answer_page(stage2.model_dir, out / "answer.html", cfg.seed)
    done("generate")
    summary = {
        "page": str(page),
        "model": stage2.model_dir,
        "samples": {
            k: v.get("samples", v.get("pages_kept", v.get("samples_kept", 0))) for k, v in counters.items()
        },
        "stage1_last_loss": stage1.losses[max(stage1.losses)] if stage1.losses else None,
        "stage2_last_loss": stage2.losses[max(stage2.losses)] if stage2.losses else None,
        "mlflow": {"stage1": stage1.run_id, "stage2": stage2.run_id},
        "seconds": timings,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def answer_page(model_dir: str, page: Path, seed: int) -> Path:
    """Ask the trained pair a held-out toy-world task, as the evaluation stage asks it (text, then the
    starting scene)."""
    from duogen.components.evaluation.toyworld_eval import held_out_tasks, task_request
    from duogen.model.generate import GenerationOptions
    from duogen.model.pair import DuoGenPair
    from duogen.platform.html_page import write_answer

    task = held_out_tasks(1, steps=2, seed=seed)[0]
    conversation = task_request(task)
    user_parts = [part.get("text", part.get("image")) for part in conversation[0]["content"]]
    pair = DuoGenPair.from_pretrained(model_dir)
    options = GenerationOptions(max_new_tokens=160, max_images=len(task.actions), seed=seed)
    write_answer(pair, conversation, user_parts, options, page, "DuoGen on the toy world", quiet=True)
    return page
