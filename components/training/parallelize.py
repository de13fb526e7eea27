"""Tensor and data parallelism for the DiT and the MLLM, applied from outside to a built model (the
torchtitan habit).

Neither model knows anything of ranks. `parallelize_dit` / `parallelize_mllm` take a built model whose
weights are identical on every rank and, driven by a table of (module-name pattern -> column/row) (`DIT_PLAN`,
`MLLM_PLAN`) and one swap function, replace the attention and MLP linears of every block, copying each rank's
shard out of the dense weight:

- DiT (`duogen.model.dit.DuoGenDiT`): `attn1`/`attn2` `to_q`, `to_k`, `to_v` -> column-parallel (each rank
  keeps `heads / tp` whole heads, and `attn.heads` becomes that local count), `to_out[0]` -> row-parallel
  (input already split by head; outputs all-reduced), `ff.net[0].proj` -> column, `ff.net[2]` -> row. The
  per-head q/k RMSNorm weight is over `head_dim` and shared by all heads, so it stays whole (its gradient is
  all-reduced); AdaLN, patch/time embeddings, `proj_out` and the connector (`crossattn_proj`) stay replicated.
- MLLM (transformers' `Qwen2_5_VLForConditionalGeneration`, `DuoGenMLLM.model`): in every language decoder
  layer `q_proj`/`k_proj`/`v_proj` (biased) -> column (query and key/value heads both split: GQA), `o_proj`
  -> row, `mlp.gate_proj`/`up_proj` -> column, `down_proj` -> row. The vision tower, embeddings, norms and
  `lm_head` stay replicated.

Parameter names do not change (`transformer_blocks.0.attn1.to_q.weight` is still there, with a sharded
shape), and `gather_full_state_dict` reassembles the dense state dict, so checkpoints and exports keep the
diffusers / transformers layout.

Which layers:

- CPU, or GPU without Transformer Engine: megatron-core's `ColumnParallelLinear` / `RowParallelLinear`
  (tested here on CPU with gloo: TP=2 equals TP=1 to float rounding, for both models).
- GPU with Transformer Engine importable: TE's `Linear` with `parallel_mode="column"/"row"` (`fp8.py`),
  and the training step runs under `fp8_autocast(model)` with a recipe chosen by name. **This path is real
  code but untested here** (no GPU, and Transformer Engine cannot be installed on this machine).

Data parallelism over the remaining ranks is plain torch DDP on megatron-core's data-parallel group
(`wrap_data_parallel`). Megatron-core's own optimizers and DDP need CUDA; use torch optimizers on CPU.

megatron-core is imported lazily (importing it takes seconds and prints warnings), so importing this module
is cheap.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from duogen.model.dit import RMSNorm

from .fp8 import FP8_RECIPES, te_available, te_linear, use_te_default


# --- optional dependencies ---------------------------------------------------------------------------------
@functools.cache
def _megatron():
    """Import megatron-core (quietly: it warns that TE/Apex are absent) and define our two layer classes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core import parallel_state, tensor_parallel
        from megatron.core.model_parallel_config import ModelParallelConfig

    class MegatronColumnLinear(tensor_parallel.ColumnParallelLinear):
        """`ColumnParallelLinear` that takes any leading dims and returns only the output (no bias tuple)."""

        partition_dim = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            out, _ = super().forward(x.reshape(-1, x.shape[-1]))
            return out.reshape(*x.shape[:-1], out.shape[-1])

    class MegatronRowLinear(tensor_parallel.RowParallelLinear):
        """`RowParallelLinear(input_is_parallel=True)` returning only the (all-reduced) output."""

        partition_dim = 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            out, _ = super().forward(x.reshape(-1, x.shape[-1]))
            return out.reshape(*x.shape[:-1], out.shape[-1])

    for cls in (MegatronColumnLinear, MegatronRowLinear):  # importable by name (pickle, repr)
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
        globals()[cls.__name__] = cls
    return parallel_state, tensor_parallel, ModelParallelConfig, MegatronColumnLinear, MegatronRowLinear


