"""`duogen eval`: judge a saved pair and write a report (Markdown, HTML, plot; MLflow with --tracking-uri)."""

from __future__ import annotations

import argparse
import json

from duogen.model.errors import DuoGenInputError


def _report(result: dict, args: argparse.Namespace, title: str, run_name: str, **extra) -> int:
    """Every judge ends the same way: the report folder, MLflow when asked, one JSON line of the means."""
    from duogen.components.evaluation.report import log_to_mlflow, write_report

    page = write_report(result, args.out, title)
    line = {"report": str(page), **extra, **{k: v["mean"] for k, v in result["summary"].items()}}
    if args.tracking_uri:
        line["mlflow_run"] = log_to_mlflow(result, args.out, args.tracking_uri, args.experiment, run_name)
    print(json.dumps(line))
    return 0


def cmd_eval_toyworld(args: argparse.Namespace) -> int:
    """The toy-world judge on the pair's own answers to held-out tasks: T-Com, I-Com, IT-Co, I-Co, I-Q."""
    from tqdm import tqdm

    from duogen.components.evaluation.toyworld_eval import ToyEvalConfig, evaluate_free_running
    from duogen.model.pair import DuoGenPair

    pair = DuoGenPair.from_pretrained(args.model)
    cfg = ToyEvalConfig(
        tasks=args.tasks, steps=args.steps, seed=args.seed, max_new_tokens=args.max_new_tokens
    )
    with tqdm(total=cfg.tasks, desc="judging", unit="task", disable=args.quiet) as bar:
        result = evaluate_free_running(pair, cfg, progress=lambda r: bar.update(1))
    return _report(result, args, f"Toy-world evaluation of {args.model}", "eval-toyworld")


def cmd_eval_t2i(args: argparse.Namespace) -> int:
    """GenEval-style text-to-image on the toy world: per-category accuracy read back by the toy checker."""
    from tqdm import tqdm

    from duogen.components.evaluation.t2i import evaluate_t2i, make_prompts
    from duogen.model.pair import DuoGenPair

    pair = DuoGenPair.from_pretrained(args.model)
    items = make_prompts(args.per_category, seed=args.seed)
    with tqdm(total=len(items), desc="drawing", unit="prompt", disable=args.quiet) as bar:
        result = evaluate_t2i(
            pair, items, size=(args.size, args.size), seed=args.seed, progress=lambda r: bar.update(1)
        )
    return _report(result, args, f"Text-to-image (GenEval-style) evaluation of {args.model}", "eval-t2i")


def cmd_eval_vlm(args: argparse.Namespace) -> int:
    """A VLM judge (any OpenAI-compatible endpoint) scores answers with a benchmark's rubric; a rerun
    resumes from the records already written."""
    import os

    from tqdm import tqdm

    from duogen.components.evaluation.vlm_judge import judge_items, make_judge, read_comm, read_items

    data = args.data
    if args.model:
        data = _answer_benchmark(args)
    items = list(read_comm(data) if args.benchmark == "comm" else read_items(data))
    api_key = os.environ.get("DUOGEN_JUDGE_API_KEY")
    with (
        make_judge(args.base_url, args.judge_model, api_key, timeout=args.timeout) as backend,
        tqdm(total=len(items), desc="judging", unit="item", disable=args.quiet) as bar,
    ):
        result = judge_items(
            items, backend, args.benchmark, args.out, args.seed, args.attempts, lambda r: bar.update(1)
        )
    title = f"{args.benchmark} judged by {args.judge_model}"
    return _report(
        result, args, title, f"eval-{args.benchmark}", judged=len(result["records"]), items=len(items)
    )


def _answer_benchmark(args: argparse.Namespace) -> str:
    """--model: the pair answers the benchmark's instances first (resumable), the judge scores those."""
    from tqdm import tqdm

    from duogen.components.evaluation.interleavedbench import answer_instances, pair_answerer, read_instances
    from duogen.model.generate import GenerationOptions
    from duogen.model.pair import DuoGenPair

    if args.benchmark != "interleavedbench":
        raise DuoGenInputError(
            "--model answers InterleavedBench instances; other benchmarks bring their answers"
        )
    instances = read_instances(args.data, args.images)
    lacking = sum(bool(i.missing) for i in instances)
    if lacking:
        print(f"{lacking} of {len(instances)} instances name images that are missing", flush=True)
    pair = DuoGenPair.from_pretrained(args.model)
    options = GenerationOptions(
        max_new_tokens=args.max_new_tokens, max_images=args.max_images, seed=args.seed
    )
    with tqdm(total=len(instances), desc="answering", unit="item", disable=args.quiet) as bar:
        items = answer_instances(pair_answerer(pair, options), instances, f"{args.out}/answers", bar.update)
    return str(items)


