"""Local launching: torchrun on 127.0.0.1 with N processes (what a PyTorchJob's pods do on a cluster)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    argv: Sequence[str], nproc: int = 2, timeout: float | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m torch.distributed.run ... argv` on a free local port; output is captured.

    One intra-op thread per process: two processes on a 2-core machine otherwise oversubscribe the cores.
    """
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        *argv,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
