"""Tensor/data parallelism of the DiT: TP=2 on gloo equals the dense model, step for step (2 processes)."""

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from duogen.components.training import parallelize as par
from duogen.model.dit import DuoGenDiT
from duogen.model.presets import tiny
from duogen.platform.launch import torchrun

WORKER = Path(__file__).with_name("tp_worker.py")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The worker under torchrun with 2 processes: dense, TP=2 and DP=2 runs of the tiny DiT."""
    out = tmp_path_factory.mktemp("tp") / "result.json"
    start = time.perf_counter()
    proc = torchrun([str(WORKER), str(out)], nproc=2, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    result["wall_seconds"] = time.perf_counter() - start
    return result


def test_tp2_losses_equal_tp1_for_three_steps(run):
    assert run["tp_state"] == {"tp_size": 2, "dp_size": 1, "tp_rank": 0}
    assert run["layer_type"] == "MegatronColumnLinear"
    assert run["local_heads"] == tiny().dit.num_attention_heads // 2
    assert len(run["tp_losses"]) == len(run["dense_losses"]) == 3
    assert run["dense_losses"][2] < run["dense_losses"][0]  # the steps do move the model
    for tp, dense in zip(run["tp_losses"], run["dense_losses"], strict=True):
        assert abs(tp - dense) <= 1e-5
    for tp, dense in zip(run["tp_out"], run["dense_out"], strict=True):
        assert abs(tp - dense) <= 1e-5


def test_tp2_gradients_and_weights_match_dense(run):
    assert run["tp_grad_max_relative_diff"] <= 1e-5
    assert run["tp_state_shapes_match"]
    assert run["tp_state_max_diff"] <= 1e-5  # the reassembled diffusers-layout state dict after 3 steps
    assert run["tp_replicas_differing"] == []  # replicated weights stay identical on both TP ranks
    assert run["tp_drift_detected"] == ["transformer_blocks.0.attn1.norm_q.weight"]
    assert run["tp_reload_max_diff"] == 0.0  # load_full_state_dict puts a dense state dict back into shards


def test_dp2_with_ddp_matches_dense(run):
    assert run["dp_state"] == {"tp_size": 1, "dp_size": 2}
    assert run["dp_wrapper"] == "DistributedDataParallel"
    for dp, dense in zip(run["dp_losses"], run["dense_losses"], strict=True):
        assert abs(dp - dense) <= 1e-5
    assert run["dp_state_max_diff"] <= 1e-5


# --- single process --------------------------------------------------------------------------------------
@pytest.fixture
def dit():
    torch.manual_seed(0)
    return DuoGenDiT(tiny().dit)


def test_tp1_is_a_no_op(dit):
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    assert par.parallelize_dit(dit, 1, use_te=False) is dit
    assert isinstance(dit.transformer_blocks[0].attn1.to_q, nn.Linear)
    assert dit.transformer_blocks[0].attn1.heads == tiny().dit.num_attention_heads
    assert not hasattr(dit, "tensor_parallel")
    after = dit.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert par.gather_full_state_dict(dit).keys() == before.keys()


def test_heads_not_divisible_by_tp_is_a_clear_error(dit):
    with pytest.raises(ValueError, match="2 attention heads over 3 tensor-parallel ranks"):
        par.parallelize_dit(dit, 3, use_te=False)
    assert isinstance(dit.transformer_blocks[0].attn1.to_q, nn.Linear)  # untouched


def test_tp2_without_distributed_says_what_to_do(dit):
    with pytest.raises(RuntimeError, match="init_distributed"):
        par.parallelize_dit(dit, 2, use_te=False)


def test_fp8_without_transformer_engine(dit):
    assert not par.te_available()  # CPU machine: TE is GPU-image-only
    with pytest.raises(ValueError, match="unknown FP8 recipe"):
        par.fp8_recipe("fp4")
    with pytest.raises(RuntimeError, match="Transformer Engine"):
        par.fp8_recipe("delayed")
    with pytest.warns(UserWarning, match="FP8 recipe 'delayed' ignored"):
        par.parallelize_dit(dit, 1, fp8="delayed")
    with par.fp8_autocast(dit):  # a no-op context without TE layers
        pass
