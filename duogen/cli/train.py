"""`duogen train stage1|stage2 [--nproc N]`: one process, or N under local torchrun; the same entry point is
what a PyTorchJob's pods run (they join their job through the environment the operator sets)."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_train(args: argparse.Namespace) -> int:
    """Train one stage: its recipe (components/training/recipes/STAGE.toml), then a config file, then
    key=value overrides; a rerun resumes from its checkpoint.

    `--nproc N` runs N processes on this machine (torchrun on 127.0.0.1, `--set tp=K` for tensor
    parallelism); a process that is already part of a job (WORLD_SIZE > 1: a PyTorchJob pod, or a torchrun
    worker) joins it instead. Rank 0 prints one JSON summary line, with the loss of every step it ran."""
    from duogen.components.training.config import load_config
    from duogen.components.training.run import summary, train

    try:
        cfg = load_config(args.config, args.set or [], stage=args.stage)
    except ValueError as err:
        raise SystemExit(f"duogen train: error: {err}") from err
    try:
        result, is_main = train(cfg, args.nproc, progress=not args.quiet)
    except ValueError as err:
        raise SystemExit(f"duogen train: error: {err}") from err
    if is_main:
        print(json.dumps(summary(cfg, result)))
        sys.stdout.flush()
    return 0 if result.status == "finished" else 143  # 128 + SIGTERM: the pod was evicted, rerun to resume


def add_train(sub) -> None:
    train = sub.add_parser(
        "train", help="train Stage 1 (MLLM) or Stage 2 (connector + DiT)", description=cmd_train.__doc__
    )
    from duogen.components.training.stages import names

    train.add_argument("stage", choices=names(), help="which stage (components/training/stages)")
    train.add_argument(
        "--config",
        default=None,
        help="config file (.json or .toml, TrainConfig fields) over the stage's recipe",
    )
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)"
    )
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="processes on this machine, started with torchrun on 127.0.0.1 (default: 1); ignored when "
        "WORLD_SIZE is set (a PyTorchJob pod or torchrun worker joins its job)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)
