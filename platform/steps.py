"""A pipeline step's outputs live at `ROOT/RUN/STEP` (a local folder or an object-store prefix) with a
`_step.json` written last: a step that finds its record returns the recorded outputs instead of running
again, so a rerun of the same pipeline run (a retried task, a killed local run started again) redoes only
unfinished steps. The record also keeps the seconds spent inside the stage's own work, which is how the
orchestration overhead of a run is measured.

Stage libraries write local folders; with an object-store root a step works in a scratch folder
(`DUOGEN_SCRATCH`, default the system temp folder) and its folder is uploaded before the record is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import storage

RECORD = "_step.json"


def run_identity(run_name: str, kfp_run_id: str) -> str:
    """The run's name under the storage root: `run_name` when given, else the KFP run's id (a UI run with
    the defaults), so every run has its own folders, step records and job names. Every step resolves it
    the same way (a step of its own would cost a pod per run)."""
    name = (run_name or "").strip() or (kfp_run_id or "").strip()
    if not name or "{{" in name:
        raise ValueError("a pipeline run needs a run_name or a KFP run id (got neither)")
    return name


def step_uri(root: str, run: str, step: str) -> str:
    return storage.join(root, run, step)


def _base() -> Path:
    return Path(os.environ.get("DUOGEN_SCRATCH", Path(tempfile.gettempdir()) / "duogen-scratch"))


def scratch(root: str, run: str, step: str) -> Path:
    """A local working folder for one step of one pipeline run (runs of the same name under other roots
    get their own)."""
    return _base() / hashlib.sha256(str(root).encode()).hexdigest()[:12] / run / step


def record(root: str, run: str, step: str) -> dict[str, Any] | None:
    text = storage.read_text(storage.join(step_uri(root, run, step), RECORD))
    return json.loads(text) if text else None


def once(root: str, run: str, step: str, work: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """`work(local_folder) -> outputs` unless this step already finished; returns the outputs."""
    done = record(root, run, step)
    if done is not None:
        return done["outputs"]
    uri = step_uri(root, run, step)
    local = Path(uri) if not storage.is_url(uri) else scratch(root, run, step)
    local.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outputs = work(local)
    if storage.is_url(uri):
        storage.publish_dir(local, uri)
    seconds = round(time.perf_counter() - start, 3)
    storage.write_text(storage.join(uri, RECORD), json.dumps({"outputs": outputs, "seconds": seconds}))
    return outputs


def input_dir(uri: str) -> Path:
    """A local folder with another step's outputs (a copy, made once, when they live in object storage)."""
    return storage.local_dir(uri, _base() / "inputs" / hashlib.sha256(str(uri).encode()).hexdigest()[:16])
