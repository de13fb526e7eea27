"""The `duogen` command line. Every command has `--help`; heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEMO_PROMPT = "Show me how to move the red circle to the right, one picture per step."


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def cmd_info(args: argparse.Namespace) -> int:
    """Parameter counts per part; the production preset is built on the meta device (no memory)."""
    import torch
    from duogen.model.dit import DuoGenDiT
    from duogen.model.mllm import hf_config
    from duogen.model.presets import get_preset

    cfg = get_preset(args.preset)
    from diffusers import AutoencoderKLWan
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        mllm = Qwen2_5_VLForConditionalGeneration(hf_config(cfg.mllm))
        dit = DuoGenDiT(cfg.dit)
        vae = AutoencoderKLWan(**cfg.vae.diffusers_kwargs())
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


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the tiny pair (or load --model), run one interleaved generation, write an HTML page."""
    import torch
    from duogen.model.generate import (
        Finished,
        GenerationOptions,
        ImageDone,
        ImageStarted,
        TextDelta,
        generate,
    )
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset
    from duogen.platform.html_page import write_page
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    out = Path(args.out)
    if args.model:
        pair = DuoGenPair.from_pretrained(args.model)
    else:
        pair = DuoGenPair.build(get_preset(args.preset), seed=args.seed)
        pair.save_pretrained(out / "model")
    options = GenerationOptions(
        max_new_tokens=args.max_new_tokens,
        max_images=args.images,
        force_bov_every=args.force_bov_every,
        seed=args.seed,
        image_size=(args.size, args.size),
    )
    parts: list = []
    finished = None
    with tqdm(total=args.max_new_tokens, desc="generating", unit="tok", disable=args.quiet) as bar:
        for event in generate(pair, [{"role": "user", "content": args.prompt}], options):
            if isinstance(event, TextDelta):
                if parts and isinstance(parts[-1], str):
                    parts[-1] += event.text
                else:
                    parts.append(event.text)
                bar.update(1)
            elif isinstance(event, ImageStarted):
                bar.set_postfix_str(f"drawing image {event.index + 1}")
                bar.update(1)
            elif isinstance(event, ImageDone):
                parts.append(event.image)
                bar.set_postfix_str(f"{event.index + 1} image(s) drawn")
            elif isinstance(event, Finished):
                finished = event
    page = write_page(
        [("user", [args.prompt]), ("assistant", parts)], out, f"DuoGen demo ({pair.config.name})"
    )
    summary = {"page": str(page), "images": finished.images, "new_tokens": finished.new_tokens,
               "finish_reason": finished.reason}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duogen",
        description="DuoGen: interleaved text-and-image generation (an MLLM that emits <BOV> + a video DiT).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="parameter counts per part of a preset", description=cmd_info.__doc__)
    info.add_argument("--preset", default="tiny", help="preset name: tiny or duogen-7b-2b (default: tiny)")
    info.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    info.set_defaults(func=cmd_info)

    demo = sub.add_parser("demo", help="one interleaved generation written as an HTML page",
                          description=cmd_demo.__doc__)  # fmt: skip
    demo.add_argument("--out", default="outputs/demo", help="folder for page.html, images and the model")
    demo.add_argument("--model", default=None, help="a saved pair directory (default: build the preset)")
    demo.add_argument("--preset", default="tiny", help="preset to build when --model is not given")
    demo.add_argument("--prompt", default=DEMO_PROMPT, help="the user's request")
    demo.add_argument("--images", type=int, default=2, help="most images to draw (default: 2)")
    demo.add_argument("--max-new-tokens", type=int, default=48, help="most tokens to generate (default: 48)")
    demo.add_argument("--force-bov-every", type=int, default=12,
                      help="force <BOV> after this many text tokens, so an untrained model still draws "
                           "(default: 12; 0 lets the model decide)")  # fmt: skip
    demo.add_argument("--size", type=int, default=64, help="side of drawn images in pixels (default: 64)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (weights and sampling)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    from duogen.platform.cli_curate import add_curate

    add_curate(sub)
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


if __name__ == "__main__":
    sys.exit(main())
