"""`duogen eval`: judge a saved pair and write a report (Markdown, HTML, plot; MLflow with --tracking-uri)."""

from __future__ import annotations

import argparse
import json


def cmd_eval_toyworld(args: argparse.Namespace) -> int:
    """The toy-world judge on the pair's own answers to held-out tasks: T-Com, I-Com, IT-Co, I-Co, I-Q."""
    from tqdm import tqdm

    from duogen.components.evaluation.report import log_to_mlflow, write_report
    from duogen.components.evaluation.toyworld_eval import ToyEvalConfig, evaluate_free_running
    from duogen.model.pair import DuoGenPair

    pair = DuoGenPair.from_pretrained(args.model)
    cfg = ToyEvalConfig(
        tasks=args.tasks, steps=args.steps, seed=args.seed, max_new_tokens=args.max_new_tokens
    )
    with tqdm(total=cfg.tasks, desc="judging", unit="task", disable=args.quiet) as bar:
        result = evaluate_free_running(pair, cfg, progress=lambda r: bar.update(1))
    page = write_report(result, args.out, f"Toy-world evaluation of {args.model}")
    line = {"report": str(page), **{k: v["mean"] for k, v in result["summary"].items()}}
    if args.tracking_uri:
        line["mlflow_run"] = log_to_mlflow(
            result, args.out, args.tracking_uri, args.experiment, "eval-toyworld"
        )
    print(json.dumps(line))
    return 0


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="judge a saved pair and write a report", description=__doc__)
    kinds = p.add_subparsers(dest="judge", required=True, metavar="JUDGE")
    toy = kinds.add_parser(
        "toyworld", help="free-running answers to held-out toy tasks", description=cmd_eval_toyworld.__doc__
    )
    toy.add_argument("--model", required=True, help="a saved pair directory")
    toy.add_argument("--out", default="outputs/eval", help="report folder (default: outputs/eval)")
    toy.add_argument("--tasks", type=int, default=20, help="held-out tasks (default: 20)")
    toy.add_argument("--steps", type=int, default=2, help="steps per task (default: 2)")
    toy.add_argument("--seed", type=int, default=0, help="task and sampling seed (default: 0)")
    toy.add_argument("--max-new-tokens", type=int, default=160, help="tokens per answer (default: 160)")
    toy.add_argument("--tracking-uri", default=None, help="log the report to this MLflow tracking URI")
    toy.add_argument("--experiment", default="duogen-eval", help="MLflow experiment (default: duogen-eval)")
    toy.add_argument("--quiet", action="store_true", help="no progress bar")
    toy.set_defaults(func=cmd_eval_toyworld)
