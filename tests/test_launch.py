"""Local torchrun: a SIGTERM to the launching process reaches the workers whatever the output mode, so a
stopped main job's training ranks checkpoint and exit instead of running on orphaned."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    got = []
    signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    open(sys.argv[1] + "." + os.environ["RANK"], "w").close()  # ready
    deadline = time.time() + 60
    while not got and time.time() < deadline:
        time.sleep(0.05)
    # one write per line: two ranks share the pipe, and print() writes its parts separately
    line = "rank " + os.environ["RANK"] + (" stopped by SIGTERM" if got else " timed out") + chr(10)
    os.write(1, line.encode())
    """
)

LAUNCHER = textwrap.dedent(
    """
    import json, sys
    from duogen.platform.launch import torchrun
    proc = torchrun([sys.argv[1], sys.argv[2]], nproc=2, capture={capture!r}, timeout=120)
    print(json.dumps({{"code": proc.returncode, "stdout": proc.stdout}}), flush=True)
    """
)


@pytest.mark.parametrize("capture", [True, "stdout"])
def test_sigterm_to_the_launcher_reaches_every_worker(tmp_path, capture):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    ready = tmp_path / "ready"
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER.format(capture=capture), str(worker), str(ready)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 90
    while not all((tmp_path / f"ready.{r}").exists() for r in (0, 1)):
        assert time.time() < deadline and launcher.poll() is None, "workers did not start"
        time.sleep(0.1)
    launcher.send_signal(signal.SIGTERM)
    out, _ = launcher.communicate(timeout=90)
    assert launcher.returncode == 0, out  # the launcher itself survived to report
    assert "rank 0 stopped by SIGTERM" in out and "rank 1 stopped by SIGTERM" in out
