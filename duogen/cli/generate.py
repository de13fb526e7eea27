"""`duogen demo` and `duogen generate`: one interleaved answer written as an HTML page with its images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEMO_PROMPT = "Show me how to move the red circle to the right, one picture per step."


def _options(args: argparse.Namespace):
    from duogen.model.generate import GenerationOptions

    return GenerationOptions(
        max_new_tokens=args.max_new_tokens,
        max_images=args.images,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        stop=tuple(args.stop or ()),
        force_bov=getattr(args, "force_bov", False),
        force_bov_every=args.force_bov_every or None,
        image_size=(args.size, args.size),
        guidance_scale=args.guidance,
        num_inference_steps=args.steps,
        sampler=args.sampler,
        use_cache=not args.no_cache,
    )


def write_answer(pair, conversation, user_parts: list, options, out: Path, title: str, quiet: bool) -> dict:
    """Run the interleaved loop with a progress bar, write the page; return a summary (also as JSON)."""
    from tqdm import tqdm

    from duogen.model.generate import ImageDone, ImageStarted, TextDelta, generate_answer
    from duogen.platform.html_page import write_page

    with tqdm(total=options.max_new_tokens, desc="generating", unit="tok", disable=quiet) as bar:

        def progress(event) -> None:
            if isinstance(event, TextDelta | ImageStarted):
                bar.update(1)
            if isinstance(event, ImageStarted):
                bar.set_postfix_str(f"drawing image {event.index + 1}")
            elif isinstance(event, ImageDone):
                bar.set_postfix_str(f"{event.index + 1} image(s) drawn")

        answer = generate_answer(pair, conversation, options, on_event=progress)
    page = write_page([("user", user_parts), ("assistant", answer.parts)], out, title)
    usage = answer.finished.usage
    summary = {
        "page": str(page),
        "images": usage.images,
        "new_tokens": usage.new_tokens,
        "finish_reason": answer.finished.reason,
        "vae_encodes": usage.vae_encodes,
        "mllm_prefill_tokens": usage.mllm_prefill_tokens,
        "dit_seconds": round(usage.dit_seconds, 3),
    }
    page.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return summary


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the tiny pair (or load --model), run one interleaved generation, write an HTML page."""
    import torch

    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    torch.manual_seed(args.seed)
    out = Path(args.out)
    if args.model:
        pair = DuoGenPair.from_pretrained(args.model)
    else:
        pair = DuoGenPair.build(get_preset(args.preset), seed=args.seed)
        pair.save_pretrained(out / "model")
    conversation = [{"role": "user", "content": args.prompt}]
    summary = write_answer(
        pair,
        conversation,
        [args.prompt],
        _options(args),
        out,
        f"DuoGen demo ({pair.config.name})",
        args.quiet,
    )
    print(json.dumps(summary))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Answer a prompt (and optional images) with a saved pair; the page shows text and pictures in order."""
    from PIL import Image, UnidentifiedImageError

    from duogen.model.errors import DuoGenInputError
    from duogen.model.pair import DuoGenPair

    images = []
    for path in args.image or []:
        try:
            images.append(Image.open(path))
        except (OSError, UnidentifiedImageError) as err:
            raise DuoGenInputError(f"cannot read image {path}: {err}") from None
    pair = DuoGenPair.from_pretrained(args.model)
    content = [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": args.prompt}]
    summary = write_answer(
        pair,
        [{"role": "user", "content": content}],
        [*images, args.prompt],
        _options(args),
        Path(args.out),
        "DuoGen",
        args.quiet,
    )
    print(json.dumps(summary))
    return 0


def _sampling_args(p: argparse.ArgumentParser, images: int, tokens: int, force_every: int) -> None:
    p.add_argument("--images", type=int, default=images, help=f"most images to draw (default: {images})")
    p.add_argument(
        "--max-new-tokens", type=int, default=tokens, help=f"most tokens to generate (default: {tokens})"
    )
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: 0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0)")
    p.add_argument("--stop", action="append", help="end the answer at this text (repeatable)")
    p.add_argument(
        "--force-bov-every",
        type=int,
        default=force_every,
        help=f"force <BOV> after this many text tokens; 0 lets the model decide (default: {force_every})",
    )
    p.add_argument(
        "--size", type=int, default=64, help="side of drawn images when no input image sets it (default: 64)"
    )
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument(
        "--sampler", choices=["unipc", "euler"], default=None, help="sampler (default: the model's)"
    )
    p.add_argument(
        "--no-cache", action="store_true", help="disable the KV and latent caches (reference path)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_generate(sub) -> None:
    demo = sub.add_parser(
        "demo", help="one interleaved generation written as an HTML page", description=cmd_demo.__doc__
    )
    demo.add_argument("--out", default="outputs/demo", help="folder for page.html, images and the model")
    demo.add_argument("--model", default=None, help="a saved pair directory (default: build the preset)")
    demo.add_argument("--preset", default="tiny", help="preset to build when --model is not given")
    demo.add_argument("--prompt", default=DEMO_PROMPT, help="the user's request")
    _sampling_args(demo, images=2, tokens=48, force_every=12)
    demo.set_defaults(func=cmd_demo)

    gen = sub.add_parser(
        "generate",
        help="answer a prompt with a saved pair, as an HTML page",
        description=cmd_generate.__doc__,
    )
    gen.add_argument("--model", required=True, help="a saved pair directory")
    gen.add_argument("--prompt", required=True, help="the user's request")
    gen.add_argument("--image", action="append", help="an input image file (repeatable)")
    gen.add_argument("--out", default="outputs/answer.html", help="the page to write; images go beside it")
    gen.add_argument(
        "--force-bov", action="store_true", help="start the answer with a picture (text-to-image, editing)"
    )
    _sampling_args(gen, images=4, tokens=128, force_every=0)
    gen.set_defaults(func=cmd_generate)
