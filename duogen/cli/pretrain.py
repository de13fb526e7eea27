"""`duogen pretrain dit`: pretrain the toy DiT on toy-world transitions (the toy world's Cosmos)."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_pretrain_dit(args: argparse.Namespace) -> int:
    """Pretrain the preset's DiT (with its connector) on fresh single-step toy-world edits, their sentences
    encoded by the untrained MLLM at --seed, with Stage 2's loop (checkpoints: a rerun resumes; progress;
    MLflow) and a learning curve of instruction following on held-out edits every --eval-every steps. Writes
    OUT/dit (diffusers layout) with CARD.json; prints one JSON line."""
    from duogen.components.evaluation.dit_edits import judge_edits
    from duogen.components.training.pretrain_config import PretrainConfig
    from duogen.components.training.pretrain_dit import pretrain_dit

    fields = {f: getattr(args, f) for f in PretrainConfig.__dataclass_fields__ if hasattr(args, f)}
    cfg = PretrainConfig(**fields)

    def judge(pair, edits):  # with the preset's CFG, and without (its guidance is a choice the curve informs)
        plain = judge_edits(pair, edits, guidance_scale=0.0, seed=cfg.seed)
        return {**judge_edits(pair, edits, seed=cfg.seed), "no_cfg": plain}

    result = pretrain_dit(cfg, judge, progress=not args.quiet, command=" ".join(["duogen", *sys.argv[1:]]))
    print(json.dumps(result))
    return 0 if result["status"] == "finished" else 3


def add_pretrain(sub) -> None:
    from duogen.components.training.pretrain_config import PretrainConfig

    d = PretrainConfig()
    p = sub.add_parser("pretrain", help="pretrain a part of the pair (`pretrain dit`)", description=__doc__)
    kinds = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    g = kinds.add_parser(
        "dit", help="pretrain the toy DiT on toy-world transitions", description=cmd_pretrain_dit.__doc__
    )
    g.add_argument("--preset", default=d.preset, help=f"(default: {d.preset})")
    g.add_argument("--out", default=d.out, help=f"checkpoints and the result (default: {d.out})")
    g.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default: {d.steps})")
    g.add_argument(
        "--batch-size", dest="batch_size", type=int, default=d.batch_size, help=f"(default: {d.batch_size})"
    )
    g.add_argument(
        "--lr", type=float, default=d.lr, help=f"AdamW peak lr, cosine after warm-up (default: {d.lr})"
    )
    g.add_argument(
        "--warmup-steps",
        dest="warmup_steps",
        type=int,
        default=d.warmup_steps,
        help=f"(default: {d.warmup_steps})",
    )
    g.add_argument(
        "--eval-every", dest="eval_every", type=int, default=d.eval_every, help=f"(default: {d.eval_every})"
    )
    g.add_argument(
        "--eval-edits",
        dest="eval_edits",
        type=int,
        default=d.eval_edits,
        help=f"held-out edits judged at every evaluation (default: {d.eval_edits})",
    )
    g.add_argument(
        "--edit-weight",
        dest="edit_weight",
        type=float,
        default=d.edit_weight,
        help=f"loss weight of edited positions (default: {d.edit_weight})",
    )
    g.add_argument(
        "--no-pos-embed",
        dest="pos_embed",
        action="store_false",
        help="RoPE only (no learnable absolute position embedding)",
    )
    g.add_argument(
        "--text-dropout",
        dest="text_dropout",
        type=float,
        default=d.text_dropout,
        help=f"(default: {d.text_dropout})",
    )
    g.add_argument(
        "--seed", type=int, default=d.seed, help=f"weights, text encoder and data (default: {d.seed})"
    )
    g.add_argument(
        "--ckpt-every", dest="ckpt_every", type=int, default=d.ckpt_every, help=f"(default: {d.ckpt_every})"
    )
    g.add_argument(
        "--tracking-uri", dest="tracking_uri", default=None, help="MLflow (default: sqlite under OUT/train)"
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(func=cmd_pretrain_dit)