# --- process groups ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParallelState:
    """Where this process sits: global rank, its tensor-parallel and data-parallel coordinates and groups."""

    rank: int
    world_size: int
    local_rank: int
    tp_size: int
    tp_rank: int
    dp_size: int
    dp_rank: int
    backend: str
    device: torch.device
    tp_group: dist.ProcessGroup | None = field(default=None, repr=False)
    dp_group: dist.ProcessGroup | None = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def local_device() -> torch.device:
    """This process's device: its GPU (`cuda:LOCAL_RANK`, made current) when CUDA is available, else the
    CPU. A one-process run uses it too: a GPU node trains on its GPU with or without a process group."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def init_distributed(
    tp: int = 1, *, backend: str | None = None, seed: int = 0, timeout_minutes: int = 30
) -> ParallelState:
    """Join the job described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT),
    then build megatron-core's tensor- and data-parallel groups with `tp` ranks per tensor-parallel group
    (data-parallel size = world / tp). gloo on CPU, nccl on GPU. A process started without torchrun is a
    world of one. Calling it again with a different `tp` rebuilds the megatron groups."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if tp < 1 or world % tp:
        raise ValueError(f"tensor-parallel size {tp} must divide the world size {world}")
    device = local_device()
    cuda = device.type == "cuda"
    backend = backend or ("nccl" if cuda else "gloo")
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group(
            backend, rank=rank, world_size=world, timeout=timedelta(minutes=timeout_minutes)
        )
    parallel_state, tensor_parallel, *_ = _megatron()
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tp, distributed_timeout_minutes=timeout_minutes
    )
    if cuda:
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
    else:  # `model_parallel_cuda_manual_seed` and the tracker's `fork()` are CUDA-only
        tensor_parallel.random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
    return ParallelState(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        tp_size=parallel_state.get_tensor_model_parallel_world_size(),
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        dp_size=parallel_state.get_data_parallel_world_size(),
        dp_rank=parallel_state.get_data_parallel_rank(),
        backend=backend,
        device=device,
        tp_group=parallel_state.get_tensor_model_parallel_group(),
        dp_group=parallel_state.get_data_parallel_group(),
    )


def shutdown_distributed() -> None:
    """Tear down megatron's groups and the default process group (end of a run, or between tests)."""
    if "megatron.core" in sys.modules:
        parallel_state = _megatron()[0]
        if parallel_state.model_parallel_is_initialized():
            parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


# --- tensor parallelism ------------------------------------------------------------------------------------
@dataclass
class TensorParallelInfo:
    """Recorded on the model as `model.tensor_parallel` by `parallelize_dit` / `parallelize_mllm`."""

    size: int
    rank: int
    backend: str  # "megatron" or "te"
    fp8: str | None
    group: dist.ProcessGroup | None = field(repr=False)
    sharded: dict[str, int] = field(default_factory=dict, repr=False)  # parameter name -> split dim


# Sharding plans: (regular expression for a full module name, parallel mode). Column: output features (and
# bias) split; row: input features split, bias whole and added after the all-reduce. Each column layer feeds
# the row layer after it directly, so a block costs one all-reduce per row layer each way.
DIT_PLAN = (
    (r"transformer_blocks\.\d+\.attn[12]\.to_[qkv]", "column"),
    (r"transformer_blocks\.\d+\.attn[12]\.to_out\.0", "row"),
    (r"transformer_blocks\.\d+\.ff\.net\.0\.proj", "column"),
    (r"transformer_blocks\.\d+\.ff\.net\.2", "row"),
)
# Anchored on `language_model`: the vision tower's MLP has the same gate/up/down names and stays replicated.
MLLM_PLAN = (
    (r"model\.language_model\.layers\.\d+\.self_attn\.[qkv]_proj", "column"),
    (r"model\.language_model\.layers\.\d+\.self_attn\.o_proj", "row"),
    (r"model\.language_model\.layers\.\d+\.mlp\.(gate|up)_proj", "column"),
    (r"model\.language_model\.layers\.\d+\.mlp\.down_proj", "row"),
)


class HeadSharedRMSNorm(RMSNorm):
    """The per-head q/k RMSNorm under tensor parallelism. Its weight (over head_dim) is shared by all heads,
    so it stays whole on every rank, but each rank only sees its own heads: the weight's gradient is a
    partial sum and must be all-reduced over the tensor-parallel group (forward: identity)."""

    tp_group: dist.ProcessGroup | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from megatron.core.tensor_parallel.mappings import copy_to_tensor_model_parallel_region

        weight = copy_to_tensor_model_parallel_region(self.weight, group=self.tp_group)
        return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), self.eps).to(x.dtype)


def _head_shared_norm(norm: RMSNorm, group: dist.ProcessGroup) -> HeadSharedRMSNorm:
    shared = HeadSharedRMSNorm(norm.weight.shape[0], norm.eps)
    shared.weight = norm.weight  # the same Parameter: name, value and optimizer identity are unchanged
    shared.tp_group = group
    return shared


