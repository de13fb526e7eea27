"""Toy world: seeded tasks, validated actions, exact render/checker round trip, readable instructions."""

import io
import random

import numpy as np
import pytest
from PIL import Image

from duogen.components.toyworld import (
    Add,
    Move,
    Recolour,
    Remove,
    Resize,
    Scene,
    Shape,
    Swap,
    WorldConfig,
    apply,
    compare,
    describe,
    find_shapes,
    random_scene,
    random_task,
    render,
    scene_consistency,
    touched_indices,
)

CFG = WorldConfig()
RED_CIRCLE = Shape("circle", "red", 16, 16, 12)
BLUE_SQUARE = Shape("square", "blue", 44, 44, 20)
SCENE = Scene((RED_CIRCLE, BLUE_SQUARE), 64, 64)


def _jpeg(img, quality=85):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _noisy(img, sigma, seed):
    noise = np.random.default_rng(seed).normal(0, sigma, (img.height, img.width, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def test_same_seed_same_task_and_different_seeds_differ():
    assert random_task(7, CFG, steps=5) == random_task(7, CFG, steps=5)
    assert random_task(random.Random(7), CFG, 5) == random_task(7, CFG, 5)
    assert random_task(7, CFG, 5) != random_task(8, CFG, 5)
    assert np.array_equal(
        np.asarray(render(random_scene(random.Random(3), CFG))),
        np.asarray(render(random_scene(random.Random(3), CFG))),
    )


def test_random_tasks_are_valid_chains():
    for seed in range(50):
        task = random_task(seed, CFG, steps=4)
        assert len(task.actions) == 4 and len(task.scenes) == 5
        for before, action, after in zip(task.scenes[:-1], task.actions, task.scenes[1:], strict=True):
            assert apply(before, action, CFG) == after
            assert 1 <= len(after.shapes) <= CFG.max_shapes


def test_apply_each_action_kind():
    assert apply(SCENE, Move(0, "right")).shapes[0] == Shape("circle", "red", 24, 16, 12)
    assert apply(SCENE, Move(0, "down")).shapes[0].y == 24
    moved = apply(SCENE, Move(0, dx=3, dy=-2)).shapes[0]
    assert (moved.x, moved.y) == (19, 14)
    assert apply(SCENE, Recolour(1, "yellow")).shapes[1].colour == "yellow"
    added = apply(SCENE, Add(Shape("triangle", "green", 50, 10, 12)))
    assert len(added.shapes) == 3 and added.shapes[2].kind == "triangle"
    assert apply(SCENE, Remove(0)).shapes == (BLUE_SQUARE,)
    assert apply(SCENE, Resize(0, 20)).shapes[0].size == 20
    swapped = apply(SCENE, Swap(0, 1))
    assert (swapped.shapes[0].x, swapped.shapes[1].x) == (44, 16)
    assert SCENE.shapes == (RED_CIRCLE, BLUE_SQUARE)  # apply is pure
    assert touched_indices(Swap(0, 1)) == {0, 1} and touched_indices(Add(RED_CIRCLE)) == set()


@pytest.mark.parametrize(
    "action, message",
    [
        (Move(0, "left"), "off the 64x64 canvas"),
        (Move(5, "left"), "index 5 out of range"),
        (Move(0, "sideways"), "unknown direction"),
        (Move(1, dx=-20, dy=-20), "would overlap"),
        (Recolour(0, "red"), "already red"),
        (Recolour(0, "pink"), "unknown colour 'pink'"),
        (Add(Shape("circle", "red", 50, 10, 12)), r"colour\+kind must be unique"),
        (Add(Shape("hexagon", "red", 50, 10, 12)), "unknown kind"),
        (Remove(2), "out of range"),
        (Resize(0, 13), "size 13 px"),
        (Resize(0, 12), "already 12 px"),
        (Swap(1, 1), "with itself"),
    ],
)
def test_invalid_actions_raise_clear_errors(action, message):
    scene = Scene((Shape("circle", "red", 6, 16, 12), BLUE_SQUARE), 64, 64)
    with pytest.raises(ValueError, match=message):
        apply(scene, action)


def test_add_beyond_max_shapes_raises():
    full = random_scene(random.Random(0), CFG, n=CFG.max_shapes)
    with pytest.raises(ValueError, match="max_shapes=4"):
        apply(full, Add(Shape("circle", "red", 6, 6, 12)))


def test_render_is_exact_flat_colour():
    pixels = {tuple(p) for p in np.asarray(render(SCENE)).reshape(-1, 3)}
    assert pixels == {CFG.background, CFG.colours["red"], CFG.colours["blue"]}


def test_checker_recovers_200_scenes_clean_noisy_and_jpeg():
    clean, degraded = [], []
    for seed in range(200):
        scene = random_scene(random.Random(seed), CFG)
        image = render(scene)
        found = find_shapes(image, CFG)
        assert sorted(found, key=lambda s: s.name) == sorted(scene.shapes, key=lambda s: s.name)
        clean.append(compare(scene, found)["score"])
        for variant in (_noisy(image, 8, seed), _jpeg(image, 85)):
            degraded.append(compare(scene, find_shapes(variant, CFG))["score"])
    assert np.mean(clean) == 1.0
    assert np.mean(degraded) >= 0.95


def test_compare_and_consistency_catch_mistakes():
    after = apply(SCENE, Move(0, "right"))
    found = find_shapes(render(after))
    assert compare(after, found)["score"] == 1.0
    wrong = compare(SCENE, found)  # the circle is not where the old scene says
    assert wrong["score"] == 0.5 and not wrong["matches"][0]["position"] and wrong["matches"][0]["kind"]
    assert scene_consistency(SCENE, found, touched_indices(Move(0, "right")))["score"] == 1.0
    recoloured = find_shapes(render(apply(after, Recolour(1, "green"))))
    assert scene_consistency(SCENE, recoloured, {0}) == {"kept": {1: False}, "score": 0.0}
    assert compare(SCENE, [])["score"] == 0.0


def test_describe_gives_unique_readable_sentences():
    actions = [
        Move(0, "right"),
        Move(0, "up"),
        Move(1, dx=-4),
        Recolour(0, "blue"),
        Remove(1),
        Resize(0, 20),
        Swap(0, 1),
        Add(Shape("triangle", "green", 54, 10, 12)),
    ]
    sentences = [describe(a, SCENE) for a in actions]
    assert sentences[0] == "Move the red circle to the right."
    assert sentences[2] == "Move the blue square 4 pixels left."
    assert sentences[6] == "Swap the positions of the red circle and the blue square."
    assert sentences[7] == "Add a small green triangle at the top right."
    assert len(set(sentences)) == len(sentences)
    for seed in range(30):
        for text in random_task(seed, CFG, 4).instructions(CFG):
            assert text[0].isupper() and text.endswith(".") and "  " not in text


def test_random_task_draws_only_the_asked_action_kinds():
    for seed in range(20):
        task = random_task(seed, CFG, steps=3, kinds=("recolour", "remove"))
        assert {type(a) for a in task.actions} <= {Recolour, Remove}
    with pytest.raises(ValueError, match="paint"):
        random_task(0, CFG, kinds=("paint",))
    with pytest.raises(ValueError, match="choose one or more"):
        random_task(0, CFG, kinds=())
