"""The predictor server for tests: a real process on 127.0.0.1 (a free port), stopped by its PID.

with predictor_server(["duogen", "serve", "--model", DIR]) as server:
    OpenAI(base_url=server.openai, api_key="x") ...
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from duogen.platform.launch import free_port


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    @property
    def openai(self) -> str:
        return f"{self.url}/openai/v1"

    def alive(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/live", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=5).json().get("ready") is True
        except httpx.HTTPError:
            return False


@contextmanager
def predictor_server(
    command: list[str], log: Path, env: dict | None = None, timeout: float = 90.0, ready: bool = True
) -> Iterator[Server]:
    """`ready=False`: yield once the server is alive (`/v2/health/live`), before its model is loaded."""
    port = free_port()
    with open(log, "w") as out:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + timeout
        while not (server.healthy() if ready else server.alive()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