def _shard(weight: torch.Tensor, dim: int, tp: int, rank: int) -> torch.Tensor:
    return weight.chunk(tp, dim=dim)[rank]


def _check_request(
    model: nn.Module, tp: int, use_te: bool | None, fp8: str | None
) -> tuple[bool, str | None]:
    """Validate what both `parallelize_*` take; returns the resolved `use_te` and `fp8` (None without TE)."""
    if tp < 1:
        raise ValueError(f"tensor-parallel size must be >= 1, got {tp}")
    if fp8 is not None and fp8 not in FP8_RECIPES:
        raise ValueError(f"unknown FP8 recipe {fp8!r}; choose one of {', '.join(FP8_RECIPES)}")
    if getattr(model, "tensor_parallel", None) is not None:
        raise ValueError("this model is already parallelized")
    use_te = use_te_default() if use_te is None else use_te
    if use_te and not te_available():
        raise RuntimeError("use_te=True but Transformer Engine is not importable")
    if fp8 is not None and not use_te:
        warnings.warn(f"FP8 recipe {fp8!r} ignored: Transformer Engine layers are not in use", stacklevel=3)
        fp8 = None
    return use_te, fp8


def _require_divisible(what: str, n: int, tp: int) -> None:
    if n % tp:
        raise ValueError(
            f"cannot shard {n} {what} over {tp} tensor-parallel ranks: "
            f"the number of {what} must be divisible by the tensor-parallel size"
        )


def _resolve_group(tp: int, tp_group: dist.ProcessGroup | None, caller: str):
    """The tensor-parallel group (default: megatron-core's) and this process's rank in it."""
    if tp == 1:  # TE layers only for FP8 (GPU): no communication, no group needed
        return None, 0
    if tp_group is None:
        if not dist.is_initialized():
            raise RuntimeError(
                f"{caller} with tensor-parallel size > 1 needs torch.distributed: call "
                "init_distributed(tp) first (or pass tp_group)"
            )
        tp_group = _megatron()[0].get_tensor_model_parallel_group()
    if dist.get_world_size(tp_group) != tp:
        raise ValueError(
            f"tp_group_size={tp} but the tensor-parallel group has {dist.get_world_size(tp_group)} ranks"
        )
    return tp_group, dist.get_rank(tp_group)


def _swap_linears(
    model: nn.Module, plan, tp: int, group, rank: int, use_te: bool, fp8: str | None
) -> TensorParallelInfo:
    """Replace every `nn.Linear` that `plan` names with a column/row-parallel layer holding this rank's
    shard of the dense weight (and bias), under the same attribute name, so parameter names do not change.
    The one mechanism behind both `parallelize_dit` and `parallelize_mllm`."""
    compiled = [(re.compile(pattern), mode) for pattern, mode in plan]
    targets = []
    for name, module in model.named_modules():
        mode = next((m for pattern, m in compiled if pattern.fullmatch(name)), None)
        if mode is None:
            continue
        if not isinstance(module, nn.Linear):
            raise TypeError(f"{name} is not an nn.Linear: {type(module).__name__}")
        targets.append((name, module, mode))
    missing = [p.pattern for p, _ in compiled if not any(p.fullmatch(name) for name, _, _ in targets)]
    if missing:
        raise TypeError(f"{type(model).__name__} has no layer matching {missing}: not the model of this plan")

    configs: dict[torch.dtype, object] = {}  # one megatron config per parameter dtype

    def megatron_layer(mode: str, dense: nn.Linear) -> nn.Module:
        _, _, ModelParallelConfig, Column, Row = _megatron()
        dtype = dense.weight.dtype
        if dtype not in configs:
            configs[dtype] = ModelParallelConfig(
                tensor_model_parallel_size=tp,
                use_cpu_initialization=True,  # allocate on CPU, no CUDA RNG tracker; weights are copied in
                perform_initialization=False,
                gradient_accumulation_fusion=False,  # needs Apex's fused CUDA kernel
                sequence_parallel=False,
                params_dtype=dtype,
            )
        cls = Column if mode == "column" else Row
        kwargs = {"input_is_parallel": True, "skip_bias_add": False} if mode == "row" else {}
        layer = cls(
            dense.in_features,
            dense.out_features,
            config=configs[dtype],
            init_method=nn.init.zeros_,  # not called (perform_initialization=False)
            bias=dense.bias is not None,
            tp_group=group,
            **kwargs,
        )
        return layer.to(dense.weight.device)

    info = TensorParallelInfo(
        size=tp, rank=rank, backend="te" if use_te else "megatron", fp8=fp8, group=group
    )
    for name, dense, mode in targets:
        dim = 0 if mode == "column" else 1
        if use_te:
            layer = te_linear(mode, dense, tp, group, pad_rows=fp8 is not None)
        else:
            layer = megatron_layer(mode, dense)
        with torch.no_grad():
            layer.weight.copy_(_shard(dense.weight, dim, tp, rank))
            if dense.bias is not None:  # a row layer adds its whole bias once, after the all-reduce
                layer.bias.copy_(_shard(dense.bias, 0, tp, rank) if mode == "column" else dense.bias)
        for param_name, param in dense.named_parameters():
            getattr(layer, param_name).requires_grad_(param.requires_grad)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, layer)  # also right for Sequential / ModuleList items
        info.sharded[f"{name}.weight"] = dim
        if dense.bias is not None and mode == "column":
            info.sharded[f"{name}.bias"] = 0
    return info


