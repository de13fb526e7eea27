"""Resumable checkpoints with torch.distributed.checkpoint (DCP), in a local folder or on S3.

A checkpoint holds everything a resumed run needs to continue the same loss curve: the trainable weights,
the optimizer and scheduler states, the EMA weights (if kept), every RNG (torch's CPU and, on GPU nodes, CUDA
generators, megatron's model-parallel CUDA RNG tracker when one is set up, Python, NumPy; one per rank) and
the global data position. Each one is a folder `step-NNNNNNN` under the checkpoint location (a path or
`s3://bucket/prefix`, see `storage`); `latest` names the newest complete one and is written last, through the
same filesystem, so a run killed while saving resumes from the previous checkpoint. A process group is
optional: single-process runs save without one; distributed runs call `save`/`load` on every rank.

Tensor parallelism: a megatron-sharded parameter keeps its dense name but has a different local shape on
each TP rank, so handed to DCP as a plain tensor it would be taken for a replicated one (one rank's shard
saved under the dense name, the others dropped). The sharded parameters (and their AdamW moments and EMA
copies) are therefore handed to DCP as DTensors over the TP group (`Shard(dim)`, sharing storage with the
local tensors). That is the smallest correct change: no gather (no rank ever holds the dense model and
optimizer, as a gathered save would need), no renamed keys, and DCP stores each tensor whole in the dense
diffusers / transformers layout, so a checkpoint loads back under any TP size, or none. Data-parallel replicas
hold identical chunks, which DCP writes once. Megatron/TE `_extra_state` entries are left out (None for
megatron; TE's FP8 scaling history re-warms after a resume).
"""

from __future__ import annotations

import pickle
import random
import sys
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from duogen.platform import storage

LATEST = "latest"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _rng_tracker():
    """megatron's CUDA RNG tracker (the dropout streams of tensor-parallel regions) when this process set
    one up; None otherwise (megatron never imported, or no tracker yet)."""
    random_module = sys.modules.get("megatron.core.tensor_parallel.random")
    if random_module is None or not random_module._CUDA_RNG_STATE_TRACKER_INITIALIZED:
        return None
    return random_module.get_cuda_rng_tracker()


def _rng_state() -> bytes:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    tracker = _rng_tracker()
    if tracker is not None:
        state["tracker"] = {k: v.cpu() if torch.is_tensor(v) else v for k, v in tracker.get_states().items()}
    return pickle.dumps(state)


def _set_rng_state(blob: bytes) -> None:
    state = pickle.loads(blob)
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    tracker = _rng_tracker()
    if "tracker" in state and tracker is not None:
        tracker.set_states(state["tracker"])


def _tensor_parallel(model):
    info = getattr(model, "tensor_parallel", None)
    return info if info is not None and info.size > 1 else None


def _as_dtensors(state: dict, model) -> dict:
    """Sharded entries of the state as DTensors over the TP group (views of the same storage)."""
    info = _tensor_parallel(model)
    if info is None:
        return state
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import DTensor, Shard

    device = next(model.parameters()).device.type
    mesh = DeviceMesh.from_group(info.group, device)

    def shard(t: torch.Tensor, dim: int):
        return DTensor.from_local(t, mesh, [Shard(dim)], run_check=False)

    for name, dim in info.sharded.items():
        for weights in (state["model"], state.get("ema", {})):
            if name in weights:
                weights[name] = shard(weights[name], dim)
        moments = state["optim"]["state"].get(name)
        if moments is not None:  # a new dict: get_state_dict hands out the optimizer's own per-param dicts
            state["optim"]["state"][name] = {
                k: shard(v, dim) if torch.is_tensor(v) and v.dim() > 0 else v  # exp_avg(_sq), not `step`
                for k, v in moments.items()
            }
    return state


def _as_local(tree):
    from torch.distributed.tensor import DTensor

    if isinstance(tree, dict):
        return {k: _as_local(v) for k, v in tree.items()}
    return tree.to_local() if isinstance(tree, DTensor) else tree


def _state(model, optimizer, scheduler, ema: dict | None) -> dict:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {
        "model": {k: v for k, v in model_sd.items() if not k.endswith("_extra_state")},
        "optim": optim_sd,
        "scheduler": scheduler.state_dict(),
        "step": torch.tensor(0),
        "data_position": torch.tensor(0),
    }
    if ema is not None:
        state["ema"] = dict(ema)
    return _as_dtensors(state, model)


def save(
    folder: str, step: int, model, optimizer, scheduler, data_position: int, ema: dict | None = None
) -> str:
    """Write `folder/step-NNNNNNN` (every rank takes part), then `folder/latest` (rank 0); returns the path.
    `ema` maps parameter names to EMA tensors (local shards under TP)."""
    name = f"step-{step:07d}"
    path = storage.join(folder, name)
    state = _state(model, optimizer, scheduler, ema)
    state["step"], state["data_position"] = torch.tensor(step), torch.tensor(data_position)
    state[f"rng_{_rank()}"] = _rng_state()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to save in a single process.*")
        dcp.save(state, storage_writer=storage.dcp_writer(path))
    if _rank() == 0:
        storage.write_text(storage.join(folder, LATEST), name)
    return path


def latest(folder: str) -> str | None:
    name = storage.read_text(storage.join(folder, LATEST))
    return storage.join(folder, name.strip()) if name else None


def load(path: str, model, optimizer, scheduler, ema: dict | None = None) -> tuple[int, int]:
    """Restore in place (every rank takes part); returns (step, data_position). A rank with no RNG state of
    its own in the checkpoint (the world grew) takes rank 0's."""
    reader = storage.dcp_reader(path)
    saved = reader.read_metadata().state_dict_metadata
    rng_key = f"rng_{_rank()}" if f"rng_{_rank()}" in saved else "rng_0"
    state = _state(model, optimizer, scheduler, ema)
    state[rng_key] = b""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        dcp.load(state, storage_reader=reader)
    state = _as_local(state)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        with torch.no_grad():
            for name, value in state["ema"].items():
                ema[name].copy_(value)
    _set_rng_state(state[rng_key])
    return int(state["step"]), int(state["data_position"])
