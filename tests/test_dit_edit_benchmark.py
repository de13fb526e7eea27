"""The DiT edit-learning benchmark as a user runs it (a few steps, so it stays a few seconds)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "benchmarks" / "dit_edit_learning.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_prints_one_json_line_with_its_figures():
    res = run("--steps", "3", "--eval-edits", "4", "--kinds", "recolour,remove")
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["edits_seen"] == 12 and result["eval_edits"] == 4
    assert set(result["following_by_action"]) <= {"recolour", "remove"}
    assert 0.0 <= result["instruction_following"] <= 1.0
    # three steps teach nothing: the one-step picture is about as far from the edit as copying is
    assert 0.5 < result["edit_error_vs_copy"] < 2.0


@pytest.mark.slow  # the shipped DiT on 48 held-out edits: .ci/run
def test_the_shipped_pretrained_dit_carries_out_edits_with_its_own_text_encoder():
    """`--pretrained`: no training; the package's DiT judged on held-out edits. A random or copying DiT
    scores ~1 or more on edit error (the scratch run above: 0.5-2) and follows none."""
    res = run("--pretrained", "--eval-edits", "12")
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["eval_edits"] == 12 and result["card"]["command"].startswith("duogen pretrain dit")
    assert result["edit_error_vs_copy"] < 0.7
    assert max(result["instruction_following"], result["no_cfg"]["instruction_following"]) >= 2 / 12
    assert result["consistency"] >= 0.8


def test_unknown_action_kind_is_named():
    res = run("--kinds", "recolour,paint")
    assert res.returncode == 2
    assert "paint" in res.stderr and "recolour" in res.stderr


def test_oracle_stream_is_one_fixed_vector_per_slot(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from dit_edit_learning import oracle_stream

    from duogen.components.toyworld import Recolour, Scene, Shape, Task, WorldConfig

    world = WorldConfig()
    square = Shape("square", "green", 20, 20, 12)
    circle = Shape("circle", "red", 44, 44, 12)
    scene = Scene((square, circle))

    def stream(index, colour):
        return oracle_stream(Task((scene, scene), (Recolour(index, colour),)), world, 16)

    a, b, c = stream(0, "purple"), stream(0, "purple"), stream(1, "purple")
    assert a.shape == (4, 16)  # action, colour, kind, new colour
    assert a.equal(b)
    assert a[0].equal(c[0]) and a[3].equal(c[3]) and not a[1].equal(c[1])  # only the named shape differs