def parallelize_dit(
    dit: nn.Module,
    tp_group_size: int,
    *,
    tp_group: dist.ProcessGroup | None = None,
    use_te: bool | None = None,
    fp8: str | None = None,
) -> nn.Module:
    """Shard the DiT's attention and MLP linears (`DIT_PLAN`) over `tp_group_size` ranks, in place; returns
    `dit`.

    `dit` must be built and hold the same weights on every rank. `tp_group` defaults to megatron-core's
    tensor-parallel group (`init_distributed` first). `use_te` defaults to "TE importable and CUDA present";
    `fp8` names the recipe (`fp8_recipe`) `fp8_autocast(dit)` uses (TE only; warned about and ignored
    without TE). With `tp_group_size == 1` and no FP8 the model is returned untouched.
    """
    use_te, fp8 = _check_request(dit, tp_group_size, use_te, fp8)
    cfg = dit.config
    heads = cfg.num_attention_heads
    _require_divisible("attention heads", heads, tp_group_size)
    _require_divisible("MLP features", int(cfg.hidden_size * cfg.mlp_ratio), tp_group_size)
    if tp_group_size == 1 and fp8 is None:
        return dit
    tp_group, rank = _resolve_group(tp_group_size, tp_group, "parallelize_dit")
    info = _swap_linears(dit, DIT_PLAN, tp_group_size, tp_group, rank, use_te, fp8)
    for block in dit.transformer_blocks:
        for attn in (block.attn1, block.attn2):
            attn.heads = heads // tp_group_size
            if tp_group_size > 1:
                attn.norm_q = _head_shared_norm(attn.norm_q, tp_group)
                attn.norm_k = _head_shared_norm(attn.norm_k, tp_group)
    dit.tensor_parallel = info
    return dit


def parallelize_mllm(
    model: nn.Module,
    tp_group_size: int,
    *,
    tp_group: dist.ProcessGroup | None = None,
    use_te: bool | None = None,
    fp8: str | None = None,
) -> nn.Module:
    """Shard the language model of Qwen2.5-VL (`MLLM_PLAN`) over `tp_group_size` ranks, in place; returns
    `model`, transformers' `Qwen2_5_VLForConditionalGeneration` (`DuoGenMLLM.model`, `pair.mllm.model`).

    Per decoder layer q/k/v (with their biases) are column-parallel, whole heads per rank; with GQA the
    key/value heads are split too, so both head counts must be divisible by the TP size, and rank r's query
    heads still read its own key/value heads (`num_key_value_groups` is unchanged). transformers 5.23's
    attention reshapes with -1 and `head_dim`, so only the layer attributes `num_heads` and
    `num_key_value_heads` are set to the local counts; the shared config keeps the dense ones (saving and
    export stay dense; a `StaticCache` sized from the config would not fit: train and generate dynamically).
    The vision tower, embeddings, norms and lm_head stay replicated: the column layers all-reduce the
    gradient of their input, so replicated weights get the full gradient on every rank. Arguments as in
    `parallelize_dit`; the TE/FP8 path is real code but untested (GPU only).
    """
    use_te, fp8 = _check_request(model, tp_group_size, use_te, fp8)
    text = getattr(getattr(model, "config", None), "text_config", None)
    if text is None or not hasattr(getattr(model, "model", None), "language_model"):
        raise TypeError(
            "parallelize_mllm takes transformers' Qwen2_5_VLForConditionalGeneration (DuoGenMLLM.model), "
            f"got {type(model).__name__}"
        )
    _require_divisible("attention heads", text.num_attention_heads, tp_group_size)
    _require_divisible("key/value heads", text.num_key_value_heads, tp_group_size)
    _require_divisible("MLP features", text.intermediate_size, tp_group_size)
    if tp_group_size == 1 and fp8 is None:
        return model
    tp_group, rank = _resolve_group(tp_group_size, tp_group, "parallelize_mllm")
    info = _swap_linears(model, MLLM_PLAN, tp_group_size, tp_group, rank, use_te, fp8)
    for layer in model.model.language_model.layers:
        layer.self_attn.num_heads = text.num_attention_heads // tp_group_size
        layer.self_attn.num_key_value_heads = text.num_key_value_heads // tp_group_size
    model.tensor_parallel = info
    return model


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _is_extra_state(key: str) -> bool:
    return key.endswith("_extra_state")  # megatron/TE layers add these (None, or TE's FP8 metadata)


