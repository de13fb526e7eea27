"""One call for a training stage on this machine: in this process, or in N local processes under torchrun.

N processes run `duogen train` (the entry point a PyTorchJob's pods run) with the config written next to
the run, so the local job exercises the same distributed path a cluster does; with N = 2 on a 2-core
machine each data-parallel rank has a core and a step trains twice the examples in about the same time.
"""

from __future__ import annotations

import json
from pathlib import Path

from duogen.platform.launch import torchrun, train_argv

from .config import TrainConfig
from .loop import Trainer, TrainResult


def train(cfg: TrainConfig, nproc: int = 1, progress: bool = True) -> TrainResult:
    if nproc <= 1:
        trainer = Trainer(cfg, progress=progress)
        try:
            return trainer.train()
        finally:
            trainer.close()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    config = out / "train_config.json"
    config.write_text(json.dumps(cfg.to_dict(), indent=2))
    argv = train_argv(cfg.stage, str(config), quiet=not progress)
    proc = torchrun(argv, nproc, capture="stdout")  # rank 0's progress bar and log lines stream through
    if proc.returncode != 0:
        raise RuntimeError(f"{cfg.stage} on {nproc} processes failed (exit {proc.returncode}; see above)")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{cfg.stage} on {nproc} processes printed no summary:\n{proc.stdout[-2000:]}")
    s = json.loads(lines[-1])
    losses = dict(enumerate(s["losses"], start=s["first_step"]))
    return TrainResult(s["status"], s["step"], losses, s["model"], s["mlflow_run_id"], s["seconds"])
