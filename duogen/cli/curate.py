"""`duogen curate ...`: the data engine's stages from the command line (local executor, resumable)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _inputs(paths: list[str], name: str) -> list[str]:
    """The source's input files (the curation registry's input kinds), folders searched recursively."""
    from duogen.components.curation.registry import source

    try:
        out = source(name).files(paths)
    except FileNotFoundError as err:
        raise SystemExit(f"duogen curate: error: {err}") from None
    if not out:
        raise SystemExit(
            f"duogen curate: error: no inputs ending in {', '.join(source(name).suffixes)} found"
        )
    return out


def _run(stage, inputs: list[str], args: argparse.Namespace, name: str) -> int:
    from duogen.components.curation.executor import plan, run_stage

    report = run_stage(
        stage,
        plan(inputs, args.per_shard),
        args.out,
        processes=args.processes,
        settings={"backend": args.backend, **getattr(args, "settings", {})},
        progress=not args.quiet,
        name=name,
    )
    print(json.dumps(report.to_dict()))
    return 0


def cmd_toyworld(args: argparse.Namespace) -> int:
    """Write the toy world's noisy how-to pages and videos with their ground truth."""
    from duogen.components.toyworld.pages import make_site
    from duogen.components.toyworld.videos import make_videos

    pages = make_site(args.out, args.pages, seed=args.seed, corrupt_pages=args.corrupt_pages)
    videos = make_videos(args.out, args.videos, seed=args.seed, corrupt_videos=args.corrupt_videos)
    print(json.dumps({"out": args.out, "pages": len(pages), "videos": len(videos)}))
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    """How-to pages (HTML folders, WARC files, CoMM JSON) -> dialogue shards."""
    from duogen.components.curation.web import web_stage

    args.settings = {"mllm_ad_check": args.mllm_ad_check}
    return _run(web_stage, _inputs(args.input, "web"), args, "web")


def cmd_alignment(args: argparse.Namespace) -> int:
    """Text-to-image / editing datasets (ShareGPT-4o-Image JSON, instruction-pair JSONL) -> shards."""
    from duogen.components.curation.alignment import alignment_stage

    return _run(alignment_stage, _inputs(args.input, "alignment"), args, "alignment")


def cmd_video(args: argparse.Namespace) -> int:
    """Videos -> scenes (PySceneDetect) -> fixed-length clips -> first/last frame + transition caption."""
    from duogen.components.curation.video import video_stage

    args.settings = {"clip_seconds": args.clip_seconds, "min_clip_seconds": args.min_clip_seconds}
    return _run(video_stage, _inputs(args.input, "video"), args, "video")


def cmd_synthetic(args: argparse.Namespace) -> int:
    """Prompt pool -> LLM expansion (near-duplicates dropped, eval split held out) -> interleaved answers."""
    from collections import Counter

    from duogen.components.curation.synthetic import plan_instructions, synthetic_stage

    planning: Counter = Counter()
    inputs = plan_instructions(
        args.pool,
        per_seed=args.per_seed,
        seed=args.seed,
        eval_fraction=args.eval_fraction,
        backend=args.backend,
        counters=planning,
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "_planning.json").write_text(json.dumps(dict(sorted(planning.items())), indent=2))
    args.settings = {"generator": args.generator}
    return _run(synthetic_stage, inputs, args, "synthetic")


def add_curate(sub) -> None:
    curate = sub.add_parser(
        "curate",
        help="data engine: turn pages, prompts and videos into training shards",
        description="Run one data-engine stage over many shards; a rerun resumes.",
    )
    stages = curate.add_subparsers(dest="stage", required=True, metavar="STAGE")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, help="output folder for shards, manifests and _report.json")
        p.add_argument("--per-shard", type=int, default=16, help="inputs per shard (default: 16)")
        p.add_argument("--processes", type=int, default=1, help="parallel worker processes (default: 1)")
        p.add_argument(
            "--backend",
            default="offline",
            help="LLM backend: 'offline' (deterministic rules) or an OpenAI-compatible base URL "
            "(model from DUOGEN_LLM_MODEL, key from DUOGEN_LLM_API_KEY)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    toy = stages.add_parser(
        "toyworld",
        help="generate the toy world's pages and videos with ground truth",
        description=cmd_toyworld.__doc__,
    )
    toy.add_argument("--out", required=True, help="output folder (pages/, img/, videos/, truth/)")
    toy.add_argument("--pages", type=int, default=200, help="how-to pages (default: 200)")
    toy.add_argument("--videos", type=int, default=20, help="videos (default: 20)")
    toy.add_argument("--corrupt-pages", type=int, default=0, help="extra corrupt pages to plant (default: 0)")
    toy.add_argument(
        "--corrupt-videos", type=int, default=0, help="extra corrupt videos to plant (default: 0)"
    )
    toy.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    toy.set_defaults(func=cmd_toyworld)

    web = stages.add_parser("web", help="how-to pages -> dialogues", description=cmd_web.__doc__)
    web.add_argument("input", nargs="+", help="page folders, .html, .warc(.gz) or CoMM .json files")
    web.add_argument(
        "--mllm-ad-check",
        action="store_true",
        help="also ask the MLLM backend whether each remaining image is an advert",
    )
    common(web)
    web.set_defaults(func=cmd_web)

    video = stages.add_parser(
        "video", help="videos -> two-image transition samples", description=cmd_video.__doc__
    )
    video.add_argument("input", nargs="+", help="video files or folders (.mp4, .mkv, .webm, .mov, .avi)")
    video.add_argument("--clip-seconds", type=float, default=5.0, help="clip length (default: 5)")
    video.add_argument(
        "--min-clip-seconds", type=float, default=1.0, help="shorter remainders are dropped (default: 1)"
    )
    common(video)
    video.set_defaults(func=cmd_video)

    syn = stages.add_parser(
        "synthetic", help="prompt pool -> synthetic interleaved dialogues", description=cmd_synthetic.__doc__
    )
    syn.add_argument("--pool", default=None, help="prompt-pool JSON (default: the packaged pool)")
    syn.add_argument(
        "--per-seed", type=int, default=5, help="instructions asked per seed question (default: 5)"
    )
    syn.add_argument("--eval-fraction", type=float, default=0.1, help="held-out share (default: 0.1)")
    syn.add_argument("--seed", type=int, default=0, help="expansion seed (default: 0)")
    syn.add_argument(
        "--generator",
        default="toyworld",
        help="answers from 'toyworld' (the oracle) or an OpenAI-compatible image-capable base URL",
    )
    common(syn)
    syn.set_defaults(func=cmd_synthetic)

    align = stages.add_parser(
        "alignment", help="text-to-image / editing datasets -> samples", description=cmd_alignment.__doc__
    )
    align.add_argument("input", nargs="+", help="dataset files or folders (.json lists, .jsonl pairs)")
    common(align)
    align.set_defaults(func=cmd_alignment)
