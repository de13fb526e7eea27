"""The MLflow model registry: register an exported pair with its eval metrics and lineage, promote a version
to an alias only when its gates pass, and resolve an alias to the storage URI KServe loads.

A version's metrics are tags `metric.<name>` (the promotion gate reads them) and its lineage tags
`lineage.<name>` (data manifests, stage run ids, the pipeline run). Registration is idempotent per
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

from .model_store import resolve_mlflow_uri

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
    """Log the pair's folder as the run's `model` artifacts and register them as a new version of `name`."""
    mlflow, client = _client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="DuoGen pairs (MLLM + connector + DiT)")
    found = client.search_model_versions(f"name = '{name}' and tags.`{RUN_TAG}` = '{pipeline_run}'")
    if found:
        v = found[0]
        return Registered(name, str(v.version), v.source, v.run_id, False)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment)
    run_tags = {RUN_TAG: pipeline_run, "pipeline_run_id": lineage.get("kfp_run_id", "")}
    with mlflow.start_run(run_name="register", tags=run_tags) as run:
        mlflow.log_metrics(metrics)
        mlflow.log_params({k: str(v)[:500] for k, v in lineage.items()})
        mlflow.log_artifacts(str(pair_dir), artifact_path="model")
        source = f"{run.info.artifact_uri}/model"
    tags = {RUN_TAG: pipeline_run, **{f"metric.{k}": str(v) for k, v in metrics.items()}}
    tags |= {f"lineage.{k}": str(v)[:5000] for k, v in lineage.items()}
    v = client.create_model_version(name, source, run_id=run.info.run_id, tags=tags)
    return Registered(name, str(v.version), source, run.info.run_id, True)


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


def version_metrics(tags: dict[str, str]) -> dict[str, float]:
    out = {}
    for key, value in tags.items():
        if key.startswith("metric."):
            try:
                out[key.removeprefix("metric.")] = float(value)
            except ValueError:
                continue
    return out


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
    reasons = check_gates(version_metrics(v.tags), gates)
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


def resolve(uri: str, tracking_uri: str | None = None) -> str:
    """`models:/NAME@ALIAS` or `models:/NAME/N` -> the storage URI of that version's files."""
    if not uri.startswith("models:/"):
        raise DuoGenInputError(f"{uri!r} is not a registry URI (models:/NAME@ALIAS or models:/NAME/VERSION)")
    _client(tracking_uri)
    return resolve_mlflow_uri(uri)
