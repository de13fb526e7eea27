"""The DiT pretraining data (`pretrain_data.EditData`): every example a pure function of its position (a
resumed run draws the same data), the caption stream the untrained MLLM's over the step's own sentence with
a negative of "no text" (the dialogue has no image before `<BOV>`, so its one text chunk is dropped), text
dropout to the negative, held-out edits apart from training."""

from __future__ import annotations

import torch

from duogen.components.toyworld import render
from duogen.components.training.pretrain_data import EditData
from duogen.model.pair import DuoGenPair
from duogen.model.presets import get_preset


def _data(**kw) -> EditData:
    return EditData(DuoGenPair.build(get_preset("toy-scratch"), seed=0), **kw)


def test_examples_are_fixed_by_position_and_show_the_step():
    data = _data()
    a, b, c = data(5), data(5), data(6)
    assert all(torch.equal(x, y) for x, y in zip(a.latents, b.latents, strict=True))
    assert torch.equal(a.text, b.text) and a.target == 1 and len(a.latents) == 2
    assert not torch.equal(a.latents[1], c.latents[1])
    task = data.task(5)
    pair = data.pair
    after = pair.vae.encode_image(render(task.scenes[1], data.world), pair.pixel_multiple)
    assert torch.equal(a.latents[1], after) and not torch.equal(a.latents[0], a.latents[1])


def test_the_caption_negative_is_no_text_and_sentences_differ():
    data = _data()
    text, negative = data.caption("Remove the red circle.")
    other, other_negative = data.caption("Remove the blue circle.")
    assert text.shape[1] == data.pair.config.connector.in_channels
    assert text.shape[0] > 10 and torch.equal(negative, torch.zeros(1, text.shape[1]))
    assert torch.equal(negative, other_negative) and text.shape == other.shape
    assert not torch.equal(text, other)


def test_text_dropout_feeds_the_negative_and_held_out_edits_are_not_trained():
    dropped = _data(text_dropout=1.0)
    example = dropped(3)
    sentence = dropped.sentence(dropped.task(3))
    assert torch.equal(example.text, dropped.caption(sentence)[1])
    data = _data()
    held = data.held_out(4)
    train_scenes = [repr(data.task(i).scenes) for i in range(200)]
    assert all(repr(e.task.scenes) not in train_scenes for e in held)
    assert torch.equal(held[0].text, data.caption(data.sentence(held[0].task))[0])
