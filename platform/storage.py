"""Where checkpoints live: a local folder or an object-store URL (`s3://bucket/prefix`), through fsspec.

Local paths keep DCP's plain `FileSystemWriter`/`FileSystemReader`; URLs use DCP's `FsspecWriter`/
`FsspecReader` with the same filesystem options as the small files written beside them (the `latest`
pointer), so both go to the same store.

S3 goes through s3fs. Credentials come from botocore's standard chain (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, profiles, a pod's IAM role).
The endpoint of a non-AWS store (MinIO in the chart, a local S3 server in tests) comes from the first set of
`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` (botocore's own names) and `S3_ENDPOINT_URL` (the MinIO habit).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT_URL")


def is_url(path: str | os.PathLike) -> bool:
    """True for `scheme://...` locations other than `file://` (those are local folders)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def join(base: str | os.PathLike, *parts: str) -> str:
    if is_url(base):
        return posixpath.join(str(base), *parts)
    return str(Path(str(base).removeprefix("file://"), *parts))


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for `url`: for S3 the endpoint from the environment (see the module docstring)."""
    if not url.startswith(("s3://", "s3a://")):
        return {}
    endpoint = next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
    return {"endpoint_url": endpoint} if endpoint else {}


def filesystem(path: str | os.PathLike):
    """(fsspec filesystem, path inside it), with a clear error when the URL's protocol is not installed."""
    from fsspec.core import url_to_fs

    text = str(path)
    try:
        return url_to_fs(text, **storage_options(text))
    except ImportError as err:
        scheme = text.split("://", 1)[0]
        drivers = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
        package = drivers.get(scheme, f"the fsspec driver for {scheme}")
        raise ImportError(f"{text}: {scheme}:// storage needs {package} (pip install {package})") from err


def read_text(path: str | os.PathLike) -> str | None:
    """The file's text, or None when it does not exist (no listing cache involved: it reads the object)."""
    fs, inner = filesystem(path)
    try:
        return fs.cat_file(inner).decode()
    except FileNotFoundError:
        return None


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace the file whole: an object PUT is atomic; locally write a temporary file and rename it."""
    if is_url(path):
        fs, inner = filesystem(path)
        fs.pipe_file(inner, text.encode())
        return
    target = Path(join(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, target)


def delete(path: str | os.PathLike) -> bool:
    """Remove the file; False when there was none (an object store's DELETE succeeds either way)."""
    fs, inner = filesystem(path)
    fs.invalidate_cache()
    if not fs.exists(inner):
        return False
    try:
        fs.rm_file(inner)
    except FileNotFoundError:
        return False
    return True


def dcp_writer(path: str | os.PathLike):
    """DCP's storage writer for a checkpoint folder (local or URL)."""
    from torch.distributed.checkpoint import FileSystemWriter

    if not is_url(path):
        return FileSystemWriter(join(path))
    filesystem(path)  # the clear error for a missing driver, before DCP's own
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter

    # fsync is meaningless for an object store (DCP would fall back to a machine-wide os.sync())
    return FsspecWriter(str(path), sync_files=False, **storage_options(str(path)))


def dcp_reader(path: str | os.PathLike):
    from torch.distributed.checkpoint import FileSystemReader

    if not is_url(path):
        return FileSystemReader(join(path))
    filesystem(path)
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

    return FsspecReader(str(path), **storage_options(str(path)))


def local_dir(uri: str | os.PathLike, scratch: str | os.PathLike) -> Path:
    """A local folder with what `uri` holds: the folder itself when local, else a copy under `scratch`
    (copied once; a rerun reuses it)."""
    if not is_url(uri):
        return Path(join(uri))
    target = Path(scratch)
    done = target / ".complete"
    if not done.exists():
        fs, inner = filesystem(uri)
        target.mkdir(parents=True, exist_ok=True)
        fs.get(inner.rstrip("/") + "/", str(target), recursive=True)
        done.write_text(str(uri))
    return target


def publish_dir(local: str | os.PathLike, uri: str | os.PathLike) -> str:
    """Put a finished local folder at `uri` (nothing to do when `uri` is that folder); returns `uri`."""
    if not is_url(uri):
        target = Path(join(uri))
        if target.resolve() != Path(local).resolve():
            import shutil

            shutil.copytree(local, target, dirs_exist_ok=True)
        return str(target)
    fs, inner = filesystem(uri)
    fs.put(str(local).rstrip("/") + "/", inner.rstrip("/"), recursive=True)
    return str(uri)
