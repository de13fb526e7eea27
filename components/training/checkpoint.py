"""Resumable checkpoints with torch.distributed.checkpoint (DCP).

A checkpoint holds everything a resumed run needs to continue the same loss curve: the trainable weights,
the optimizer and scheduler states, every RNG (torch, Python, NumPy) and the data position. Each one is a
folder `step-NNNNNNN`; `latest` names the newest complete one and is written last, so a run killed while
saving resumes from the previous checkpoint. DCP writes one shard per rank, so the same code saves
tensor-parallel runs; a process group is optional (single process runs save without one).
"""

from __future__ import annotations

import pickle
import random
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict


def _rng_state() -> bytes:
    return pickle.dumps(
        {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    )


def _set_rng_state(blob: bytes) -> None:
    state = pickle.loads(blob)
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def save(folder: str | Path, step: int, model, optimizer, scheduler, data_position: int) -> Path:
    folder = Path(folder)
    path = folder / f"step-{step:07d}"
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {
        "model": model_sd,
        "optim": optim_sd,
        "scheduler": scheduler.state_dict(),
        "step": torch.tensor(step),
        "data_position": torch.tensor(data_position),
        "rng": _rng_state(),
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to save in a single process.*")
        dcp.save(state, checkpoint_id=str(path))
    (folder / "latest").write_text(path.name)
    return path


def latest(folder: str | Path) -> Path | None:
    pointer = Path(folder) / "latest"
    return Path(folder) / pointer.read_text().strip() if pointer.exists() else None


def load(path: str | Path, model, optimizer, scheduler) -> tuple[int, int]:
    """Restore in place; returns (step, data_position)."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {
        "model": model_sd,
        "optim": optim_sd,
        "scheduler": scheduler.state_dict(),
        "step": torch.tensor(0),
        "data_position": torch.tensor(0),
        "rng": b"",
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return int(state["step"]), int(state["data_position"])
