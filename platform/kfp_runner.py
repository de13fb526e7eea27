"""Running a KFP pipeline: compiled for the Kubeflow Pipelines UI, submitted to a KFP API, or run on this
machine through `kfp.local.SubprocessRunner` (each step a subprocess of this Python, as a pod would run it).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import steps, storage

SIZES: dict[str, dict[str, Any]] = {
    # the README's main job: every stage at the size that makes the answer read right (~15 min on 2 cores)
    "default": {},
    # the same pipeline at its smallest useful size (CI): every step runs, nothing is learned
    "small": {
        "pages": 12,
        "videos": 2,
        "shards": 1,
        "synthetic_per_seed": 4,
        "stage1_steps": 30,
        "stage2_steps": 10,
        "eval_tasks": 2,
        "gates": {},
    },
}


# Defaults a compiled pipeline starts with, per place it runs. `cluster`: the chart installed as release
# `duogen` in the pipeline's namespace (its MinIO bucket and MLflow), training as PyTorchJobs, serving on
# KServe.
PROFILES: dict[str, dict[str, Any]] = {
    "local": {},
    "cluster": {
        "root": "s3://duogen/pipeline",
        "tracking_uri": "http://duogen-mlflow:5000",
        "launcher": "pytorchjob",
        "deploy_target": "kserve",
    },
}
# The oldest Kubeflow Pipelines backend that runs the compiled pipeline: ParallelFor fan-in with
# dsl.Collected needs 2.14.0 (kubeflow/pipelines#11725); kfp-kubernetes 2.15 writes `optional` on every
# secret-as-env, which backends before 2.15.0 reject (#12216, #12495).
MIN_BACKEND = (2, 15, 0)


def compile_pipeline(
    pipeline: Callable,
    path: str | Path,
    profile: str = "local",
    defaults: dict[str, Any] | None = None,
    image: str | None = None,
    image_pull_secret: str | None = None,
) -> Path:
    """Write the pipeline's IR YAML with the profile's defaults (then `defaults`) for its parameters, every
    step's container image set to `image` and pulled with `image_pull_secret` (kfp-kubernetes' own field)."""
    import yaml
    from kfp import compiler

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parameters = {**PROFILES[profile], **(defaults or {})}
    compiler.Compiler().compile(pipeline, str(path), pipeline_parameters=parameters or None)
    if image or image_pull_secret:
        spec, *platform = yaml.safe_load_all(path.read_text())
        executors = spec["deploymentSpec"]["executors"]
        if image:
            for executor in executors.values():
                executor["container"]["image"] = image
        if image_pull_secret:
            if not platform:
                platform = [{"platforms": {"kubernetes": {"deploymentSpec": {"executors": {}}}}}]
            k8s = platform[0]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
            for name in executors:
                k8s.setdefault(name, {})["imagePullSecret"] = [
                    {"secretName": image_pull_secret,
                     "secretNameParameter": {"runtimeValue": {"constant": image_pull_secret}}}
                ]  # fmt: skip
        path.write_text(yaml.safe_dump_all([spec, *platform], sort_keys=False))
    return path


def check_backend(host: str, token: str | None = None) -> str | None:
    """The KFP backend's version (`tag_name` of /apis/v2beta1/healthz, kubeflow/pipelines 2.15.0
    backend/src/apiserver/main.go); a version older than MIN_BACKEND is an error that names it. None when
    the API does not report one (a dev build: "unknown")."""
    import re

    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = httpx.get(f"{host.rstrip('/')}/apis/v2beta1/healthz", headers=headers, timeout=30)
    reply.raise_for_status()
    tag = str(reply.json().get("tag_name", ""))
    found = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", tag)
    if not found:
        return None
    if tuple(int(x) for x in found.groups()) < MIN_BACKEND:
        need = ".".join(map(str, MIN_BACKEND))
        raise RuntimeError(
            f"the Kubeflow Pipelines backend at {host} is {tag}; this pipeline needs {need} or newer "
            "(ParallelFor fan-in with dsl.Collected, optional secrets as environment)"
        )
    return tag


def local_arguments(out: str | Path, size: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Arguments of a local run: storage and a sqlite MLflow under `out`, and the run name `toy` (its folder
    under `out`; on a cluster the KFP run id names a run), unless given."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    out = Path(out).resolve()
    args = {
        "root": str(out),
        "tracking_uri": f"sqlite:///{out / 'mlflow.db'}",
        "run_name": "toy",
        **SIZES[size],
    }
    return args | {k: v for k, v in overrides.items() if v is not None}


def _experiment(tracking_uri: str, name: str, artifacts: str) -> None:
    """Created here with its artifact location (a sqlite store would put artifacts in ./mlruns of every
    step's working folder)."""
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifacts)


def run_local(
    pipeline: Callable, arguments: dict[str, Any], out: str | Path, artifacts: str | None = None
) -> dict[str, Any]:
    """Run the pipeline here; a rerun with the same root and run name redoes only unfinished steps.
    `artifacts` is where a new sqlite-tracked experiment keeps MLflow artifacts (default OUT/mlartifacts;
    `s3://...` works). Returns every step's record (outputs and seconds of work) and the total seconds."""
    from kfp import local

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if arguments.get("tracking_uri", "").startswith("sqlite:"):
        artifacts = artifacts or (out / "mlartifacts").as_uri()
        _experiment(arguments["tracking_uri"], arguments.get("experiment", "duogen-pipeline"), artifacts)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out / "kfp"))
    start = time.perf_counter()
    with warnings.catch_warnings():
        # the steps' image is the project's own, which the subprocess runner takes for non-Python
        warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
        pipeline(**arguments)
    total = time.perf_counter() - start
    root, run = arguments.get("root", str(out)), arguments.get("run_name", "toy")
    summary = {"total_seconds": round(total, 2), "steps": step_records(root, run)}
    storage.write_text(storage.join(root, run, "run_summary.json"), json.dumps(summary, indent=2))
    return summary


