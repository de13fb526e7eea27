"""The `duogen` command line. Every command has `--help`; heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import json
import sys
import time


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def cmd_info(args: argparse.Namespace) -> int:
    """Parameter counts per part; the production preset is built on the meta device (no memory)."""
    import torch

    from duogen.model.dit import DuoGenDiT
    from duogen.model.mllm import hf_config
    from duogen.model.presets import get_preset
    from duogen.model.vae import make_codec

    cfg = get_preset(args.preset)
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        mllm = Qwen2_5_VLForConditionalGeneration(hf_config(cfg.mllm))
        dit = DuoGenDiT(cfg.dit)
        vae = make_codec(cfg.vae)
    vision = _count(mllm.model.visual)
    connector = _count(dit.crossattn_proj) if cfg.dit.use_crossattn_projection else 0
    parts = {
        "mllm_language": _count(mllm) - vision,
        "mllm_vision": vision,
        "connector": connector,
        "dit": _count(dit) - connector,
        "vae": _count(vae),
    }
    parts["total"] = sum(parts.values())
    if args.json:
        print(json.dumps({"preset": cfg.name, "parameters": parts}))
        return 0
    print(f"preset {cfg.name}")
    for name, n in parts.items():
        print(f"  {name:<15} {n:>15,d}  ({n / 1e9:.3f} B)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duogen",
        description="DuoGen: interleaved text-and-image generation (an MLLM that emits <BOV> + a video DiT).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="parameter counts per part of a preset", description=cmd_info.__doc__)
    info.add_argument(
        "--preset", default="tiny", help="preset name: tiny, toy, toy-scratch or duogen-7b-2b (default: tiny)"
    )
    info.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    info.set_defaults(func=cmd_info)

    from duogen.cli.generate import add_generate

    add_generate(sub)

    from duogen.cli.curate import add_curate
    from duogen.cli.doctor import add_doctor
    from duogen.cli.eval import add_eval
    from duogen.cli.pipeline import add_pipeline
    from duogen.cli.pretrain import add_pretrain
    from duogen.cli.registry import add_registry
    from duogen.cli.serve import add_serve
    from duogen.cli.train import add_train

    add_curate(sub)
    add_train(sub)
    add_pretrain(sub)
    add_serve(sub)
    add_eval(sub)
    add_pipeline(sub)
    add_registry(sub)
    add_doctor(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "force_bov_every", None) == 0:
        args.force_bov_every = None
    from duogen.model.errors import DuoGenInputError

    start = time.perf_counter()
    try:
        code = args.func(args)
    except DuoGenInputError as err:
        print(f"duogen {args.command}: error: {err}", file=sys.stderr)
        return 2
    if not getattr(args, "quiet", False) and not getattr(args, "json", False):
        print(f"done in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return code
