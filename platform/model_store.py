"""Where a saved pair comes from: a local folder, KServe's `/mnt/models`, `s3://...`, or an MLflow model URI.

KServe's storage initializer copies `storageUri` to `/mnt/models` before the predictor starts, but it cannot
resolve an MLflow alias (`models:/duogen@champion`), so the predictor resolves those itself: MLflow
resolves the alias (or version) to the version's artifact location and downloads it. `runs:/<id>/model`
works the same way. Object-store prefixes are copied once into a local cache folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from duogen.model.errors import DuoGenInputError

from . import storage

KSERVE_MODEL_DIR = "/mnt/models"
MLFLOW_SCHEMES = ("models:/", "runs:/")


def default_cache() -> Path:
    return Path(os.environ.get("DUOGEN_MODEL_CACHE", Path.home() / ".cache" / "duogen" / "models"))


def local_pair_dir(uri: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """A local folder holding the pair that `uri` names (downloaded into `cache` when it is remote)."""
    text = str(uri)
    cache = Path(cache) if cache is not None else default_cache()
    if text.startswith(MLFLOW_SCHEMES):
        return _from_mlflow(text, cache)
    if storage.is_url(text):
        return _from_object_store(text, cache)
    path = Path(text.removeprefix("file://"))
    if not path.is_dir():
        raise DuoGenInputError(f"model folder {path} does not exist")
    return path


def resolve_mlflow_uri(uri: str) -> str:
    """The storage URI behind `models:/NAME@ALIAS` or `models:/NAME/VERSION` (KServe's storageUri)."""
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    name, _, ref = uri.removeprefix("models:/").partition("@")
    try:
        if ref:
            version = client.get_model_version_by_alias(name, ref)
        else:
            name, _, number = name.partition("/")
            version = client.get_model_version(name, number)
        return client.get_model_version_download_uri(version.name, version.version)
    except MlflowException as err:
        raise DuoGenInputError(f"cannot resolve {uri}: {err.message}") from None


def _from_mlflow(uri: str, cache: Path) -> Path:
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    import mlflow
    from mlflow.exceptions import MlflowException

    target = cache / hashlib.sha256(uri.encode()).hexdigest()[:16]
    try:
        source = resolve_mlflow_uri(uri) if uri.startswith("models:/") else uri
        target.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target)))
    except MlflowException as err:
        raise DuoGenInputError(f"cannot download {uri}: {err.message}") from None


def _from_object_store(url: str, cache: Path) -> Path:
    fs, inner = storage.filesystem(url)
    if not fs.exists(inner):
        raise DuoGenInputError(f"{url} does not exist")
    target = cache / hashlib.sha256(url.encode()).hexdigest()[:16]
    done = target / ".complete"
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        fs.get(inner.rstrip("/") + "/", str(target), recursive=True)
        done.write_text(url)
    return target
