"""GenEval-style text-to-image on the toy world: prompts by category, the pair draws one picture for each
(the answer starts with `<BOV>`), and a detector reads the picture back.

Categories, as GenEval defines them, on toy shapes (kinds: circle / square / triangle; the world's colours):
- `single_object`: "a circle": exactly one shape, of that kind.
- `two_objects`: "a circle and a square": exactly those two kinds.
- `counting`: "three squares": exactly N shapes, all of that kind.
- `colours`: "a red circle": exactly one shape, of that kind and colour.
- `position`: "a red circle to the left of a blue square": both, and the first left of (above, ...) the
  second by at least 4 px.
- `colour_attribution`: "a red circle and a blue square": both, each with its own colour.

The detector is the toy checker (`find_shapes`) by default; any callable image -> shapes (kind, colour, x,
y) plugs in (a real detector for real images).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from PIL import Image

from duogen.components.toyworld import Shape, WorldConfig, find_shapes
from duogen.model.generate import GenerationOptions, generate_answer

from .toyworld_judge import bootstrap_ci

CATEGORIES = ("single_object", "two_objects", "counting", "colours", "position", "colour_attribution")
NUMBERS = {2: "two", 3: "three"}
RELATIONS = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1), "below": (0, 1)}
Detector = Callable[[Image.Image], list[Shape]]


def _plural(kind: str) -> str:
    return kind + "s"


def make_prompts(per_category: int, seed: int = 0, cfg: WorldConfig | None = None) -> list[dict]:
    """`per_category` prompts of each category: {"category", "prompt", "objects", "relation"}."""
    cfg = cfg or WorldConfig()
    rng = random.Random(seed)
    colours, kinds = list(cfg.colours), list(cfg.kinds)
    out = []
    for category in CATEGORIES:
        for _ in range(per_category):
            a, b = rng.sample(kinds, 2)
            ca, cb = rng.sample(colours, 2)
            if category == "single_object":
                item = {"prompt": f"a {a}", "objects": [(a, None, 1)]}
            elif category == "two_objects":
                item = {"prompt": f"a {a} and a {b}", "objects": [(a, None, 1), (b, None, 1)]}
            elif category == "counting":
                n = rng.choice(list(NUMBERS))
                item = {"prompt": f"{NUMBERS[n]} {_plural(a)}", "objects": [(a, None, n)]}
            elif category == "colours":
                item = {"prompt": f"a {ca} {a}", "objects": [(a, ca, 1)]}
            elif category == "position":
                relation = rng.choice(list(RELATIONS))
                item = {
                    "prompt": f"a {ca} {a} {relation} a {cb} {b}",
                    "objects": [(a, ca, 1), (b, cb, 1)],
                    "relation": relation,
                }
            else:
                item = {"prompt": f"a {ca} {a} and a {cb} {b}", "objects": [(a, ca, 1), (b, cb, 1)]}
            out.append({"category": category, "relation": None} | item)
    return out


def _matches(shape: Shape, kind: str, colour: str | None) -> bool:
    return shape.kind == kind and (colour is None or shape.colour == colour)


def score(item: dict, shapes: list[Shape], min_offset: int = 4) -> bool:
    """Does the detected scene satisfy the prompt? Exactly the objects asked for, no others."""
    wanted = sum(n for _, _, n in item["objects"])
    if len(shapes) != wanted:
        return False
    placed = []
    for kind, colour, n in item["objects"]:
        found = [s for s in shapes if _matches(s, kind, colour)]
        if len(found) != n:
            return False
        placed.append(found[0])
    if item.get("relation"):
        dx, dy = RELATIONS[item["relation"]]
        first, second = placed
        offset = (first.x - second.x) * dx + (first.y - second.y) * dy
        return offset >= min_offset
    return True


def evaluate_t2i(
    pair,
    items: list[dict],
    detector: Detector | None = None,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
    progress=None,
) -> dict:
    """Draw each prompt once and score it: per-item records and per-category accuracy (95% intervals)."""
    detector = detector or find_shapes
    records = []
    for i, item in enumerate(items):
        options = GenerationOptions(
            max_new_tokens=1, max_images=1, force_bov=True, image_size=size, seed=seed + i
        )
        picture = generate_answer(pair, [{"role": "user", "content": item["prompt"]}], options).images[0]
        shapes = detector(picture)
        records.append(
            item
            | {
                "task": i,
                "correct": score(item, shapes),
                "detected": len(shapes),
                "parts": [picture],
                "request": item["prompt"],
                "answer": "[picture]",
            }
        )
        if progress is not None:
            progress(records[-1])
    summary = {}
    for category in [*CATEGORIES, "overall"]:
        values = [float(r["correct"]) for r in records if category in (r["category"], "overall")]
        if values:
            mean, low, high = bootstrap_ci(values)
            summary[category] = {
                "mean": round(mean, 4),
                "ci95": [round(low, 4), round(high, 4)],
                "n": len(values),
            }
    return {"summary": summary, "records": records}
