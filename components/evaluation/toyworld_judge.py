"""The toy-world judge: scores an answer the pair wrote and drew against the task's ground truth.

Metric names follow the paper's where they map; each is a fraction in [0, 1] per answer:

- **T-Com** (text completeness): the steps written match the task's steps. The answer's "Step k: ..."
  sentences are read in order and compared with the task's `describe()` sentences (case, spacing and the
  final full stop ignored; a swap may name its two shapes in either order, which is the same step);
  matched steps / max(task steps, written steps).
- **I-Com** (image completeness): a picture wherever a step needs one and none elsewhere. Steps followed by
  exactly one picture / (task steps + pictures beyond one per written step).
- **IT-Co** (image-text coherence): the picture carries out its step. The first picture after step k is read
  back with the toy checker and must match the truth scene after step k (every shape right and none extra;
  an added shape, which the text places only by region, must lie in that region); a missing picture is 0.
- **I-Co** (image consistency): untouched shapes keep kind, colour, size and place: `scene_consistency` of
  each step's picture against the scene before the step (mean over the pictures drawn; an answer without
  pictures has no I-Co and no I-Q, and summaries leave it out of those two means).
- **I-Q** (image quality): clean background and crisp shapes: the fraction of a picture's pixels within a
  small RGB distance of the palette (background or a shape colour); noise, halos and blends lower it.

Teacher-forced pictures (drawn on the reference history) are judged with the same `judge_step`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from duogen.components.toyworld import Add, Task, compare, find_shapes, scene_consistency, touched_indices
from duogen.components.toyworld.world import Scene, WorldConfig, region_name

METRICS = ("t_com", "i_com", "it_co", "i_co", "i_q")
STEP = re.compile(r"Step\s*(\d+)\s*:\s*")


def normalise(sentence: str) -> str:
    return " ".join(sentence.lower().split()).rstrip(".").strip()


SWAP = re.compile(r"swap the positions of (?:the )?(.+?) and (?:the )?(.+)")


def same_step(written: str, expected: str) -> bool:
    """The written sentence states the expected step: the same words, or the same swap in either order."""
    w, e = normalise(written), normalise(expected)
    if w == e:
        return True
    ws, es = SWAP.fullmatch(w), SWAP.fullmatch(e)
    return bool(ws and es) and sorted(ws.groups()) == sorted(es.groups())


def judge_step(before: Scene, after: Scene, action, found, cfg: WorldConfig) -> tuple[bool, bool, float]:
    """(instruction followed, strictly followed, consistency) of one drawn picture against the truth."""
    strict = compare(after, found)
    strict_ok = strict["score"] == 1.0 and not strict["extra"]
    if isinstance(action, Add):
        new = action.shape
        rest = type(after)(tuple(s for s in after.shapes if s != new), after.width, after.height)
        result = compare(rest, found)
        extra = result["extra"]
        region = region_name(new.x, new.y, after.width, after.height)
        ok = (
            result["score"] == 1.0
            and len(extra) == 1
            and (extra[0].kind, extra[0].colour, extra[0].size) == (new.kind, new.colour, new.size)
            and region_name(extra[0].x, extra[0].y, after.width, after.height) == region
        )
    else:
        ok = strict_ok
    consistency = scene_consistency(before, found, touched_indices(action))["score"]
    return ok, strict_ok, consistency


def image_quality(image: Image.Image, cfg: WorldConfig, tol: float = 40.0) -> float:
    """Fraction of pixels within `tol` (RGB distance) of the background or a palette colour."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    palette = np.array([*cfg.colours.values(), cfg.background], dtype=np.float32)
    dist = np.linalg.norm(arr[:, :, None, :] - palette[None, None], axis=-1).min(-1)
    return float((dist < tol).mean())


@dataclass
class WrittenStep:
    sentence: str
    pictures: list[Image.Image] = field(default_factory=list)


def read_answer(parts: list) -> tuple[list[WrittenStep], int]:
    """The answer's "Step k:" sentences with the pictures that follow each, and the pictures before any step.

    `parts` is the answer in order: text (str) and pictures (PIL images), as the generation loop yields them.
    """
    steps: list[WrittenStep] = []
    leading = 0
    for part in parts:
        if isinstance(part, Image.Image):
            if steps:
                steps[-1].pictures.append(part)
            else:
                leading += 1
            continue
        pieces = STEP.split(part)  # [before, number, sentence, number, sentence, ...]
        if steps and pieces[0].strip() and not steps[-1].pictures:
            steps[-1].sentence += pieces[0]  # the sentence went on in this text part
        for k in range(2, len(pieces), 2):
            steps.append(WrittenStep(pieces[k]))
    return steps, leading


def judge_answer(task: Task, parts: list, cfg: WorldConfig | None = None) -> dict:
    """The five metrics of one free-running answer to `task` (plus per-step detail)."""
    cfg = cfg or WorldConfig()
    expected = task.instructions(cfg)
    written, leading = read_answer(parts)
    matched = sum(same_step(w.sentence, e) for w, e in zip(written, expected, strict=False))
    t_com = matched / max(len(expected), len(written), 1)
    extra = leading + sum(max(0, len(w.pictures) - 1) for w in written)
    extra += sum(len(w.pictures) for w in written[len(expected) :])
    complete = sum(len(w.pictures) == 1 for w in written[: len(expected)])
    i_com = complete / (len(expected) + extra)
    followed, consistent, quality = [], [], []
    for k, action in enumerate(task.actions):
        picture = written[k].pictures[0] if k < len(written) and written[k].pictures else None
        if picture is None:
            followed.append(False)
            continue
        found = find_shapes(picture, cfg)
        ok, _, kept = judge_step(task.scenes[k], task.scenes[k + 1], action, found, cfg)
        followed.append(ok)
        consistent.append(kept)
        quality.append(image_quality(picture, cfg))
    return {
        "t_com": t_com,
        "i_com": i_com,
        "it_co": sum(followed) / len(followed) if followed else 0.0,
        "i_co": float(np.mean(consistent)) if consistent else None,  # no picture: nothing to judge
        "i_q": float(np.mean(quality)) if quality else None,
        "steps": len(expected),
        "written_steps": len(written),
        "pictures_drawn": leading + sum(len(w.pictures) for w in written),
    }


def bootstrap_ci(
    values, samples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): a percentile bootstrap interval of the mean."""
    data = np.asarray(list(values), dtype=np.float64)
    if data.size == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(data.mean()), float(low), float(high)


def summarise(records: list[dict], metrics=METRICS) -> dict:
    """Per metric: mean with its 95% bootstrap interval over the answers that have it (`n`)."""
    out = {}
    for name in metrics:
        values = [r[name] for r in records if r[name] is not None]
        mean, low, high = bootstrap_ci(values)
        out[name] = {"mean": round(mean, 4), "ci95": [round(low, 4), round(high, 4)], "n": len(values)}
    return out
