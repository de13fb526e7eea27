"""The plain interleaved loop: events in order, <BOV> triggers an image, seeded, limits respected."""

import pytest
from duogen.model.errors import DuoGenInputError
from duogen.model.generate import Finished, GenerationOptions, ImageDone, ImageStarted, TextDelta, generate
from duogen.model.pair import DuoGenPair
from duogen.model.presets import tiny
from PIL import Image

PROMPT = [{"role": "user", "content": "Draw a red circle, then move it right."}]


@pytest.fixture(scope="module")
def pair():
    return DuoGenPair.build(tiny(), seed=0)


def _run(pair, conv=PROMPT, **kw):
    opts = GenerationOptions(max_new_tokens=kw.pop("max_new_tokens", 20), **kw)
    return list(generate(pair, conv, opts))


def test_forced_bov_draws_images_in_order(pair):
    events = _run(pair, force_bov_every=5, max_images=2)
    kinds = [type(e).__name__ for e in events]
    assert kinds[-1] == "Finished" and kinds.count("Finished") == 1
    starts = [i for i, e in enumerate(events) if isinstance(e, ImageStarted)]
    dones = [i for i, e in enumerate(events) if isinstance(e, ImageDone)]
    assert len(starts) == len(dones) == 2
    assert [events[i].index for i in starts] == [0, 1] and [events[i].index for i in dones] == [0, 1]
    assert all(s + 1 == d for s, d in zip(starts, dones, strict=True))  # nothing between start and done
    assert all(events[d].image.size == (64, 64) for d in dones)
    fin = events[-1]
    assert fin.images == 2 and fin.new_tokens == 20 and fin.reason == "length"


def test_seeded_generation_is_reproducible(pair):
    a = _run(pair, force_bov_every=4, max_images=1, temperature=1.0, top_p=0.9, seed=5)
    b = _run(pair, force_bov_every=4, max_images=1, temperature=1.0, top_p=0.9, seed=5)
    text = lambda evs: "".join(e.text for e in evs if isinstance(e, TextDelta))  # noqa: E731
    assert text(a) == text(b)
    img = lambda evs: next(e.image for e in evs if isinstance(e, ImageDone))  # noqa: E731
    assert img(a).tobytes() == img(b).tobytes()


def test_an_emitted_bov_triggers_an_image(pair, monkeypatch):
    """No forcing: when the model's own logits pick <BOV> (here: the first step's), the loop draws."""
    original = pair.mllm.forward_logits
    calls = []

    def biased(enc):
        logits = original(enc)
        calls.append(len(enc))
        if len(calls) == 1:
            logits[-1, pair.mllm.bov_token_id] = logits[-1].max() + 10
        return logits

    monkeypatch.setattr(pair.mllm, "forward_logits", biased)
    events = _run(pair, max_images=3, max_new_tokens=4)
    assert isinstance(events[0], ImageStarted) and isinstance(events[1], ImageDone)
    assert calls[1] > calls[0] + 1  # <BOV> and the image's vision tokens joined the context


def test_max_images_stops_bov(pair):
    events = _run(pair, force_bov_every=2, max_images=1, max_new_tokens=12)
    assert sum(isinstance(e, ImageDone) for e in events) == 1
    assert isinstance(events[-1], Finished)


def test_user_image_sets_the_size_of_the_drawing(pair):
    conv = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (96, 48), "blue")},
                                          {"type": "text", "text": "move it"}]}]  # fmt: skip
    events = _run(pair, conv, force_bov_every=1, max_images=1, max_new_tokens=3)
    assert next(e.image for e in events if isinstance(e, ImageDone)).size == (96, 48)


@pytest.mark.parametrize(
    ("conv", "words"),
    [([], "empty"), ([{"role": "robot", "content": "hi"}], "role")],
)
def test_bad_conversations(pair, conv, words):
    with pytest.raises(DuoGenInputError, match=words):
        _run(pair, conv)
