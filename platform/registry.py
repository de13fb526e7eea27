"""The MLflow model registry: register an exported pair with its eval metrics and lineage, promote a version
to an alias only when its gates pass, and resolve an alias to the storage URI KServe loads.

A version is an MLflow pyfunc model (`pyfunc_model.PairModel`: signature, input example, the pair's folder
as its artifact), so `mlflow.pyfunc.load_model("models:/NAME@ALIAS")` answers requests. Its eval metrics are
its run's metrics (the promotion gate reads them) and its lineage tags `lineage.<name>` (data manifests,
stage run ids, the pipeline run). Registration is idempotent per
`duogen.pipeline_run`: a retried or rerun pipeline finds the version it registered before. Every promotion
decision, passed or not, is kept: on the version (`promotion.<alias>`) and appended to the registered
model's `alias.<alias>.history` (JSON), so the alias's past is readable in the MLflow UI.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from duogen.model.errors import DuoGenInputError

from . import model_store
from .model_store import resolve_mlflow_uri, storage_uri

RUN_TAG = "duogen.pipeline_run"


def _client(tracking_uri: str | None):
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow, mlflow.MlflowClient()


@dataclass
class Registered:
    name: str
    version: str
    source: str
    run_id: str
    created: bool  # False when this pipeline run had registered it already


def register_pair(
    pair_dir: str | Path,
    name: str,
    metrics: dict[str, float],
    lineage: dict[str, str],
    pipeline_run: str,
    tracking_uri: str | None = None,
    experiment: str = "duogen-pipeline",
    artifact_location: str | None = None,
) -> Registered:
    """Log the pair as the run's pyfunc model (its metrics: the run's) and register it as a new version of
    `name`; `source` is where the version's files are (its download URI)."""
    mlflow, client = _client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="DuoGen pairs (MLLM + connector + DiT)")
    found = client.search_model_versions(f"name = '{name}' and tags.`{RUN_TAG}` = '{pipeline_run}'")
    if found:
        v = found[0]
        source = client.get_model_version_download_uri(name, str(v.version))
        return Registered(name, str(v.version), source, v.run_id, False)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment)
    run_tags = {RUN_TAG: pipeline_run, "pipeline_run_id": lineage.get("kfp_run_id", "")}
    with mlflow.start_run(run_name="register", tags=run_tags) as run:
        mlflow.log_metrics(metrics)
        mlflow.log_params({k: str(v)[:500] for k, v in lineage.items()})
        logged = _log_pyfunc(mlflow, Path(pair_dir))
    tags = {RUN_TAG: pipeline_run, **{f"lineage.{k}": str(v)[:5000] for k, v in lineage.items()}}
    v = mlflow.register_model(logged.model_uri, name, tags=tags)
    source = client.get_model_version_download_uri(name, str(v.version))
    return Registered(name, str(v.version), source, run.info.run_id, True)


def _log_pyfunc(mlflow, pair_dir: Path):
    """The pair as the active run's pyfunc model (it requires this DuoGen, installed where it loads)."""
    from importlib.metadata import version

    import pandas as pd

    from . import pyfunc_model

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=pyfunc_model.PairModel(),
        artifacts={"pair": str(pair_dir)},
        signature=pyfunc_model.signature(),
        input_example=(pd.DataFrame(pyfunc_model.INPUT_EXAMPLE), pyfunc_model.EXAMPLE_PARAMS),
        pip_requirements=[f"duogen=={version('duogen')}"],
    )


@dataclass
class Decision:
    name: str
    version: str
    alias: str
    promoted: bool
    reasons: list[str] = field(default_factory=list)  # every failed gate, in words
    previous: str | None = None  # the version the alias pointed at before

    def to_dict(self) -> dict:
        return asdict(self)


def check_gates(metrics: dict[str, float], gates: dict[str, float]) -> list[str]:
    """A gate `name: threshold` passes when the metric is at least the threshold; a missing metric fails."""
    reasons = []
    for metric, threshold in sorted(gates.items()):
        value = metrics.get(metric)
        if value is None:
            reasons.append(f"{metric} missing (gate {threshold})")
        elif value < threshold:
            reasons.append(f"{metric} {value:.4g} < {threshold:.4g}")
    return reasons


def version_metrics(client, version) -> dict[str, float]:
    """The metrics of the run that registered the version (empty when it has no run)."""
    if not version.run_id:
        return {}
    return dict(client.get_run(version.run_id).data.metrics)


def promote(
    name: str, version: str | int, alias: str, gates: dict[str, float], tracking_uri: str | None = None
) -> Decision:
    """Move `alias` to the version when every gate passes; record the decision either way."""
    _, client = _client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        v = client.get_model_version(name, str(version))
        model = client.get_registered_model(name)
    except MlflowException as err:
        raise DuoGenInputError(f"no model version {name}/{version}: {err.message}") from None
    previous = model.aliases.get(alias)
    previous = None if previous is None else str(previous)  # MLflow 3 gives version numbers as ints
    reasons = check_gates(version_metrics(client, v), gates)
    decision = Decision(name, str(version), alias, not reasons, reasons, previous)
    if decision.promoted and previous != str(version):
        client.set_registered_model_alias(name, alias, str(version))
    verdict = "promoted" if decision.promoted else "rejected: " + "; ".join(reasons)
    client.set_model_version_tag(name, str(version), f"promotion.{alias}", verdict)
    key = f"alias.{alias}.history"
    history = json.loads(model.tags.get(key, "[]"))
    history.append(
        {"version": str(version), "previous": previous, "verdict": verdict, "time": int(time.time())}
    )
    client.set_registered_model_tag(name, key, json.dumps(history[-50:]))
    return decision


def alias_version(uri: str, tracking_uri: str | None = None) -> str:
    """The version number `models:/NAME@ALIAS` points at now."""
    _client(tracking_uri)
    version = model_store.alias_version(uri)
    if version is None:
        raise DuoGenInputError(f"{uri!r} is not an alias URI (models:/NAME@ALIAS)")
    return version


def resolve(uri: str, tracking_uri: str | None = None, artifacts_destination: str | None = None) -> str:
    """`models:/NAME@ALIAS` or `models:/NAME/N` -> a storage URI of that version's files that KServe's
    storage initializer can fetch (`mlflow-artifacts:/...` translated under the server's
    `artifacts_destination`; default: $MLFLOW_ARTIFACTS_DESTINATION)."""
    if not uri.startswith("models:/"):
        raise DuoGenInputError(f"{uri!r} is not a registry URI (models:/NAME@ALIAS or models:/NAME/VERSION)")
    _client(tracking_uri)
    destination = artifacts_destination or os.environ.get("MLFLOW_ARTIFACTS_DESTINATION")
    return storage_uri(resolve_mlflow_uri(uri), destination)
