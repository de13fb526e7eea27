"""`duogen train stage1|stage2`: one process here; the same entry point is what a PyTorchJob's pods run."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_train(args: argparse.Namespace) -> int:
    """Train one stage from a config file (+ key=value overrides); a rerun resumes from its checkpoint."""
    from duogen.components.training.config import load_config
    from duogen.components.training.loop import Trainer

    cfg = load_config(args.config, [f"stage={args.stage}", *(args.set or [])])
    result = Trainer(cfg, progress=not args.quiet).train()
    summary = {
        "stage": cfg.stage,
        "status": result.status,
        "step": result.step,
        "model": result.model_dir,
        "mlflow_run_id": result.run_id,
        "seconds": round(result.seconds, 2),
        "last_loss": result.losses[max(result.losses)] if result.losses else None,
    }
    print(json.dumps(summary))
    sys.stdout.flush()
    return 0 if result.status == "finished" else 143  # 128 + SIGTERM: the pod was evicted, rerun to resume


def add_train(sub) -> None:
    train = sub.add_parser(
        "train", help="train Stage 1 (MLLM) or Stage 2 (connector + DiT)", description=cmd_train.__doc__
    )
    train.add_argument("stage", choices=["stage1", "stage2"], help="which stage")
    train.add_argument("--config", default=None, help="config file (.json or .toml); fields of TrainConfig")
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)
