"""`duogen doctor gpu`: one command that proves a GPU node trains and serves the pair, and measures it."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_gpu(args: argparse.Namespace) -> int:
    """Stage-2 DiT training (bf16, and FP8 where Transformer Engine imports), Stage-1 training of the 7B
    language stack at sequence 4096, one 768x768 picture at 35 steps with CFG, single-stream decode, and the
    serving engine's decode tokens/s and images/s at 1, 8 and 32 concurrent requests; prints one JSON line
    with tokens/s, MFU against this GPU's peak, seconds, and which goals are met (about 10 minutes on one
    H100). Exits 2 on a machine without CUDA."""
    from duogen.components.training.gpu_check import NoGPU, run_gpu_check

    log = (
        (lambda m: None)
        if args.quiet
        else (lambda m: print(f"duogen doctor gpu: {m}", file=sys.stderr, flush=True))
    )
    try:
        result = run_gpu_check(stage1_layers=args.stage1_layers, quick=args.quick, log=log)
    except NoGPU as err:
        print(f"duogen doctor gpu: {err}", file=sys.stderr)
        return 2
    if not args.no_serving:
        from duogen.components.serving.load_check import run_serving_check

        result["serving"] = run_serving_check(quick=args.quick, log=log)
    print(json.dumps(result))
    return 0


def add_doctor(sub) -> None:
    p = sub.add_parser(
        "doctor", help="check a machine: `doctor gpu` measures a GPU node", description=__doc__
    )
    kinds = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    g = kinds.add_parser(
        "gpu", help="train and draw on this GPU, print the figures", description=cmd_gpu.__doc__
    )
    g.add_argument(
        "--stage1-layers",
        type=int,
        default=None,
        help="decoder layers for Stage 1 (default: all 28, halved until they fit)",
    )
    g.add_argument("--quick", action="store_true", help="fewer timed steps (a smoke test, noisier figures)")
    g.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    g.add_argument("--no-serving", action="store_true", help="leave out the serving figure")
    g.set_defaults(func=cmd_gpu)