def cmd_eval_elo(args: argparse.Namespace) -> int:
    """Pairwise preference: two reports' answers become comparisons; --serve opens the voting page on
    127.0.0.1; otherwise prints Elo and Bradley-Terry ratings (95% bootstrap intervals) from the votes."""
    from duogen.components.evaluation.preference import VoteStore, pairs_from_reports, ratings

    store = VoteStore(args.db)
    if args.a or args.b:
        if not (args.a and args.b):
            raise DuoGenInputError("--a and --b go together: two report folders to compare")
        store.add_pairs(pairs_from_reports(args.a, args.b, args.name_a, args.name_b))
    if args.serve:
        import uvicorn

        from duogen.components.evaluation.preference_app import preference_app

        print(f"voting page at http://{args.host}:{args.port}/", flush=True)
        uvicorn.run(preference_app(store), host=args.host, port=args.port, log_level="warning")
        return 0
    print(json.dumps(ratings(store.votes())))
    return 0


def _report_args(p: argparse.ArgumentParser, out: str = "outputs/eval") -> None:
    p.add_argument("--out", default=out, help=f"report folder (default: {out})")
    p.add_argument("--seed", type=int, default=0, help="prompt and sampling seed (default: 0)")
    p.add_argument("--tracking-uri", default=None, help="log the report to this MLflow tracking URI")
    p.add_argument("--experiment", default="duogen-eval", help="MLflow experiment (default: duogen-eval)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a saved pair directory")
    _report_args(p)


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="judge a saved pair and write a report", description=__doc__)
    kinds = p.add_subparsers(dest="judge", required=True, metavar="JUDGE")
    toy = kinds.add_parser(
        "toyworld", help="free-running answers to held-out toy tasks", description=cmd_eval_toyworld.__doc__
    )
    _common(toy)
    toy.add_argument("--tasks", type=int, default=20, help="held-out tasks (default: 20)")
    toy.add_argument("--steps", type=int, default=2, help="steps per task (default: 2)")
    toy.add_argument("--max-new-tokens", type=int, default=160, help="tokens per answer (default: 160)")
    toy.set_defaults(func=cmd_eval_toyworld)
    t2i = kinds.add_parser(
        "t2i", help="GenEval-style text-to-image on the toy world", description=cmd_eval_t2i.__doc__
    )
    _common(t2i)
    t2i.add_argument("--per-category", type=int, default=10, help="prompts per category (default: 10)")
    t2i.add_argument("--size", type=int, default=64, help="side of the drawn pictures (default: 64)")
    t2i.set_defaults(func=cmd_eval_t2i)
    vlm = kinds.add_parser(
        "vlm", help="a VLM judge scores answers with a rubric", description=cmd_eval_vlm.__doc__
    )
    vlm.add_argument(
        "--benchmark", choices=["comm", "interleavedbench", "howto"], required=True, help="rubric"
    )
    vlm.add_argument(
        "--data",
        required=True,
        help="CoMM results folder (comm), an items.jsonl file (the other rubrics), or with --model "
        "InterleavedBench's interleaved_bench.json",
    )
    vlm.add_argument(
        "--model", help="a saved pair that first answers the InterleavedBench instances in --data"
    )
    vlm.add_argument("--images", help="InterleavedBench's unzipped images folder (default: beside --data)")
    vlm.add_argument(
        "--max-new-tokens", type=int, default=256, help="tokens per answer with --model (default: 256)"
    )
    vlm.add_argument(
        "--max-images", type=int, default=4, help="pictures per answer with --model (default: 4)"
    )
    vlm.add_argument("--base-url", required=True, help="the judge's OpenAI-compatible base URL (.../v1)")
    vlm.add_argument(
        "--judge-model", required=True, help="the judge's model name (key: DUOGEN_JUDGE_API_KEY)"
    )
    _report_args(vlm, out="outputs/eval-vlm")
    vlm.add_argument("--attempts", type=int, default=3, help="asks per item for a valid reply (default: 3)")
    vlm.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP call (default: 120)")
    vlm.set_defaults(func=cmd_eval_vlm)
    elo = kinds.add_parser(
        "elo", help="pairwise preference votes and ratings", description=cmd_eval_elo.__doc__
    )
    elo.add_argument("--db", default="outputs/votes.sqlite", help="the votes (default: outputs/votes.sqlite)")
    elo.add_argument("--a", help="report folder of model A (from duogen eval toyworld)")
    elo.add_argument("--b", help="report folder of model B")
    elo.add_argument("--name-a", default="A", help="model A's name (default: A)")
    elo.add_argument("--name-b", default="B", help="model B's name (default: B)")
    elo.add_argument("--serve", action="store_true", help="serve the voting page")
    elo.add_argument("--host", default="127.0.0.1", help="address for --serve (default: 127.0.0.1)")
    elo.add_argument("--port", type=int, default=8090, help="port for --serve (default: 8090)")
    elo.set_defaults(func=cmd_eval_elo)
