"""GenEval-style text-to-image on the toy world: prompts cover every category, the scorer accepts exactly
the scenes a prompt asks for, the detector is a plug-in, and `duogen eval t2i` writes its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from duogen.components.evaluation.t2i import CATEGORIES, evaluate_t2i, make_prompts, score
from duogen.components.toyworld import Shape, find_shapes, render
from duogen.components.toyworld.world import Scene

DUOGEN = str(Path(sys.executable).parent / "duogen")


def shape(kind, colour="red", x=20, y=20):
    return Shape(kind, colour, x, y, 12)


def test_prompts_cover_every_category_reproducibly():
    items = make_prompts(3, seed=1)
    assert [i["category"] for i in items] == [c for c in CATEGORIES for _ in range(3)]
    assert items == make_prompts(3, seed=1) and items != make_prompts(3, seed=2)


@pytest.mark.parametrize(
    ("item", "good", "bad"),
    [
        ({"objects": [("circle", None, 1)]}, [shape("circle")], [shape("circle"), shape("square", x=45)]),
        (
            {"objects": [("circle", None, 1), ("square", None, 1)]},
            [shape("circle"), shape("square", x=45)],
            [shape("circle"), shape("circle", x=45)],
        ),
        (
            {"objects": [("triangle", None, 3)]},
            [shape("triangle", x=x) for x in (10, 30, 50)],
            [shape("triangle", x=x) for x in (10, 30)],
        ),
        ({"objects": [("circle", "blue", 1)]}, [shape("circle", "blue")], [shape("circle", "red")]),
        (
            {"objects": [("circle", "red", 1), ("square", "blue", 1)], "relation": "left of"},
            [shape("circle", x=10), shape("square", "blue", x=45)],
            [shape("circle", x=45), shape("square", "blue", x=10)],
        ),
        (
            {"objects": [("circle", "red", 1), ("square", "blue", 1)]},
            [shape("circle"), shape("square", "blue", x=45)],
            [shape("circle", "blue"), shape("square", "red", x=45)],
        ),
    ],
    ids=CATEGORIES,
)
def test_the_scorer_accepts_exactly_what_was_asked(item, good, bad):
    assert score(item, good) and not score(item, bad)


def test_the_detector_is_a_plug_in_and_reads_what_it_is_given():
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    pair = DuoGenPair.build(get_preset("tiny"), seed=0)
    items = make_prompts(1, seed=0)
    seen = []

    def detector(image):  # stands for a real detector: answers with the prompt's own scene, rendered and read
        item = items[len(seen)]
        seen.append(image.size)
        objects = [(k, c or "red", n) for k, c, n in item["objects"]]
        shapes, x = [], 10
        for kind, colour, n in objects:
            for _ in range(n):
                shapes.append(shape(kind, colour, x=x))
                x += 20
        return find_shapes(render(Scene(tuple(shapes), 64, 64)))

    result = evaluate_t2i(pair, items, detector=detector, size=(64, 48))
    assert seen == [(64, 48)] * len(items)  # every picture was drawn at the asked size and read
    correct = {r["category"]: r["correct"] for r in result["records"]}
    assert all(v for k, v in correct.items() if k != "position")  # a left-to-right layout of what was asked
    assert result["summary"]["overall"]["n"] == len(items)


def test_duogen_eval_t2i_writes_a_report(tmp_path):
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    DuoGenPair.build(get_preset("tiny"), seed=0).save_pretrained(tmp_path / "pair")
    out = subprocess.run(
        [
            DUOGEN,
            "eval",
            "t2i",
            "--model",
            str(tmp_path / "pair"),
            "--out",
            str(tmp_path / "eval"),
            "--per-category",
            "1",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(CATEGORIES) | {"overall"} <= set(line)
    assert len((tmp_path / "eval" / "records.jsonl").read_text().splitlines()) == len(CATEGORIES)
    assert (tmp_path / "eval" / "report.html").exists()
