"""JSON forms of scenes, actions and tasks, so ground-truth files can be replayed exactly by a checker."""

from __future__ import annotations

from typing import Any

from duogen.components.toyworld.world import (
    Action,
    Add,
    Move,
    Recolour,
    Remove,
    Resize,
    Scene,
    Shape,
    Swap,
    Task,
)


def shape_to_json(s: Shape) -> dict[str, Any]:
    return {"kind": s.kind, "colour": s.colour, "x": s.x, "y": s.y, "size": s.size}


def shape_from_json(d: dict[str, Any]) -> Shape:
    return Shape(str(d["kind"]), str(d["colour"]), int(d["x"]), int(d["y"]), int(d["size"]))


def scene_to_json(scene: Scene) -> dict[str, Any]:
    return {
        "width": scene.width,
        "height": scene.height,
        "shapes": [shape_to_json(s) for s in scene.shapes],
    }


def scene_from_json(d: dict[str, Any]) -> Scene:
    return Scene(tuple(shape_from_json(s) for s in d["shapes"]), int(d["width"]), int(d["height"]))


def action_to_json(a: Action) -> dict[str, Any]:
    if isinstance(a, Move):
        return {"type": "move", "index": a.index, "direction": a.direction, "dx": a.dx, "dy": a.dy}
    if isinstance(a, Recolour):
        return {"type": "recolour", "index": a.index, "colour": a.colour}
    if isinstance(a, Add):
        return {"type": "add", "shape": shape_to_json(a.shape)}
    if isinstance(a, Remove):
        return {"type": "remove", "index": a.index}
    if isinstance(a, Resize):
        return {"type": "resize", "index": a.index, "size": a.size}
    if isinstance(a, Swap):
        return {"type": "swap", "i": a.i, "j": a.j}
    raise ValueError(f"unknown action {a!r}")


def action_from_json(d: dict[str, Any]) -> Action:
    kind = d.get("type")
    if kind == "move":
        return Move(int(d["index"]), d.get("direction"), int(d.get("dx", 0)), int(d.get("dy", 0)))
    if kind == "recolour":
        return Recolour(int(d["index"]), str(d["colour"]))
    if kind == "add":
        return Add(shape_from_json(d["shape"]))
    if kind == "remove":
        return Remove(int(d["index"]))
    if kind == "resize":
        return Resize(int(d["index"]), int(d["size"]))
    if kind == "swap":
        return Swap(int(d["i"]), int(d["j"]))
    raise ValueError(f"unknown action type {kind!r}; expected move/recolour/add/remove/resize/swap")


def task_to_json(task: Task) -> dict[str, Any]:
    return {
        "scenes": [scene_to_json(s) for s in task.scenes],
        "actions": [action_to_json(a) for a in task.actions],
    }


def task_from_json(d: dict[str, Any]) -> Task:
    return Task(
        tuple(scene_from_json(s) for s in d["scenes"]), tuple(action_from_json(a) for a in d["actions"])
    )
