"""The pretraining stream (`curation.synthetic_stream`) and its examples (`training.pretrain_data`): every
dialogue and example a pure function of its position (a resumed or data-parallel run draws the same data),
shaped as the data engine writes dialogues (both part orders, the pool's wordings, 1-4 steps), turned into
Stage-1 / Stage-2 examples by the stages' own functions, text dropout to generation's CFG negative, and
held-out sets from a split training never draws."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch

from duogen.components.curation.synthetic_pool import REQUEST_WORDINGS
from duogen.components.curation.synthetic_stream import StreamConfig, held_out_dialogues, stream_dialogue
from duogen.components.toyworld import render
from duogen.components.training.data import to_conversation
from duogen.components.training.pretrain_data import DialogueData
from duogen.model.chat import ImagePart
from duogen.model.pair import DuoGenPair
from duogen.model.presets import get_preset


@pytest.fixture(scope="module")
def pair():
    return DuoGenPair.build(get_preset("toy-scratch"), seed=0)


def test_the_stream_is_the_data_engines_dialogues_fixed_by_position():
    cfg = StreamConfig(seed=3)
    a, b, c = stream_dialogue(cfg, 7), stream_dialogue(cfg, 7), stream_dialogue(cfg, 8)
    assert a[0].to_dict() == b[0].to_dict() and a[1] == b[1] and a[0].to_dict() != c[0].to_dict()
    assert stream_dialogue(StreamConfig(seed=4), 7)[0].to_dict() != a[0].to_dict()  # the seed is the data's
    sample, files, task = a
    user, answer = sample.turns
    assert sample.source == "synthetic" and sample.lineage.stages["split"] == "train"
    steps = [p.text for p in answer.parts if p.type == "text"]
    assert steps == [f"Step {k + 1}: {s}" for k, s in enumerate(task.instructions())]
    assert [p.type for p in answer.parts] == ["text", "bov", "image"] * len(task.actions)


def test_the_stream_shows_both_part_orders_every_length_and_many_wordings():
    dialogues = [stream_dialogue(StreamConfig(), i) for i in range(200)]
    orders = collections.Counter(tuple(p.type for p in s.turns[0].parts) for s, _, _ in dialogues)
    assert set(orders) == {("text", "image"), ("image", "text")} and min(orders.values()) > 60
    lengths = collections.Counter(len(t.actions) for _, _, t in dialogues)
    assert set(lengths) == {1, 2, 3, 4}
    leads = {next(p.text for p in s.turns[0].parts if p.type == "text").split()[0] for s, _, _ in dialogues}
    assert len(leads) >= 8 and len(REQUEST_WORDINGS) >= 12


def test_kind_weights_shape_the_stream():
    only_swaps = StreamConfig(kind_weights=(0, 0, 0, 0, 0, 1), max_steps=2)
    kinds = {type(a).__name__ for i in range(30) for a in stream_dialogue(only_swaps, i)[2].actions}
    assert kinds == {"Swap"}
    with pytest.raises(ValueError, match="no action kind"):
        StreamConfig(kind_weights=(0,) * 6)


def test_held_out_dialogues_come_from_their_own_split():
    cfg = StreamConfig()
    held = held_out_dialogues(cfg, 6, steps=(2, 3))
    assert [len(t.actions) for _, _, t in held] == [2, 3, 2, 3, 2, 3]
    assert all(s.lineage.stages["split"] == "eval" for s, _, _ in held)
    trained = {repr(stream_dialogue(cfg, i)[2].scenes) for i in range(300)}
    assert not any(repr(t.scenes) in trained for _, _, t in held)


def test_stage2_examples_are_a_random_step_with_every_earlier_picture_and_its_text(pair):
    data = DialogueData(pair, "stage2", StreamConfig(min_steps=4, max_steps=4))
    a, b = data(11), data(11)
    assert a.target == len(a.latents) - 1
    assert all(torch.equal(x, y) for x, y in zip(a.latents, b.latents, strict=True))
    assert torch.equal(a.text, b.text)
    sample, files, task = stream_dialogue(data.stream, 11)
    turns = to_conversation(sample, files)
    pictures = [p.image for t in turns for p in t.parts if isinstance(p, ImagePart)]
    k = a.target  # picture k is the scene after step k (picture 0: the user's)
    truth = [pair.vae.encode_image(render(s), pair.pixel_multiple) for s in task.scenes[: k + 1]]
    assert all(torch.equal(x, y) for x, y in zip(a.latents, truth, strict=True)) and len(pictures) == 5
    enc = pair.mllm.encode(turns)
    text, negative = pair.text_streams(enc, enc.bov_positions[k - 1])
    assert torch.equal(a.text, text) and not torch.equal(text, negative)
    targets = {data(i).target for i in range(12)}
    assert targets == {1, 2, 3, 4}  # every step of a 4-step dialogue is a target somewhere


def test_text_dropout_trains_the_negative_generation_samples_with(pair):
    dropped = DialogueData(pair, "stage2", StreamConfig(), text_dropout=1.0)(5)
    sample, files, _ = stream_dialogue(StreamConfig(), 5)
    enc = pair.mllm.encode(to_conversation(sample, files))
    negatives = [pair.text_streams(enc, b)[1] for b in enc.bov_positions]
    assert any(torch.equal(n, dropped.text) for n in negatives)


def test_stage1_examples_are_the_encoded_dialogue_and_held_out_edits_are_one_step(pair):
    data = DialogueData(pair, "stage1")
    enc = data(2)
    sample, files, _ = stream_dialogue(data.stream, 2)
    assert torch.equal(enc.input_ids, pair.mllm.encode(to_conversation(sample, files)).input_ids)
    assert (enc.labels[enc.bov_positions] == pair.mllm.bov_token_id).all()
    edits = DialogueData(pair, "stage2").held_out_edits(3)
    for edit in edits:
        assert len(edit.task.actions) == 1 and edit.text.shape[1] == pair.config.connector.in_channels
        after = pair.vae.encode_image(render(edit.task.scenes[1]), pair.pixel_multiple)
        assert torch.equal(edit.after, after) and not torch.equal(edit.before, edit.after)
    with pytest.raises(ValueError, match="stage must be"):
        DialogueData(pair, "stage3")


def test_a_pretraining_run_on_the_stream_resumes_on_the_uninterrupted_curve(tmp_path):
    """The stream is a pure function of the position, so a run stopped after step 2 and started again
    continues the very loss curve of one that never stopped (tiny preset, Stage 2's loss)."""
    from duogen.components.training import stages
    from duogen.components.training.config import TrainConfig
    from duogen.components.training.loop import Trainer

    spec = dataclasses.replace(stages.get("stage2"), examples=lambda pair: DialogueData(pair, "stage2"))

    def run(out, **kw):
        cfg = TrainConfig(stage="stage2", model="tiny", out=str(out), steps=4, batch_size=2, warmup_steps=1,
                          ckpt_every=100, log_every=100, **kw)  # fmt: skip
        trainer = Trainer(cfg, progress=False, spec=spec)
        return trainer.train().losses

    whole = run(tmp_path / "whole")
    first = run(tmp_path / "stopped", stop_at=2)
    rest = run(tmp_path / "stopped")
    assert sorted(first) == [0, 1] and sorted(rest) == [2, 3]
    for step, loss in {**first, **rest}.items():
        assert abs(loss - whole[step]) < 1e-6, (step, loss, whole[step])
