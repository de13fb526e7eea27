"""The embedded toy world (DESIGN.md section 5): coloured shapes on a small canvas, edit actions, a renderer
and a programmatic checker, so every stage of DuoGen can be exercised and judged on CPU without weights."""

from duogen.components.toyworld.checker import compare, find_shapes, scene_consistency
from duogen.components.toyworld.oracle import caption_image, caption_transition, infer_actions
from duogen.components.toyworld.pages import make_site
from duogen.components.toyworld.render import render
from duogen.components.toyworld.serialize import (
    action_from_json,
    action_to_json,
    scene_from_json,
    scene_to_json,
    task_from_json,
    task_to_json,
)
from duogen.components.toyworld.videos import make_videos
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
    "action_from_json",
    "action_to_json",
    "apply",
    "caption_image",
    "caption_transition",
    "compare",
    "describe",
    "find_shapes",
    "infer_actions",
    "make_site",
    "make_videos",
    "random_scene",
    "random_task",
    "render",
    "scene_consistency",
    "scene_from_json",
    "scene_to_json",
    "task_from_json",
    "task_to_json",
    "touched_indices",
]
