"""`duogen pretrain mllm|dit` as a user runs them, at CI size (a handful of steps, nothing learned): each
writes its part in its library's layout with a card and learning curve, resumes from its checkpoints, starts
from random weights (not the shipped part it makes), and the DiT keeps its text encoder (the preset's
shipped MLLM) frozen; two processes train data parallel through the same Trainer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from duogen.model.dit import DuoGenDiT
from duogen.model.mllm import DuoGenMLLM
from duogen.model.pair import DuoGenPair
from duogen.model.presets import get_preset
from duogen.model.pretrained import pretrained_dir

DUOGEN = str(Path(sys.executable).parent / "duogen")


def _run(part: str, out: Path, steps: int, *extra: str) -> dict:
    argv = [DUOGEN, "pretrain", part, "--out", str(out), "--steps", str(steps), "--batch-size", "2"]
    argv += ["--ckpt-every", "2", "--warmup-steps", "1", "--quiet", *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k].to(a[k].dtype)) for k in a)


@pytest.mark.slow  # a resumed pretraining run: .ci/run
def test_dit_pretraining_writes_its_card_and_curve_resumes_and_keeps_its_text_encoder(tmp_path):
    first = _run("dit", tmp_path, 4, "--eval-every", "2", "--eval-count", "3", "--nproc", "1")
    assert first["status"] == "finished" and list(first["curve"]) == ["2", "4"]
    dit_dir = Path(first["dit"])
    card = json.loads((dit_dir / "CARD.json").read_text())
    assert card["steps"] == 4 and card["command"].startswith("duogen pretrain dit --out")
    assert card["config"]["pos_embed"] is True and card["dialogues_seen"] == 8 and card["processes"] == 1
    final = card["final"]
    assert 0.0 <= final["instruction_following"] <= 1.0 and final["eval_edits"] == 3
    assert final["no_cfg"]["guidance_scale"] == 0.0 and final["dialogues"]["held_out_steps"] >= 1
    dit = DuoGenDiT.from_pretrained(dit_dir)  # diffusers layout: config.json + safetensors
    assert dit.config.extra_pos_embed_type == "learnable" and dit.learnable_pos_embed is not None
    init = DuoGenPair.from_pretrained(tmp_path / "init")
    shipped = load_file(str(pretrained_dir("dit", "toy") / "diffusion_pytorch_model.safetensors"))
    assert _changed(init.dit.state_dict(), shipped)  # a random start, not the shipped DiT
    trained = load_file(str(dit_dir / "diffusion_pytorch_model.safetensors"))
    assert _changed(init.dit.state_dict(), trained)  # it trained
    assert (dit_dir / "diffusion_pytorch_model.safetensors").stat().st_size < 20e6

    again = _run("dit", tmp_path, 6, "--eval-every", "2", "--eval-count", "3", "--nproc", "1")
    assert json.loads((dit_dir / "CARD.json").read_text())["steps"] == 6
    assert list(again["curve"]) == ["2", "4", "6"]  # the curve of the whole run, over both sessions
    assert again["curve"]["4"] == first["curve"]["4"]
    sessions = (tmp_path / "sessions.jsonl").read_text().splitlines()
    assert [json.loads(s)["steps"] for s in sessions] == [[0, 4], [4, 6]]  # resumed at step 4
    # the text encoder is the preset's shipped MLLM, and it stays what it was
    final_pair = DuoGenPair.from_pretrained(tmp_path / "train" / "model")
    toy = DuoGenPair.build(get_preset("toy"), seed=5).mllm.model.state_dict()
    assert not _changed(final_pair.mllm.model.state_dict(), toy)


def test_mllm_pretraining_writes_a_transformers_folder_with_its_card(tmp_path):
    result = _run("mllm", tmp_path, 2, "--eval-every", "2", "--eval-count", "1", "--nproc", "1")
    folder = Path(result["mllm"])
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    card = json.loads((folder / "CARD.json").read_text())
    assert card["command"].startswith("duogen pretrain mllm") and card["steps"] == 2
    forms = {k.removeprefix("t_com_") for k in card["final"] if k.startswith("t_com_")}
    assert forms == {"default", "picture-first", "wordings", "three-step"}
    mllm = DuoGenMLLM.from_pretrained(folder, get_preset("toy").mllm)  # loads into the toy preset's shape
    init = DuoGenPair.from_pretrained(tmp_path / "init")
    assert _changed(init.mllm.model.state_dict(), mllm.model.state_dict())
    shipped = DuoGenPair.build(get_preset("toy"), seed=0).mllm.model.state_dict()
    assert _changed(init.mllm.model.state_dict(), shipped)  # a random start, not the shipped MLLM


@pytest.mark.slow  # two torchrun processes: .ci/run
def test_two_processes_train_data_parallel(tmp_path):
    result = _run("dit", tmp_path, 2, "--eval-every", "0", "--eval-count", "2", "--nproc", "2")
    card = json.loads((Path(result["dit"]) / "CARD.json").read_text())
    assert card["processes"] == 2 and card["dialogues_seen"] == 2 * 2 * 2
