"""Transformer Engine and FP8 for the tensor-parallel layers: GPU-only, real code, untested here.

Transformer Engine cannot be installed on these CPU machines (and an importable-looking TE breaks
megatron-core on CPU), so everything here is guarded by `te_available()`; `parallelize_dit` /
`parallelize_mllm` use `te_linear` on GPU nodes where TE imports, and the training step runs under
`fp8_autocast(model)` with the recipe named in the config.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

FP8_RECIPES = ("delayed", "current", "mxfp8", "blockwise")
_FP8_ROW_MULTIPLE = 16  # TE's FP8 GEMMs want the token dimension divisible by 16


@functools.cache
def _te():
    """`transformer_engine` if importable, else None. Its core wheel raises RuntimeError (not ImportError)
    when the PyTorch extension is missing, so all three errors mean "absent"."""
    try:
        import transformer_engine  # noqa: F401
        import transformer_engine.pytorch as te_pytorch
    except (ImportError, RuntimeError, OSError):
        return None
    return te_pytorch


def te_available() -> bool:
    return _te() is not None


def use_te_default() -> bool:
    return te_available() and torch.cuda.is_available()


def fp8_recipe(name: str = "delayed", **kwargs):
    """A Transformer Engine FP8 recipe by name: "delayed" (`DelayedScaling`, HYBRID format, amax history
    16, max), "current" (`Float8CurrentScaling`), "mxfp8" (`MXFP8BlockScaling`, Blackwell), "blockwise"
    (`Float8BlockScaling`). `kwargs` go to the recipe. Untested here: needs TE (GPU images only)."""
    if name not in FP8_RECIPES:
        raise ValueError(f"unknown FP8 recipe {name!r}; choose one of {', '.join(FP8_RECIPES)}")
    if not te_available():
        raise RuntimeError("FP8 recipes need Transformer Engine, which is not importable here")
    from transformer_engine.common import recipe

    if name == "delayed":
        kwargs.setdefault("fp8_format", recipe.Format.HYBRID)
        kwargs.setdefault("amax_history_len", 16)
        kwargs.setdefault("amax_compute_algo", "max")
        return recipe.DelayedScaling(**kwargs)
    if name == "current":
        return recipe.Float8CurrentScaling(**kwargs)
    if name == "mxfp8":
        return recipe.MXFP8BlockScaling(**kwargs)
    return recipe.Float8BlockScaling(**kwargs)


def fp8_autocast(model: nn.Module):
    """The context the training step's forward runs in: TE's `fp8_autocast` with the recipe given to
    `parallelize_dit` / `parallelize_mllm` (`fp8=...`) when the model has TE layers, otherwise a no-op
    context. (Untested on GPU.)"""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    info = getattr(inner, "tensor_parallel", None)
    if info is None or info.backend != "te" or info.fp8 is None:
        return contextlib.nullcontext()
    te = _te()
    autocast = getattr(te, "fp8_autocast", None)
    if autocast is None:  # newer TE names it `autocast(recipe=...)`
        return te.autocast(enabled=True, recipe=fp8_recipe(info.fp8))
    # amax reduction over the whole world: every replica of a tensor sees the same scaling factors
    return autocast(enabled=True, fp8_recipe=fp8_recipe(info.fp8), fp8_group=None)


@functools.cache
def _te_linear_class():
    te = _te()

    class TELinear(te.Linear):
        """TE `Linear` taking any leading dims; pads the token dim to a multiple of 16 for FP8 GEMMs."""

        pad_rows = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            flat = x.reshape(-1, x.shape[-1])
            n = flat.shape[0]
            extra = (-n) % _FP8_ROW_MULTIPLE if self.pad_rows else 0
            if extra:
                flat = torch.cat([flat, flat.new_zeros(extra, flat.shape[1])])
            out = super().forward(flat)[:n]
            return out.reshape(*x.shape[:-1], out.shape[-1])

    TELinear.__module__ = __name__
    globals()["TELinear"] = TELinear
    return TELinear


def te_linear(parallel_mode: str, dense: nn.Linear, tp: int, group, pad_rows: bool) -> nn.Module:
    """A TE `Linear` (column or row parallel) to receive this rank's shard of `dense` (untested: GPU-only)."""
    layer = _te_linear_class()(
        dense.in_features,
        dense.out_features,
        bias=dense.bias is not None,
        tp_group=group,
        tp_size=tp,
        parallel_mode=parallel_mode,
        sequence_parallel=False,
        params_dtype=dense.weight.dtype,
        device=dense.weight.device,
    )
    layer.pad_rows = pad_rows
    return layer
