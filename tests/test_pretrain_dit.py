"""`duogen pretrain dit`: the toy DiT pretrained on fresh toy-world edits with Stage 2's loop, at CI size (a
handful of steps, nothing learned): it writes a diffusers-layout DiT with its card and learning curve, resumes
from its checkpoints, starts from random weights (not the shipped DiT it makes) and keeps the text encoder
fixed (the untrained MLLM at the seed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from duogen.model.dit import DuoGenDiT
from duogen.model.pair import DuoGenPair
from duogen.model.pretrained import pretrained_dit_dir

DUOGEN = str(Path(sys.executable).parent / "duogen")
SMALL = ["--eval-edits", "3", "--batch-size", "2", "--ckpt-every", "2", "--quiet"]


def _run(out: Path, steps: int, eval_every: int) -> dict:
    argv = [
        DUOGEN,
        "pretrain",
        "dit",
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--eval-every",
        str(eval_every),
    ]
    proc = subprocess.run(argv + SMALL, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pretraining_writes_the_dit_its_card_and_curve_and_resumes(tmp_path):
    first = _run(tmp_path, steps=4, eval_every=2)
    assert first["status"] == "finished" and list(first["curve"]) == ["2", "4"]
    dit_dir = Path(first["dit"])
    card = json.loads((dit_dir / "CARD.json").read_text())
    assert card["steps"] == 4 and card["command"].startswith("duogen pretrain dit --out")
    assert card["config"]["pos_embed"] is True and card["edits_seen"] == 8
    assert 0.0 <= card["instruction_following"] <= 1.0 and card["curve"]["4"]["eval_edits"] == 3
    assert card["curve"]["4"]["no_cfg"]["guidance_scale"] == 0.0
    dit = DuoGenDiT.from_pretrained(dit_dir)  # diffusers layout: config.json + safetensors
    assert dit.config.extra_pos_embed_type == "learnable" and dit.learnable_pos_embed is not None
    init = DuoGenPair.from_pretrained(tmp_path / "init")
    shipped = load_file(str(pretrained_dit_dir("toy") / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(shipped[k], v) for k, v in init.dit.state_dict().items())  # random start
    trained = load_file(str(dit_dir / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(trained[k], v) for k, v in init.dit.state_dict().items())  # it trained
    assert (dit_dir / "diffusion_pytorch_model.safetensors").stat().st_size < 20e6

    again = _run(tmp_path, steps=6, eval_every=2)  # the same OUT, more steps: resumes at step 4
    assert list(again["curve"]) == ["6"] and json.loads((dit_dir / "CARD.json").read_text())["steps"] == 6
    log = (tmp_path / "train" / "checkpoints" / "latest").read_text()
    assert "6" in log
    # the text encoder stays what it was: the MLLM weights of the pair that trained are the initial ones
    final = DuoGenPair.from_pretrained(tmp_path / "train" / "model")
    for k, v in init.mllm.model.state_dict().items():
        assert torch.equal(final.mllm.model.state_dict()[k], v), k