def gather_full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The dense state dict (diffusers layout for the DiT, transformers layout for the MLLM) of a (possibly
    parallelized, possibly DDP-wrapped) model: each parameter in `model.tensor_parallel.sharded` is
    all-gathered along its split dim.

    Collective: every rank of the tensor-parallel group must call it; every rank gets the full dict
    (all-gather), so rank 0 can save or export it. Tensors are detached CPU-independent copies."""
    model = _unwrap(model)
    info: TensorParallelInfo | None = getattr(model, "tensor_parallel", None)
    out = {}
    for key, value in model.state_dict().items():
        if _is_extra_state(key):
            continue
        dim = info.sharded.get(key) if info is not None else None
        if dim is None or info.size == 1:
            out[key] = value.detach().clone()
            continue
        parts = [torch.empty_like(value) for _ in range(info.size)]
        dist.all_gather(parts, value.detach().contiguous(), group=info.group)
        out[key] = torch.cat(parts, dim=dim)
    return out


def load_full_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a dense state dict into a (possibly parallelized) DiT or MLLM: each rank takes its shards."""
    model = _unwrap(model)
    info: TensorParallelInfo | None = getattr(model, "tensor_parallel", None)
    local = {}
    for key, value in state_dict.items():
        dim = info.sharded.get(key) if info is not None else None
        local[key] = value if dim is None else _shard(value, dim, info.size, info.rank)
    result = model.load_state_dict(local, strict=False)
    missing = [k for k in result.missing_keys if not _is_extra_state(k)]
    unexpected = [k for k in result.unexpected_keys if not _is_extra_state(k)]
    if missing or unexpected:
        raise KeyError(
            f"state dict does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def replicate_check(model: nn.Module, group: dist.ProcessGroup | None = None, atol: float = 0.0) -> list[str]:
    """Names of replicated (non-sharded) parameters that differ across `group` (default: the model's
    tensor-parallel group). Collective; every rank gets the same list, empty when the replicas agree, as
    they must after every optimizer step."""
    model = _unwrap(model)
    info: TensorParallelInfo | None = getattr(model, "tensor_parallel", None)
    group = group if group is not None else (info.group if info is not None else None)
    src = dist.get_global_rank(group, 0) if group is not None else 0
    names, gaps = [], []
    for name, param in model.named_parameters():
        if info is not None and name in info.sharded:
            continue
        reference = param.detach().clone()
        dist.broadcast(reference, src=src, group=group)
        names.append(name)
        gaps.append((reference - param.detach()).abs().max().float())
    worst = torch.stack(gaps) if gaps else torch.zeros(0)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX, group=group)
    return [name for name, gap in zip(names, worst.tolist(), strict=True) if gap > atol]


# --- data parallelism --------------------------------------------------------------------------------------
def wrap_data_parallel(model: nn.Module, dp_group: dist.ProcessGroup | None = None) -> nn.Module:
    """Plain torch DDP over the data-parallel group (default: megatron-core's, from `init_distributed`).

    Each tensor-parallel shard all-reduces its gradients with the same shard on the other data-parallel
    replicas (megatron's DP group holds exactly those ranks). With one data-parallel rank the model is
    returned as is. `gather_full_state_dict` / `load_full_state_dict` accept the wrapped model. No search for
    unused parameters (a graph traversal per step): the stages' losses reach every parameter instead
    (`losses.NextTokenLoss` on a micro-batch without pictures)."""
    if dp_group is None:
        dp_group = _megatron()[0].get_data_parallel_group()
    if dist.get_world_size(dp_group) == 1:
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model,
        process_group=dp_group,
        device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False,
    )
