"""The embedded toy world (DESIGN.md section 5): coloured shapes on a small canvas, edit actions, a renderer
and a programmatic checker, so every stage of DuoGen can be exercised and judged on CPU without weights."""

from duogen.components.toyworld.checker import compare, find_shapes, scene_consistency
from duogen.components.toyworld.render import render
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
    WorldConfig,
    apply,
    describe,
    random_scene,
    random_task,
    touched_indices,
)

__all__ = [
    "Action",
    "Add",
    "Move",
    "Recolour",
    "Remove",
    "Resize",
    "Scene",
    "Shape",
    "Swap",
    "Task",
    "WorldConfig",
    "apply",
    "compare",
    "describe",
    "find_shapes",
    "random_scene",
    "random_task",
    "render",
    "scene_consistency",
    "touched_indices",
]
