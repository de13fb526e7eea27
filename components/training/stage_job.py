"""A training stage as a pipeline runs it: the data from a dataset manifest, the result a model folder.

Each stage reads the curated sources its spec reads (Stage 1 the dialogue sources, Stage 2 all of them).
`launcher="local"` trains on this machine (in-process for one process, torchrun for more: the path a
PyTorchJob's pods run); a cluster launcher is passed in by the caller and receives the same config.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from duogen.platform import storage

from . import stages
from .config import TrainConfig
from .loop import TrainResult
from .run import train


def manifest_shards(manifest_uri: str, stage: str) -> list[str]:
    """The shard folders (paths or URIs) a stage reads."""
    text = storage.read_text(manifest_uri)
    if text is None:
        raise FileNotFoundError(f"dataset manifest {manifest_uri} does not exist")
    sources = json.loads(text)["sources"]
    names = [s for s in sources if stages.get(stage).reads(s)]
    return [u for s in names for u in sources[s]]


def train_stage(
    cfg: TrainConfig,
    nproc: int = 1,
    launcher: Callable[[TrainConfig], TrainResult] | None = None,
) -> dict[str, Any]:
    """Train to the end (a rerun resumes from the stage's checkpoints); a stage that did not finish is an
    error naming its status, so the pipeline step fails instead of registering half a model."""
    result = launcher(cfg) if launcher else train(cfg, nproc, progress=False)[0]
    if result.status != "finished" or not result.model_dir:
        raise RuntimeError(f"{cfg.stage} stopped at step {result.step} ({result.status}); rerun to resume")
    losses = result.losses
    return {
        "model": result.model_dir,
        "mlflow_run_id": result.run_id,
        "step": result.step,
        "last_loss": losses[max(losses)] if losses else None,
    }
