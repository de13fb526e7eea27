"""Toy-world oracle: image captions and transition captions inferred from pixels match describe()."""

import io
import random

from PIL import Image

from duogen.components.toyworld import (
    Move,
    Scene,
    Shape,
    Swap,
    WorldConfig,
    apply,
    caption_image,
    caption_transition,
    describe,
    random_task,
    render,
)

CFG = WorldConfig()
SCENE = Scene((Shape("circle", "red", 10, 10, 12), Shape("square", "blue", 32, 32, 20)), 64, 64)


def test_transition_caption_matches_describe_on_random_single_steps():
    hits, misses = 0, []
    for seed in range(100):
        task = random_task(seed, CFG, steps=1)
        want = describe(task.actions[0], task.scenes[0], CFG)
        got = caption_transition(render(task.scenes[0]), render(task.scenes[1]))
        hits += got == want
        if got != want:
            misses.append((want, got))
    assert hits >= 95, misses[:5]


def test_caption_image_names_every_shape_with_size_and_place():
    text = caption_image(render(SCENE))
    assert text == "A small red circle at the top left and a large blue square in the centre."
    assert caption_image(render(Scene((), 64, 64))) == "An empty canvas."


def test_explicit_offsets_swaps_and_no_change_follow_describe_wording():
    moved = apply(SCENE, Move(0, None, 5, 3))
    assert (
        caption_transition(render(SCENE), render(moved))
        == "Move the red circle 5 pixels right and 3 pixels down."
    )
    swapped = apply(SCENE, Swap(1, 0))
    assert describe(Swap(1, 0), SCENE) == describe(Swap(0, 1), SCENE)  # order-free sentence
    assert caption_transition(render(SCENE), render(swapped)) == describe(Swap(1, 0), SCENE)
    assert caption_transition(render(SCENE), render(SCENE)) == "Nothing changes."


def test_captions_survive_jpeg_and_upscaled_frames():
    rng = random.Random(5)
    ok = 0
    for _ in range(30):
        task = random_task(rng, CFG, steps=1)
        a, b = render(task.scenes[0]), render(task.scenes[1])
        buf = io.BytesIO()
        b.resize((128, 128), Image.Resampling.NEAREST).save(buf, "JPEG", quality=75)
        ok += caption_transition(a, Image.open(buf)) == describe(task.actions[0], task.scenes[0], CFG)
    assert ok >= 28
