"""`duogen pipeline compile|run|submit|upload`: the KFP pipeline (`components/pipeline/pipeline.py`) as a
file for the Kubeflow Pipelines UI, on this machine, on a KFP API, or uploaded there as a pipeline version."""

from __future__ import annotations

import argparse
import json


def _set(items: list[str] | None) -> dict:
    """`--set key=value` pipeline arguments; values are JSON when they parse (numbers, lists, dicts)."""
    from duogen.platform.key_value import split_items

    out = {}
    try:
        pairs = split_items(items, "--set")
    except ValueError as err:
        raise SystemExit(f"duogen pipeline: error: {err}") from None
    for key, value in pairs:
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _compile(args: argparse.Namespace, path) -> str:
    """The pipeline compiled with the command's profile, parameter defaults, image and pull secret."""
    from duogen.components.pipeline.pipeline import duogen_pipeline
    from duogen.platform.kfp_runner import compile_pipeline

    return str(
        compile_pipeline(
            duogen_pipeline,
            path,
            profile=args.profile,
            defaults=_set(args.default),
            image=args.image,
            image_pull_secret=args.image_pull_secret,
        )
    )


def cmd_compile(args: argparse.Namespace) -> int:
    """Compile the pipeline to the YAML users upload in the Kubeflow Pipelines UI. `--profile cluster`
    gives its parameters defaults that run on a cluster with the chart installed (S3 root, the chart's
    MLflow, PyTorchJob training, KServe deploy); `--default KEY=VALUE` sets any other default."""
    print(_compile(args, args.output))
    return 0


def run_overrides(args: argparse.Namespace) -> dict:
    """The pipeline parameters a local run sets: the run name, `--set`s, and `--from-scratch` (the toy
    preset with random weights, `toy-scratch`, in place of the shipped pretrained MLLM and DiT; Stage 1 then
    trains longer and Stage 2 the whole DiT, not the connector alone, unless a `--set` says otherwise)."""
    from duogen.components.pipeline.pipeline import FROM_SCRATCH

    return {"run_name": args.run_name, **(FROM_SCRATCH if args.from_scratch else {}), **_set(args.set)}


