"""Where a saved pair comes from: a local folder, KServe's `/mnt/models`, `s3://...`, or an MLflow model URI.

KServe's storage initializer copies `storageUri` to `/mnt/models` before the predictor starts, but it cannot
resolve an MLflow alias (`models:/duogen@champion`), so the predictor resolves those itself: MLflow
resolves the alias (or version) to the version's artifact location and downloads it. `runs:/<id>/model`
works the same way. Object-store prefixes are copied once into a local cache folder, keyed by the resolved
location, so an alias that moves downloads the new version beside the old one.

A registered version is an MLflow pyfunc model (`MLmodel` at its root) that carries the pair's folder as its
artifact `pair` (under `artifacts/`); a plain pair folder (older versions, `duogen train` exports) works too.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from duogen.model.errors import DuoGenInputError

from . import storage

KSERVE_MODEL_DIR = "/mnt/models"
MLFLOW_SCHEMES = ("models:/", "runs:/")
MLFLOW_ARTIFACTS = "mlflow-artifacts:"


def default_cache() -> Path:
    return Path(os.environ.get("DUOGEN_MODEL_CACHE", Path.home() / ".cache" / "duogen" / "models"))


def local_pair_dir(uri: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """A local folder holding the pair that `uri` names (downloaded into `cache` when it is remote)."""
    text = str(uri)
    cache = Path(cache) if cache is not None else default_cache()
    if text.startswith(MLFLOW_SCHEMES):
        return pair_folder(_from_mlflow(text, cache))
    if storage.is_url(text):
        return pair_folder(_from_object_store(text, cache))
    path = Path(text.removeprefix("file://"))
    if not path.is_dir():
        raise DuoGenInputError(f"model folder {path} does not exist")
    return pair_folder(path)


def pair_folder(path: Path) -> Path:
    """The pair inside an MLflow pyfunc model folder (the `pair` artifact its MLmodel names), or `path`."""
    if not (path / "MLmodel").exists():
        return path
    import yaml

    flavor = (yaml.safe_load((path / "MLmodel").read_text()).get("flavors") or {}).get(
        "python_function"
    ) or {}
    inner = ((flavor.get("artifacts") or {}).get("pair") or {}).get("path")
    if not inner or not (path / inner).is_dir():
        raise DuoGenInputError(f"{path} is an MLflow model without a DuoGen pair (no `pair` artifact)")
    return path / inner


def alias_version(uri: str) -> str | None:
    """The version number `models:/NAME@ALIAS` points at now (None for any other URI)."""
    if not uri.startswith("models:/") or "@" not in uri:
        return None
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, _, alias = uri.removeprefix("models:/").partition("@")
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        raise DuoGenInputError(f"cannot resolve {uri}: {err.message}") from None


def storage_uri(source: str, artifacts_destination: str | None = None) -> str:
    """A location KServe's storage initializer can fetch for an MLflow artifact location.

    An MLflow server run with `--serve-artifacts` hands out `mlflow-artifacts:/<path>` (or
    `mlflow-artifacts://host:port/<path>`), which only an MLflow client can read; the server stores it at
    `<--artifacts-destination>/<path>`, so that is the URI to hand KServe. Others pass through."""
    if not source.startswith(MLFLOW_ARTIFACTS):
        return source
    if not artifacts_destination:
        raise DuoGenInputError(
            f"{source} is served by the MLflow server's artifact proxy; KServe's storage initializer cannot "
            "read it: give the server's --artifacts-destination (e.g. s3://duogen/mlflow)"
        )
    rest = source.removeprefix(MLFLOW_ARTIFACTS)
    if rest.startswith("//"):  # mlflow-artifacts://host:port/path
        rest = rest[2:].partition("/")[2]
    return artifacts_destination.rstrip("/") + "/" + rest.lstrip("/")


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

    try:
        source = resolve_mlflow_uri(uri) if uri.startswith("models:/") else uri
        target = cache / hashlib.sha256(source.encode()).hexdigest()[:16]  # a moved alias: a new folder
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
