"""`duogen pretrain mllm|dit`: pretrain the toy pair's parts on the data engine's toy dialogues (the toy
world's Qwen2.5-VL-Instruct, then its Cosmos). Each writes OUT/<part> with a CARD.json; a rerun with the same
OUT resumes from its checkpoints; `--nproc 2` (the default) trains data parallel on two processes."""

from __future__ import annotations

import argparse
import json
import os
import sys


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain one part; prints one JSON line (the result, with its learning curve)."""
    from duogen.components.training.pretrain_config import PretrainConfig
    from duogen.components.training.run import in_a_job

    fields = {
        f: getattr(args, f) for f in PretrainConfig.__dataclass_fields__ if getattr(args, f, None) is not None
    }
    if args.kind_weights:
        fields["kind_weights"] = json.loads(args.kind_weights)
    argv = sys.argv[1:]
    if in_a_job():  # relaunched below: the world is the processes torchrun started
        fields["nproc"] = int(os.environ["WORLD_SIZE"])
        argv = [*argv, "--nproc", str(fields["nproc"])]
    cfg = PretrainConfig.recipe(args.what, **fields)
    command = " ".join(["duogen", *argv])
    if cfg.nproc > 1 and not in_a_job():  # every process runs this same command under torchrun
        from duogen.platform.launch import torchrun

        proc = torchrun(["-m", "duogen.cli", *_without_nproc(argv)], cfg.nproc, capture=False)
        return proc.returncode

    from duogen.components.evaluation.pretraining import DiTJudge, judge_mllm
    from duogen.components.training.pretrain import pretrain

    if cfg.part == "mllm":
        judge = lambda pair, data: judge_mllm(pair, data, cfg.eval_count)  # noqa: E731
    else:
        judge = DiTJudge(cfg.eval_count, seed=cfg.seed)
    result = pretrain(cfg, judge, progress=not args.quiet, command=command)
    if result is None:  # a data-parallel rank other than 0
        return 0
    print(json.dumps(result))
    return 0 if result["status"] == "finished" else 3


def _without_nproc(argv: list[str]) -> list[str]:
    """torchrun reads every `--nproc...` in its command line as its own ambiguous option (argparse matches
    abbreviations past the script's name), so the relaunched command leaves it out."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        skip = arg == "--nproc"
        if not skip:
            out.append(arg)
    return out


def add_pretrain(sub) -> None:
    from duogen.components.training.pretrain_config import KINDS, PretrainConfig

    p = sub.add_parser("pretrain", help="pretrain a part of the toy pair (`pretrain mllm`, `pretrain dit`)",
                       description=__doc__)  # fmt: skip
    kinds = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    helps = {
        "mllm": "the toy MLLM from random weights, Stage 1's loss on the stream; curve: free-running T-Com "
        "per request form",
        "dit": "the toy DiT and its connector, Stage 2's loss on the stream with the preset's (shipped) MLLM "
        "as its frozen text encoder; curve: held-out edits and dialogues drawn",
    }
    for part in ("mllm", "dit"):
        d = PretrainConfig.recipe(part)
        g = kinds.add_parser(part, help=helps[part], description=helps[part] + ". " + cmd_pretrain.__doc__)
        g.add_argument("--preset", help=f"(default: {d.preset})")
        g.add_argument("--out", help=f"checkpoints and the result (default: {d.out})")
        g.add_argument("--steps", type=int, help=f"optimizer steps (default: {d.steps})")
        g.add_argument(
            "--batch-size", dest="batch_size", type=int, help=f"per process (default: {d.batch_size})"
        )
        g.add_argument("--lr", type=float, help=f"AdamW peak lr, cosine after warm-up (default: {d.lr})")
        g.add_argument("--warmup-steps", dest="warmup_steps", type=int, help=f"(default: {d.warmup_steps})")
        g.add_argument(
            "--min-lr-ratio",
            dest="min_lr_ratio",
            type=float,
            help=f"the cosine's floor as a fraction of lr (default: {d.min_lr_ratio})",
        )
        g.add_argument("--nproc", type=int, help=f"data-parallel processes (default: {d.nproc})")
        g.add_argument("--eval-every", dest="eval_every", type=int, help=f"(default: {d.eval_every})")
        g.add_argument(
            "--eval-count",
            dest="eval_count",
            type=int,
            help=f"held-out {'tasks per request form' if part == 'mllm' else 'edits'} judged at "
            f"every evaluation (default: {d.eval_count})",
        )
        g.add_argument(
            "--min-steps", dest="min_steps", type=int, help=f"shortest dialogue (default: {d.min_steps})"
        )
        g.add_argument(
            "--max-steps", dest="max_steps", type=int, help=f"longest dialogue (default: {d.max_steps})"
        )
        g.add_argument(
            "--kind-weights",
            dest="kind_weights",
            default=None,
            help=f"JSON {{kind: weight}} over {', '.join(KINDS)} (default: equal)",
        )
        g.add_argument("--seed", type=int, help=f"weights and data (default: {d.seed})")
        g.add_argument("--ckpt-every", dest="ckpt_every", type=int, help=f"(default: {d.ckpt_every})")
        g.add_argument("--tracking-uri", dest="tracking_uri", help="MLflow (default: sqlite under OUT/train)")
        if part == "dit":
            g.add_argument(
                "--edit-weight",
                dest="edit_weight",
                type=float,
                help=f"loss weight of edited positions (default: {d.edit_weight})",
            )
            g.add_argument(
                "--no-pos-embed",
                dest="pos_embed",
                action="store_false",
                default=None,
                help="RoPE only (no learnable absolute position embedding)",
            )
            g.add_argument(
                "--text-dropout",
                dest="text_dropout",
                type=float,
                help=f"to the CFG negative (default: {d.text_dropout})",
            )
            g.add_argument("--init", help="start from this saved DiT folder (diffusers layout), not random")
            g.add_argument("--ema", type=float, help="judge and export an EMA of the DiT with this decay")
        g.add_argument("--quiet", action="store_true", help="no progress bars")
        g.set_defaults(func=cmd_pretrain)
