"""The toy world's offline "MLLM": captions images and transitions from what the checker sees.

Everything is derived from `find_shapes` on the pixels (never from hidden ground truth), so it behaves like a
perfect but honest captioner: a transition caption is the very sentence `describe()` gives for the inferred
action, which lets data-engine stages be scored exactly against the toy world's ground truth.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from duogen.components.toyworld.checker import find_shapes
from duogen.components.toyworld.world import (
    DIRECTIONS,
    Action,
    Add,
    Move,
    Recolour,
    Remove,
    Resize,
    Scene,
    Shape,
    Swap,
    WorldConfig,
    describe,
    region_name,
)


def _canvas(image: Image.Image | np.ndarray, cfg: WorldConfig) -> Image.Image:
    """RGB image at the world's canvas size (video frames are upscaled; shrink them back first)."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    img = img.convert("RGB")
    if img.size != (cfg.width, cfg.height):
        img = img.resize((cfg.width, cfg.height), Image.Resampling.BOX)
    return img


def shapes_in(image: Image.Image | np.ndarray, cfg: WorldConfig | None = None) -> list[Shape]:
    """The checker's shapes of an image of any size (rescaled to the canvas), one per colour+kind name."""
    cfg = cfg or WorldConfig()
    by_name: dict[str, Shape] = {}
    for s in find_shapes(_canvas(image, cfg), cfg):
        by_name.setdefault(s.name, s)  # names are unique in a valid scene; keep the first (top-most)
    return list(by_name.values())


def _where(s: Shape, cfg: WorldConfig) -> str:
    region = region_name(s.x, s.y, cfg.width, cfg.height)
    return "in the centre" if region == "centre" else f"at the {region}"


def caption_image(image: Image.Image | np.ndarray, cfg: WorldConfig | None = None) -> str:
    """E.g. "A small red circle at the top left and a large blue square in the centre." """
    cfg = cfg or WorldConfig()
    shapes = shapes_in(image, cfg)
    if not shapes:
        return "An empty canvas."
    parts = [f"a {cfg.size_name(s.size)} {s.colour} {s.kind} {_where(s, cfg)}" for s in shapes]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:] + "."


def _move(index: int, dx: int, dy: int, cfg: WorldConfig) -> Move:
    for name, (ux, uy) in DIRECTIONS.items():
        if abs(dx - ux * cfg.step) <= 1 and abs(dy - uy * cfg.step) <= 1:
            return Move(index, name)
    return Move(index, None, dx, dy)


def infer_actions(before: list[Shape], after: list[Shape], cfg: WorldConfig | None = None) -> list[Action]:
    """Actions (indices into `before`) that turn the `before` shapes into the `after` shapes; [] if equal.

    Matching is by name (colour + kind, unique in a scene): a name that moved/resized is a Move/Resize, two
    names that exchanged places are a Swap, one vanished name replaced by one new name of the same kind at the
    same place is a Recolour, and the rest are Remove/Add.
    """
    cfg = cfg or WorldConfig()
    tol = 2
    a = {s.name: i for i, s in enumerate(before)}
    b = {s.name: s for s in after}
    gone = [n for n in a if n not in b]
    new = [n for n in b if n not in a]
    changed = [
        n
        for n in a
        if n in b
        and (
            abs(before[a[n]].x - b[n].x) > tol
            or abs(before[a[n]].y - b[n].y) > tol
            or before[a[n]].size != b[n].size
        )
    ]
    actions: list[Action] = []
    if len(changed) == 2:
        p, q = before[a[changed[0]]], before[a[changed[1]]]
        p2, q2 = b[changed[0]], b[changed[1]]
        if max(abs(p2.x - q.x), abs(p2.y - q.y), abs(q2.x - p.x), abs(q2.y - p.y)) <= tol:
            actions.append(Swap(a[changed[0]], a[changed[1]]))
            changed = []
    for n in changed:
        s, t = before[a[n]], b[n]
        if s.size != t.size:
            actions.append(Resize(a[n], t.size))
        if abs(s.x - t.x) > tol or abs(s.y - t.y) > tol:
            actions.append(_move(a[n], t.x - s.x, t.y - s.y, cfg))
    for g in list(gone):
        s = before[a[g]]
        twin = next(
            (n for n in new if b[n].kind == s.kind and abs(b[n].x - s.x) <= tol and abs(b[n].y - s.y) <= tol),
            None,
        )
        if twin is not None:
            actions.append(Recolour(a[g], b[twin].colour))
            gone.remove(g)
            new.remove(twin)
    actions += [Remove(a[g]) for g in gone]
    actions += [Add(b[n]) for n in new]
    return actions


def caption_transition(
    first: Image.Image | np.ndarray, last: Image.Image | np.ndarray, cfg: WorldConfig | None = None
) -> str:
    """The instruction that turns `first` into `last`, worded exactly as `describe()` words it.

    Several simultaneous changes give one sentence each, space-joined; no visible change gives
    "Nothing changes."
    """
    cfg = cfg or WorldConfig()
    before = shapes_in(first, cfg)
    after = shapes_in(last, cfg)
    actions = infer_actions(before, after, cfg)
    if not actions:
        return "Nothing changes."
    scene = Scene(tuple(before), cfg.width, cfg.height)
    texts = []
    for act in actions:
        try:
            texts.append(describe(act, scene, cfg))
        except ValueError:  # e.g. an added shape whose detected size is not in the vocabulary
            continue
    return " ".join(texts) if texts else "Nothing changes."