def step_records(root: str, run: str) -> dict[str, Any]:
    """Every finished step's record under ROOT/RUN (name -> outputs and seconds)."""
    fs, inner = storage.filesystem(storage.join(root, run))
    out = {}
    for path in sorted(fs.glob(f"{inner.rstrip('/')}/*/{steps.RECORD}")):
        name = path.rstrip("/").rsplit("/", 2)[-2]
        out[name] = json.loads(fs.cat_file(path).decode())
    return out


def submit(
    package: str | Path,
    host: str,
    arguments: dict[str, Any],
    run_name: str | None = None,
    experiment: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    service_account: str | None = None,
) -> str:
    """Start a run of a compiled pipeline on a KFP API (`kfp.Client`) whose backend is new enough
    (`check_backend`), its pods under `service_account` (default: the backend's pipeline runner); returns
    the run id."""
    import kfp

    check_backend(host, token)
    client = kfp.Client(host=host, existing_token=token, namespace=namespace)
    run = client.create_run_from_pipeline_package(
        str(package),
        arguments=arguments,
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
        service_account=service_account,
    )
    return run.run_id


def version_tag(package: str | Path) -> str:
    """The name a compiled pipeline gets as a KFP pipeline version: the package's version and a digest of
    the file, so the same pipeline always has the same name and a changed one a new name."""
    import hashlib

    from duogen import __version__

    digest = hashlib.sha256(Path(package).read_bytes()).hexdigest()[:12]
    return f"v{__version__}-{digest}"


def unreachable(host: str, wait: float, token: str | None = None) -> str | None:
    """None as soon as the KFP API at `host` answers its health route (any HTTP reply), polled for up to
    `wait` seconds; else why it did not (the last connection error: a name that does not resolve on a
    cluster without KFP, a refused or silent port), in words that say what to do."""
    import httpx

    url = f"{host.rstrip('/')}/apis/v2beta1/healthz"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + wait
    last = "no answer"
    while (left := deadline - time.monotonic()) > 0:
        try:
            httpx.get(url, headers=headers, timeout=min(10.0, left))
            return None
        except httpx.TransportError as err:  # DNS, connect, read timeouts: nothing answered
            last = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        time.sleep(max(0.0, min(2.0, deadline - time.monotonic())))
    return (
        f"no Kubeflow Pipelines API answered at {host} within {wait:g} s ({last}); the pipeline was not "
        f"uploaded. Once KFP runs, upload it with `helm upgrade` (the chart's Job runs again) or "
        f"`duogen pipeline upload --host {host}`"
    )


def find_pipeline(client, name: str, namespace: str | None = None) -> str | None:
    """The id of the pipeline called `name` in `namespace` (None: the shared pipelines). kfp 2.17's
    `Client.get_pipeline_id` lists without a namespace, and the backend then lists only shared pipelines
    (kubeflow/pipelines 2.15.0 backend/src/apiserver/server/pipeline_server.go `listPipelines` filters by
    the request's namespace), so a multi-user upload never found its own pipeline and tried to create it
    again."""
    name_is = {"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]}  # 1: EQUALS
    found = client.list_pipelines(filter=json.dumps(name_is), namespace=namespace, page_size=2).pipelines
    if found and len(found) > 1:
        raise ValueError(f"more than one pipeline is called {name!r} in namespace {namespace or '(shared)'}")
    return found[0].pipeline_id if found else None


def upload(
    package: str | Path,
    host: str,
    name: str = "duogen",
    namespace: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Upload a compiled pipeline to a KFP API as a new version of pipeline `name` (created when missing)
    in `namespace` (multi-user Kubeflow's profile namespace; None: shared). Idempotent: when a version
    already carries this file's tag (its name, or its description for the version KFP makes with a new
    pipeline) nothing is uploaded. Returns ids and whether it uploaded."""
    import kfp

    check_backend(host, token)
    tag = version_tag(package)
    description = f"DuoGen pipeline {tag}"
    client = kfp.Client(host=host, existing_token=token, namespace=namespace or "kubeflow")
    pipeline_id = find_pipeline(client, name, namespace)
    if pipeline_id is None:
        created = client.upload_pipeline(
            str(package), pipeline_name=name, description=description, namespace=namespace
        )
        return {
            "pipeline_id": created.pipeline_id,
            "version": tag,
            "uploaded": True,
            "created_pipeline": True,
        }
    page_token = ""
    while True:
        page = client.list_pipeline_versions(pipeline_id, page_token=page_token, page_size=100)
        for v in page.pipeline_versions or []:
            if v.display_name == tag or (v.description or "").endswith(tag):
                return {
                    "pipeline_id": pipeline_id,
                    "version_id": v.pipeline_version_id,
                    "version": tag,
                    "uploaded": False,
                }
        page_token = page.next_page_token
        if not page_token:
            break
    v = client.upload_pipeline_version(
        str(package), pipeline_version_name=tag, pipeline_id=pipeline_id, description=description
    )
    return {"pipeline_id": pipeline_id, "version_id": v.pipeline_version_id, "version": tag, "uploaded": True}
