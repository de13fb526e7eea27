"""MLflow tracking for a training stage: one run with params, the full config, metrics and artifacts.

On a cluster the tracking URI points at the chart's MLflow server; on one machine it defaults to a sqlite
file beside the run's outputs, which the MLflow UI (`mlflow ui --backend-store-uri sqlite:///...`) reads.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any


class Tracker:
    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        tags: dict[str, str] | None = None,
        artifact_location: str | None = None,
    ):
        """`artifact_location` applies when the experiment is created here (a sqlite store would otherwise put
        artifacts in ./mlruns of whatever folder the process started in)."""
        os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=artifact_location)
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_name=run_name, tags=tags or {})
        self.run_id = self.run.info.run_id

    def params(self, params: dict[str, Any]) -> None:
        flat = {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in params.items()}
        self.mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})

    def config(self, config: dict[str, Any], name: str = "config.json") -> None:
        self.mlflow.log_dict(config, name)

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        """Names are made MLflow-safe (counter keys such as `corrupt:empty page` hold colons)."""
        self.mlflow.log_metrics({re.sub(r"[^\w\-. /]", "_", k): v for k, v in metrics.items()}, step=step)

    def tag(self, key: str, value: str) -> None:
        self.mlflow.set_tag(key, value)

    def artifacts(self, folder: str | Path, path: str) -> None:
        self.mlflow.log_artifacts(str(folder), artifact_path=path)

    def close(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


def default_uri(out: str | Path) -> str:
    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


def default_artifacts(out: str | Path) -> str:
    return (Path(out).resolve() / "mlartifacts").as_uri()


def log_step(
    tracking_uri: str,
    experiment: str,
    name: str,
    kfp_run_id: str,
    metrics: dict[str, float] | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    artifacts: str | Path | None = None,
) -> str | None:
    """One pipeline step's MLflow run (the steps that do not train or judge: curation, promotion, deploy),
    tagged with the KFP run id like every other step's run. Nothing is logged without a tracking URI."""
    if not tracking_uri:
        return None
    tracker = Tracker(tracking_uri, experiment, name, {"pipeline_run_id": kfp_run_id, **(tags or {})})
    try:
        if params:
            tracker.params(params)
        if metrics:
            tracker.metrics(metrics, step=0)
        if artifacts:
            tracker.artifacts(artifacts, name)
    finally:
        tracker.close()
    return tracker.run_id
