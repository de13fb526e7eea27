"""The one call that trains a stage: in this process, in N local processes under torchrun, or as this
process's share of a job it already belongs to (a torchrun worker, a PyTorchJob pod: WORLD_SIZE > 1).

N local processes run `duogen train` (the entry point a PyTorchJob's pods run) with the config written next
to the run, so the local job exercises the same distributed path a cluster does; with N = 2 on a 2-core
machine each data-parallel rank has a core and a step trains twice the examples in about the same time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from duogen.platform import storage
from duogen.platform.launch import torchrun

from .config import TrainConfig
from .loop import Trainer, TrainResult


def in_a_job() -> bool:
    """Started by torchrun or a PyTorchJob (its operator sets MASTER_ADDR, RANK, WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def summary(cfg: TrainConfig, result: TrainResult) -> dict:
    """The JSON line rank 0 prints: what a launcher reads back (the loss of every step it ran)."""
    steps = sorted(result.losses)
    return {
        "stage": cfg.stage,
        "status": result.status,
        "step": result.step,
        "model": result.model_dir,
        "mlflow_run_id": result.run_id,
        "seconds": round(result.seconds, 2),
        "last_loss": result.losses[steps[-1]] if steps else None,
        "first_step": steps[0] if steps else result.step,  # `losses` are those of steps first_step, ...
        "losses": [result.losses[s] for s in steps],
    }


def result_from_summary(s: dict) -> TrainResult:
    losses = dict(enumerate(s["losses"], start=s["first_step"]))
    return TrainResult(s["status"], s["step"], losses, s["model"], s["mlflow_run_id"], s["seconds"])


def train(cfg: TrainConfig, nproc: int = 1, progress: bool = True) -> tuple[TrainResult, bool]:
    """(result, is_main). `is_main` is False on the ranks of a job other than 0; rank 0 writes the result
    (`summary`) to `cfg.result` (a file or an object-store URI), which is how launchers read it back."""
    if nproc <= 1 or in_a_job():
        trainer = Trainer(cfg, progress=progress)
        try:
            result = trainer.train()
        finally:
            trainer.close()
        if trainer.is_main:
            storage.write_text(cfg.result, json.dumps(summary(cfg, result)))
        return result, trainer.is_main
    if nproc % cfg.tp:
        raise ValueError(f"tp={cfg.tp} must divide --nproc {nproc}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    config = out / "train_config.json"
    config.write_text(json.dumps(cfg.to_dict(), indent=2))
    argv = ["-m", "duogen.cli", "train", cfg.stage, "--config", str(config)]  # what a PyTorchJob's pods run
    argv += ["--quiet"] if not progress else []
    written = storage.read_text(cfg.result)
    proc = torchrun(argv, nproc, capture="stdout")  # rank 0's progress bar and log lines stream through
    text = storage.read_text(cfg.result)
    result = result_from_summary(json.loads(text)) if text and text != written else None
    # a preempted job exits non-zero (torchrun reports its workers' 143) with rank 0's result written
    if result is None or (proc.returncode != 0 and result.status == "finished"):
        tail = proc.stdout[-2000:]
        raise RuntimeError(f"{cfg.stage} on {nproc} processes failed (exit {proc.returncode}):\n{tail}")
    return result, True
