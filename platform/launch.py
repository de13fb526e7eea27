"""Local launching: torchrun on 127.0.0.1 with N processes (what a PyTorchJob's pods do on a cluster)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(argv: Sequence[str], nproc: int = 2) -> list[str]:
    """`python -m torch.distributed.run` with `nproc` processes on a free port of 127.0.0.1, then `argv`
    (a script and its arguments, or `-m module ...`)."""
    return [
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


def _env() -> dict[str, str]:
    """One intra-op thread per process (two processes on a 2-core machine oversubscribe cores)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def torchrun(
    argv: Sequence[str],
    nproc: int = 2,
    timeout: float | None = None,
    cwd: str | None = None,
    capture: bool | str = True,
) -> subprocess.CompletedProcess:
    """Run `torchrun_command(argv, nproc)`. `capture=True` collects the output (tests); `"stdout"` collects
    stdout (a result line) while stderr (progress bars, logs) streams to this terminal; `capture=False`
    streams both (the CLI). In every mode a SIGTERM to this process (a pod eviction, a stopped main job) is
    forwarded to torchrun, which passes it on to the workers: they checkpoint and stop."""
    cmd = torchrun_command(argv, nproc)
    out = subprocess.PIPE if capture else None
    err = subprocess.PIPE if capture is True else None
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=_env(), cwd=cwd)
    forward = threading.current_thread() is threading.main_thread()  # signal handlers: main thread only
    if forward:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    finally:
        if forward:
            signal.signal(signal.SIGTERM, previous)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
