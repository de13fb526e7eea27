"""`duogen doctor gpu` (components/training/gpu_check.py) on a machine without a GPU: the refusal, the peak
table, the FLOP and MFU arithmetic (checked against the real modules' parameter counts), and every measuring
function run on the CPU with the tiny preset (the GPU figures themselves need a GPU node; see the README)."""

from __future__ import annotations

import pytest
import torch

from duogen.cli import main
from duogen.components.training import gpu_check as gc
from duogen.model.presets import tiny


def test_without_cuda_the_check_refuses_clearly(capsys):
    assert not torch.cuda.is_available()
    assert main(["doctor", "gpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device is visible" in err and "GPU node" in err


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-40GB", "A100 SXM 40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("Some Future GPU", None),
    ],
)
def test_known_gpus_are_found_by_their_device_names(name, expected):
    peak = gc.known_peak(name)
    assert (peak.name if peak else None) == expected


def test_flop_and_mfu_arithmetic():
    # 4 tokens through 100 parameters, 2 layers of width 8, context 16: 6N + 12 L d S per token
    assert gc.transformer_train_flops(100, 2, 8, 16, 4, causal=False) == 4 * (600 + 12 * 2 * 8 * 16)
    assert gc.transformer_train_flops(100, 2, 8, 16, 4, causal=True) == 4 * (600 + 12 * 2 * 8 * 8)
    assert gc.mfu(1e15, 2.0, 1000.0) == pytest.approx(0.5)
    h100 = gc.known_peak("NVIDIA H100 80GB HBM3")
    assert gc.decode_ceiling(15.2e9, h100.memory_tb_s) == pytest.approx(220.4, abs=0.1)  # 7.6B bf16 weights
    measured = {"stage1_mfu": 0.5, "stage2_mfu": 0.2, "image_768_seconds": 4.0, "fp8_speedup": None}
    assert gc.meets(measured) == {
        "stage1_mfu": True, "fp8_speedup": None, "stage2_mfu": False, "image_seconds": True,
        "decode_fraction_of_ceiling": None,
    }  # fmt: skip


def test_parameter_counts_match_the_real_modules():
    """The 6N term counts the modules' own parameters: the decoder-layer formula against transformers'
    Qwen2.5-VL layers, and the DiT's (connector excluded) against our DiT."""
    cfg = tiny()
    model = gc.language_stack(cfg.mllm, 2, torch.device("cpu"), torch.float32)
    layers = model.model.language_model.layers
    assert gc.mllm_layer_params(cfg.mllm, 2) == sum(p.numel() for p in layers.parameters())
    from duogen.model.dit import DuoGenDiT

    dit = DuoGenDiT(cfg.dit)
    connector = sum(p.numel() for p in dit.crossattn_proj.parameters())
    assert gc.dit_block_params(cfg.dit) == sum(p.numel() for p in dit.parameters()) - connector
    from duogen.model.presets import production

    big = production()
    assert 6.0e9 < gc.mllm_layer_params(big.mllm, 28) < 6.6e9  # Qwen2.5-VL-7B's decoder without embeddings


def test_every_measurement_runs_on_the_cpu_with_the_tiny_preset():
    cfg, cpu, f32 = tiny(), torch.device("cpu"), torch.float32
    dit = gc.measure_dit_training(cfg.dit, cpu, f32, (8, 8), samples=2, text_tokens=5, steps=1, flow=cfg.flow)
    ph, pw = cfg.dit.patch_size[1:]
    assert dit["tokens_per_s"] == pytest.approx(2 * 2 * (8 // ph) * (8 // pw) / dit["step_seconds"])
    assert dit["flops_per_step"] == gc.dit_train_flops(cfg.dit, 2 * (8 // ph) * (8 // pw), 2, 5)
    mllm = gc.measure_mllm_training(cfg.mllm, 1, cpu, f32, seq=32, steps=1)
    assert mllm["layers"] == 1 and mllm["tokens_per_s"] > 0
    decode = gc.measure_decode(cfg.mllm, cpu, f32, prompt=8, tokens=4)
    stack = gc.language_stack(cfg.mllm, cfg.mllm.num_hidden_layers, cpu, f32)
    expected = 4 * (
        sum(p.numel() for p in stack.model.language_model.parameters())
        - stack.model.language_model.embed_tokens.weight.numel()
        + stack.lm_head.weight.numel()
    )
    assert decode["weight_bytes"] == expected and decode["tokens_per_s"] > 0
    image = gc.measure_image(cfg, cpu, f32, size=64, steps=2)
    assert image["seconds"] > 0 and image["size"] == 64
