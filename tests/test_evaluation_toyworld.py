"""The toy-world judge: it reads answers as written, scores exact and spoiled answers as the metrics define,
its intervals hold the mean, the planted-answer benchmark agrees with the truth, and `duogen eval toyworld`
writes a report and logs it to MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from duogen.components.evaluation.toyworld_eval import held_out_tasks, task_request
from duogen.components.evaluation.toyworld_judge import bootstrap_ci, judge_answer, read_answer, summarise
from duogen.components.toyworld import render

ROOT = Path(__file__).resolve().parents[1]
DUOGEN = str(Path(sys.executable).parent / "duogen")


@pytest.fixture(scope="module")
def task():
    return held_out_tasks(1, steps=3, seed=5)[0]


def exact(task) -> list:
    parts = []
    for k, sentence in enumerate(task.instructions()):
        parts += [f"Step {k + 1}: {sentence} ", render(task.scenes[k + 1])]
    return parts


def test_answers_are_read_as_written(task):
    pictures = [render(s) for s in task.scenes]
    steps, leading = read_answer([pictures[0], "Sure. Step 1: Do a. ", pictures[1], pictures[2], "Step 2: b"])
    assert leading == 1
    assert [s.sentence.strip() for s in steps] == ["Do a.", "b"]
    assert [len(s.pictures) for s in steps] == [2, 0]


def test_an_exact_answer_scores_one_everywhere(task):
    scores = judge_answer(task, exact(task))
    assert {k: scores[k] for k in ("t_com", "i_com", "it_co", "i_co", "i_q")} == dict.fromkeys(
        ("t_com", "i_com", "it_co", "i_co", "i_q"), 1.0
    )
    assert scores["pictures_drawn"] == scores["steps"] == 3


def test_spoiled_answers_lose_exactly_what_they_spoil(task):
    parts = exact(task)
    no_picture = judge_answer(task, parts[:3] + parts[4:])  # step 2 without its picture
    assert no_picture["i_com"] == pytest.approx(2 / 3) and no_picture["it_co"] == pytest.approx(2 / 3)
    assert no_picture["t_com"] == 1.0
    garbled = judge_answer(task, ["Step 1: the the the triangle ", *parts[1:]])
    assert garbled["t_com"] == pytest.approx(2 / 3) and garbled["i_com"] == 1.0
    not_done = judge_answer(task, [parts[0], render(task.scenes[0]), *parts[2:]])
    assert not_done["it_co"] == pytest.approx(2 / 3) and not_done["i_co"] == 1.0
    extra = judge_answer(task, [*parts, "Step 4: Admire it. ", parts[-1]])
    assert extra["t_com"] == pytest.approx(3 / 4) and extra["i_com"] == pytest.approx(3 / 4)
    gibberish = judge_answer(task, ["the the thenghengh triangle"])
    assert gibberish["t_com"] == gibberish["i_com"] == gibberish["it_co"] == 0.0
    assert gibberish["i_co"] is None and gibberish["i_q"] is None  # nothing drawn, nothing to judge


def test_a_swap_may_name_its_shapes_in_either_order():
    from duogen.components.evaluation.toyworld_judge import same_step

    expected = "Swap the positions of the yellow square and the yellow circle."
    assert same_step("swap the positions of the yellow circle and the yellow square", expected)
    assert not same_step("Swap the positions of the yellow circle and the yellow circle.", expected)
    assert not same_step("Swap the positions of the red circle and the yellow square.", expected)
    assert not same_step("Move the yellow circle up.", "Move the yellow square up.")


def test_bootstrap_interval_holds_the_mean():
    mean, low, high = bootstrap_ci([0, 1] * 20)
    assert mean == 0.5 and low < 0.5 < high and high - low < 0.5
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0, 1.0)
    summary = summarise(
        [{"t_com": 1.0, "i_co": None}, {"t_com": 0.0, "i_co": 0.5}], metrics=("t_com", "i_co")
    )
    assert summary["t_com"]["mean"] == 0.5 and summary["t_com"]["n"] == 2
    assert summary["i_co"]["mean"] == 0.5 and summary["i_co"]["n"] == 1


def test_the_request_names_every_step_then_shows_the_start(task):
    content = task_request(task)[0]["content"]
    assert content[0]["type"] == "text" and content[1]["type"] == "image"
    for sentence in task.instructions():
        assert sentence[1:].rstrip(".").lower() in content[0]["text"].lower()
    assert np.array_equal(np.asarray(content[1]["image"]), np.asarray(render(task.scenes[0])))


def test_the_judge_agrees_with_planted_truth():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "benchmarks" / "eval_judge.py"), "--tasks", "12"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["judge_agreement"] >= 0.98 and result["samples"] >= 60


def test_duogen_eval_toyworld_writes_a_report_and_logs_it(tmp_path):
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    DuoGenPair.build(get_preset("tiny"), seed=0).save_pretrained(tmp_path / "pair")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run(
        [
            DUOGEN,
            "eval",
            "toyworld",
            "--model",
            str(tmp_path / "pair"),
            "--out",
            str(tmp_path / "eval"),
            "--tasks",
            "2",
            "--max-new-tokens",
            "24",
            "--tracking-uri",
            uri,
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("report.html", "report.md", "metrics.png", "records.jsonl"):
        assert (tmp_path / "eval" / name).exists(), name
    records = [json.loads(r) for r in (tmp_path / "eval" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["steps"] == 2 for r in records)
    import mlflow

    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(line["mlflow_run"])
    assert run.data.metrics["t_com"] == line["t_com"]
    assert {"i_com", "it_co", "i_co", "i_q", "t_com_ci_low"} <= set(run.data.metrics)
