"""`duogen pretrain mllm|dit`: pretrain the toy pair's parts on the data engine's toy dialogues (the toy
world's Qwen2.5-VL-Instruct, then its Cosmos). Each writes OUT/<part> with a CARD.json; a rerun with the same
OUT resumes from its checkpoints; `--nproc 2` (the default) trains data parallel on two processes."""

from __future__ import annotations

import argparse
import dataclasses
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


TYPES = {"int": int, "float": float, "str": str, "str | None": str, "float | None": float}


def _add_flag(g: argparse.ArgumentParser, f, default) -> None:
    """`--name` for a PretrainConfig field: its type, its help and the recipe's default (None: not given)."""
    flag, help_ = "--" + f.name.replace("_", "-"), f.metadata["help"]
    shown = (
        ""
        if default is None
        else f" (default: {json.dumps(default) if isinstance(default, dict) else default})"
    )
    if f.type == "bool":  # on by default: the flag turns it off
        g.add_argument(
            "--no-" + flag[2:], dest=f.name, action="store_false", default=None, help="without " + help_
        )
    else:
        kind = json.loads if f.type.startswith("dict") else TYPES[f.type]
        g.add_argument(flag, dest=f.name, type=kind, default=None, help=help_ + shown)


def add_pretrain(sub) -> None:
    from duogen.components.training.pretrain_config import PretrainConfig

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
        for f in dataclasses.fields(PretrainConfig):
            if f.metadata.get("cli", True) and f.metadata.get("part", part) == part:
                _add_flag(g, f, getattr(d, f.name))
        g.add_argument("--quiet", action="store_true", help="no progress bars")
        g.set_defaults(func=cmd_pretrain)