def cmd_run(args: argparse.Namespace) -> int:
    """The whole pipeline on this machine on the embedded toy world (KFP's local subprocess runner): toy
    world, curation, Stage 1, Stage 2, evaluation, registration in a sqlite MLflow, gated promotion, then
    the promoted model served on 127.0.0.1 answers one request, saved as OUT/toy/deploy-champion/answer.html.
    A rerun with the same --out and run name redoes only unfinished steps. The toy pair's MLLM and DiT start
    from the pretrained ones shipped in the package; --from-scratch starts both from random weights."""
    from duogen.components.pipeline.pipeline import duogen_pipeline
    from duogen.platform.kfp_runner import local_arguments, run_local

    if not args.local and args.action != "main":
        raise SystemExit("duogen pipeline run: error: only --local runs here; use `submit` for a KFP API")
    arguments = local_arguments(args.out, args.size, run_overrides(args))
    summary = run_local(duogen_pipeline, arguments, args.out, args.artifacts)
    steps = summary["steps"]
    line = {
        "total_seconds": summary["total_seconds"],
        "step_seconds": {k: v["seconds"] for k, v in steps.items()},
    }
    for name, record in steps.items():
        if name.startswith("promote-"):
            line["promoted"] = record["outputs"]["promoted"]
            line["promotion"] = record["outputs"]
        if name.startswith("deploy-"):
            line["answer_page"] = record["outputs"]["page"]
        if name == "evaluate":
            line["metrics"] = record["outputs"]["metrics"]
        if name == "register":
            line["model_version"] = f"{record['outputs']['name']}/{record['outputs']['version']}"
    line["mlflow"] = arguments["tracking_uri"]
    print(json.dumps(line))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Start a run on a Kubeflow Pipelines API (kfp.Client); prints the run id."""
    from duogen.platform.kfp_runner import submit

    package = args.package or _compile(args, "duogen-pipeline.yaml")
    run_id = submit(
        package,
        args.host,
        _set(args.set),
        args.run_name,
        args.experiment,
        args.namespace,
        service_account=args.service_account,
    )
    print(json.dumps({"run_id": run_id, "host": args.host}))
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    """Upload the pipeline to a Kubeflow Pipelines API as a new version of `--name` (the pipeline is created
    the first time; with `--namespace`, in that profile namespace). An unchanged pipeline is not uploaded
    twice: versions are named by the compiled file's digest. The API must answer within `--wait` seconds;
    with `--skip-if-unreachable` a silent API is not an error: it says why and exits 0 (the chart's
    post-install Job, which must never fail a release on a cluster without KFP). Prints one JSON line."""
    import sys
    import tempfile

    from duogen.platform.kfp_runner import unreachable, upload

    why = unreachable(args.host, args.wait)
    if why:
        if not args.skip_if_unreachable:
            raise RuntimeError(why)
        print(f"duogen pipeline upload: skipped: {why}", file=sys.stderr)
        print(json.dumps({"uploaded": False, "skipped": why, "host": args.host, "name": args.name}))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        package = args.package or _compile(args, f"{tmp}/duogen-pipeline.yaml")
        result = upload(package, args.host, args.name, args.namespace)
    print(json.dumps({**result, "host": args.host, "name": args.name}))
    return 0


def _run_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument(
        "--out", default="outputs/pipeline", help="storage root and MLflow (default: outputs/pipeline)"
    )
    r.add_argument(
        "--size", choices=["default", "small"], default="default", help="small: every step, CI-sized"
    )
    r.add_argument("--run-name", default="toy", help="folder of this run under --out (default: toy)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="a pipeline parameter (repeatable)")
    r.add_argument(
        "--from-scratch",
        action="store_true",
        help="the toy MLLM and DiT from random weights, not the shipped pretrained ones (preset toy-scratch; "
        "Stage 1 then trains 5,000 steps and Stage 2 the whole DiT: stage2_dit_lr_ratio=1)",
    )
    r.add_argument(
        "--artifacts",
        default=None,
        help="MLflow artifact location of a new experiment (default: OUT/mlartifacts)",
    )
    r.set_defaults(func=cmd_run)


def _compile_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--profile",
        choices=["local", "cluster"],
        default="local",
        help="parameter defaults for where it runs (default: local; cluster: the chart's S3, MLflow, "
        "PyTorchJobs, KServe)",
    )
    c.add_argument(
        "--default", action="append", metavar="KEY=VALUE", help="a parameter's default in the UI (repeatable)"
    )
    c.add_argument("--image", default=None, help="every step's container image (default: the package's)")
    c.add_argument("--image-pull-secret", default=None, help="a Secret the steps' images are pulled with")


def add_pipeline(sub) -> None:
    p = sub.add_parser(
        "pipeline", help="the Kubeflow pipeline: compile, run locally, submit, upload", description=__doc__
    )
    kinds = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = kinds.add_parser(
        "compile", help="write the pipeline YAML for the KFP UI", description=cmd_compile.__doc__
    )
    c.add_argument("-o", "--output", default="duogen-pipeline.yaml", help="(default: duogen-pipeline.yaml)")
    _compile_arguments(c)
    c.set_defaults(func=cmd_compile)
    r = kinds.add_parser("run", help="run the whole pipeline", description=cmd_run.__doc__)
    r.add_argument("--local", action="store_true", help="on this machine (KFP's subprocess runner)")
    _run_arguments(r)
    main = sub.add_parser(
        "run", help="the main job: `duogen pipeline run --local`", description=cmd_run.__doc__
    )
    _run_arguments(main)
    main.set_defaults(action="main", local=True)
    s = kinds.add_parser("submit", help="start a run on a KFP API", description=cmd_submit.__doc__)
    s.add_argument("--host", required=True, help="the KFP API, e.g. http://ml-pipeline-ui.kubeflow")
    s.add_argument("--package", help="a compiled pipeline (default: compile one now)")
    s.add_argument("--run-name", default=None, help="the run's name in the UI")
    s.add_argument("--experiment", default="duogen", help="KFP experiment (default: duogen)")
    s.add_argument("--namespace", default=None, help="the user's profile namespace (multi-user Kubeflow)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="a pipeline parameter (repeatable)")
    s.add_argument(
        "--service-account", default=None, help="the run's pods' service account (default: the backend's)"
    )
    _compile_arguments(s)
    s.set_defaults(func=cmd_submit)
    u = kinds.add_parser(
        "upload", help="upload it to a KFP API as a new pipeline version", description=cmd_upload.__doc__
    )
    u.add_argument("--host", required=True, help="the KFP API, e.g. http://ml-pipeline.kubeflow:8888")
    u.add_argument("--name", default="duogen", help="the pipeline's name in the UI (default: duogen)")
    u.add_argument("--package", help="a compiled pipeline (default: compile one now)")
    u.add_argument(
        "--namespace", default=None, help="a profile namespace (multi-user Kubeflow; default: shared)"
    )
    u.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long the KFP API may take to answer at all (default: 30)",
    )
    u.add_argument(
        "--skip-if-unreachable",
        action="store_true",
        help="when it does not answer in time, say why and exit 0 instead of failing (no KFP here yet)",
    )
    _compile_arguments(u)
    u.set_defaults(func=cmd_upload)
