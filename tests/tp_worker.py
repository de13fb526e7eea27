"""torchrun worker for tests/test_parallelize.py: the tiny DiT trained dense, with TP=2, and with DP=2, and
the tiny MLLM's Stage-1 loss trained dense and with TP=2 (one launch for both: startup dominates).

Run as `torchrun --nproc_per_node 2 tests/tp_worker.py OUT.json`. Every rank builds the same DiT (fixed
seed) and the same pack (two samples of different sizes, each a condition frame + a noisy target), and the
same MLLM (`DuoGenPair.build(tiny(), seed=0)`'s) with the same Stage-1 conversation (an image in the user
turn, `<BOV>` + an image in the answer, so the vision tower runs), then:

1. dense: the plain models in each process, forward + backward + AdamW for STEPS steps (the MLLM once in
   float32 and once in float64, see `run_mllm`);
2. TP=2: `init_distributed(tp=2)`, the same weights, `parallelize_dit` / `parallelize_mllm`, the same steps;
3. DP=2 (DiT): `init_distributed(tp=1)` (two data-parallel ranks), `wrap_data_parallel`, the same pack on
   both ranks (so the averaged gradient equals the dense one), the same steps.

Rank 0 writes the losses, a few output values, and how far the reassembled TP state dicts are from the
dense ones, as JSON.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.distributed as dist
from PIL import Image

from duogen.components.training.parallelize import (
    gather_full_state_dict,
    init_distributed,
    load_full_state_dict,
    parallelize_dit,
    parallelize_mllm,
    replicate_check,
    shutdown_distributed,
    wrap_data_parallel,
)
from duogen.model.chat import EncodedConversation, ImagePart, TextPart, Turn
from duogen.model.dit import DuoGenDiT
from duogen.model.mllm import DuoGenMLLM
from duogen.model.packing import Frame, pack_samples
from duogen.model.presets import tiny

STEPS = 3
LR = 1e-3  # AdamW turns float-rounding differences of near-zero gradients into update differences ~ lr


def make_batch(cfg):
    g = torch.Generator().manual_seed(123)
    sizes = [[(8, 8), (6, 10)], [(4, 6), (8, 4)]]  # per sample: condition frame, target frame
    samples, is_condition = [], []
    for frames in sizes:
        sample = []
        for i, (h, w) in enumerate(frames):
            cond = i < len(frames) - 1
            sample.append(Frame(torch.randn(16, h, w, generator=g), 1e-4 if cond else 0.6, cond))
            is_condition.append(cond)
        samples.append(sample)
    texts = [torch.randn(n, cfg.crossattn_proj_in_channels, generator=g) for n in (5, 9)]
    pack = pack_samples(samples, texts, cfg.patch_size, max_frames=cfg.max_frames)
    loss_mask = ~torch.tensor(is_condition)[pack.frame_of_token]
    p = cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
    target = torch.randn(pack.tokens.shape[0], p * cfg.out_channels, generator=g)
    return pack, loss_mask, target


def build(cfg) -> DuoGenDiT:
    torch.manual_seed(0)
    return DuoGenDiT(cfg)


def stage1_example(mllm: DuoGenMLLM) -> EncodedConversation:
    """A Stage-1 conversation: noise image in the user turn, `<BOV>` + noise image in the answer."""
    g = torch.Generator().manual_seed(7)

    def noise(w: int, h: int) -> Image.Image:
        return Image.frombytes(
            "RGB", (w, h), bytes(torch.randint(0, 256, (h * w * 3,), generator=g).tolist())
        )

    return mllm.encode(
        [
            Turn("user", [TextPart("make it blue"), ImagePart(noise(84, 56))]),
            Turn("assistant", [TextPart("here:"), ImagePart(noise(56, 56))]),
        ]
    )


def dit_step(model, batch):
    pack, mask, target = batch
    out = model(pack)
    return ((out - target) ** 2)[mask].mean(), out[0]


def mllm_step(mllm: DuoGenMLLM, example: EncodedConversation):
    out = mllm(example, with_loss=True)  # the Stage-1 loss, as the training loop computes it
    return out.loss, out.logits[0, -1]


def run_mllm(mllm: DuoGenMLLM, example: EncodedConversation, initial: dict, dtype: torch.dtype):
    """Train the (dense or sharded) MLLM from the dense `initial` weights in `dtype`; returns the losses,
    step-1 outputs, and the step-1 gradients and final weights reassembled to the dense layout.

    float64 as well as float32: AdamW's first step moves a weight by lr * g / (|g| + eps), so a gradient
    far below eps (here the k_proj biases', ~1e-9, a sum of cancelling terms) turns its float32 rounding
    into weight differences of lr/eps = 1e5 times that rounding, ~1e-5 after 3 steps. float64 removes the
    rounding and shows the sharded math itself is exact."""
    mllm.model.to(dtype)
    load_full_state_dict(mllm.model, initial)
    losses, out, grads = train(mllm.model, lambda: mllm_step(mllm, example))
    if getattr(mllm.model, "tensor_parallel", None) is not None:
        grads = gather_grads(mllm.model, grads)
    return losses, out, grads, gather_full_state_dict(mllm.model)


def train(model, step) -> tuple[list[float], list[float], dict[str, torch.Tensor]]:
    """STEPS AdamW steps of `step() -> (loss, output)` over `model`'s parameters; returns the losses, a few
    outputs of step 1 and the step-1 gradients."""
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    losses, first_out, first_grads = [], [], {}
    for _ in range(STEPS):
        loss, out = step()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not first_grads:
            first_out = out[:4].detach().tolist()
            first_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        opt.step()
        losses.append(loss.item())
    return losses, first_out, first_grads


def gather_grads(model, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reassemble TP-sharded gradients the way `gather_full_state_dict` reassembles weights."""
    info = model.tensor_parallel
    full = {}
    for name, g in grads.items():
        dim = info.sharded.get(name)
        if dim is None:
            full[name] = g
            continue
        parts = [torch.empty_like(g) for _ in range(info.size)]
        dist.all_gather(parts, g.contiguous(), group=info.group)
        full[name] = torch.cat(parts, dim=dim)
    return full


def max_relative_diff(a: dict, b: dict) -> float:
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)).item() for k in b)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))[:5]
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def main(out_path: str) -> None:
    torch.set_num_threads(1)
    cfg = tiny().dit
    batch = make_batch(cfg)
    result = {}

    t0 = time.perf_counter()
    dense = build(cfg)
    initial = {k: v.clone() for k, v in dense.state_dict().items()}
    result["dense_losses"], result["dense_out"], dense_grads = train(dense, lambda: dit_step(dense, batch))
    dense_final = dense.state_dict()
    result["dense_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    mllm = DuoGenMLLM.build(tiny().mllm, seed=0).train()  # what DuoGenPair.build(tiny(), seed=0) holds
    example = stage1_example(mllm)
    result["mllm_example"] = {"tokens": len(example), "images": len(example.image_spans)}
    result["mllm_example"]["bov"] = len(example.bov_positions)
    mllm_initial = {k: v.clone() for k, v in mllm.model.state_dict().items()}
    result["mllm_dense_losses"], result["mllm_dense_out"], mllm_dense_grads, mllm_dense_final = run_mllm(
        mllm, example, mllm_initial, torch.float32
    )
    result["mllm_f64_dense_losses"], _, _, mllm_dense_final64 = run_mllm(
        mllm, example, mllm_initial, torch.float64
    )
    result["mllm_dense_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    state = init_distributed(tp=2)
    result["tp_state"] = {"tp_size": state.tp_size, "dp_size": state.dp_size, "tp_rank": state.tp_rank}
    model = build(cfg)
    model.load_state_dict(initial)
    parallelize_dit(model, 2)
    result["local_heads"] = model.transformer_blocks[0].attn1.heads
    result["layer_type"] = type(model.transformer_blocks[0].attn1.to_q).__name__
    result["local_q_shape"] = list(model.transformer_blocks[0].attn1.to_q.weight.shape)
    result["tp_losses"], result["tp_out"], tp_grads = train(model, lambda: dit_step(model, batch))
    result["tp_grad_max_relative_diff"] = max_relative_diff(gather_grads(model, tp_grads), dense_grads)
    full = gather_full_state_dict(model)
    result["tp_state_max_diff"] = max_diff(full, dense_final)
    result["tp_state_shapes_match"] = all(full[k].shape == v.shape for k, v in dense_final.items())
    result["tp_replicas_differing"] = replicate_check(model)
    load_full_state_dict(model, initial)  # a dense checkpoint loads back into the shards
    result["tp_reload_max_diff"] = max_diff(gather_full_state_dict(model), initial)
    if state.tp_rank == 1:  # a replica drifting on one rank is reported on every rank
        with torch.no_grad():
            model.transformer_blocks[0].attn1.norm_q.weight.add_(1e-3)
    result["tp_drift_detected"] = replicate_check(model)
    result["tp_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()  # the MLLM, same tp=2 groups: the dense initial weights, then sharded
    mllm.model.to(torch.float32)
    mllm.model.load_state_dict(mllm_initial)
    parallelize_mllm(mllm.model, 2)
    lm = mllm.model.model.language_model
    attn = lm.layers[0].self_attn
    result["mllm_layer_types"] = {
        name: type(lm.layers[0].get_submodule(name)).__name__
        for name in ("self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj")
    }
    result["mllm_vision_layer_type"] = type(mllm.model.model.visual.blocks[0].mlp.up_proj).__name__
    result["mllm_local_heads"] = [attn.num_heads, attn.num_key_value_heads, attn.num_key_value_groups]
    result["mllm_local_shapes"] = {
        n: list(p.shape) for n, p in attn.named_parameters() if n.startswith(("q_proj", "k_proj"))
    }
    result["mllm_tp_losses"], result["mllm_tp_out"], tp_grads, full = run_mllm(
        mllm, example, mllm_initial, torch.float32
    )
    result["mllm_tp_grad_max_relative_diff"] = max_relative_diff(tp_grads, mllm_dense_grads)
    result["mllm_tp_state_max_diff"] = max_diff(full, mllm_dense_final)
    result["mllm_tp_state_shapes_match"] = all(full[k].shape == v.shape for k, v in mllm_dense_final.items())
    result["mllm_tp_replicas_differing"] = replicate_check(mllm.model)
    result["mllm_f64_tp_losses"], _, _, full = run_mllm(mllm, example, mllm_initial, torch.float64)
    result["mllm_f64_tp_state_max_diff"] = max_diff(full, mllm_dense_final64)
    load_full_state_dict(mllm.model, mllm_initial)
    result["mllm_tp_reload_max_diff"] = max_diff(gather_full_state_dict(mllm.model), mllm_initial)
    result["mllm_tp_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    state = init_distributed(tp=1)
    result["dp_state"] = {"tp_size": state.tp_size, "dp_size": state.dp_size}
    model = build(cfg)
    model.load_state_dict(initial)
    ddp = wrap_data_parallel(model, state.dp_group)
    result["dp_wrapper"] = type(ddp).__name__
    result["dp_losses"], _, _ = train(ddp, lambda: dit_step(ddp, batch))
    result["dp_state_max_diff"] = max_diff(gather_full_state_dict(ddp), dense_final)
    result["dp_seconds"] = time.perf_counter() - t0

    if state.rank == 0:
        with open(out_path, "w") as f:
            json.dump(result, f, indent=2)
    shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1])
