"""The interleaved loop: events in order, <BOV> triggers an image, caches change nothing, limits hold."""

import numpy as np
import pytest
from PIL import Image

from duogen.model.errors import DuoGenInputError
from duogen.model.generate import Finished, GenerationOptions, ImageDone, ImageStarted, TextDelta, generate
from duogen.model.pair import DuoGenPair
from duogen.model.presets import tiny

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
    """No forcing: when the model's own logits pick <BOV> (here: after the prompt), the loop draws."""
    from duogen.model import session as session_module

    original = session_module.MLLMSession.advance
    fed = []

    def biased(self, enc):
        original(self, enc)
        fed.append(len(enc))
        if len(fed) == 1:
            self.logits[pair.mllm.bov_token_id] = self.logits.max() + 10

    monkeypatch.setattr(session_module.MLLMSession, "advance", biased)
    events = _run(pair, max_images=3, max_new_tokens=4)
    assert isinstance(events[0], ImageStarted) and isinstance(events[1], ImageDone)
    assert fed[1] > fed[0] + 1  # <BOV> and the image's vision tokens joined the context in one step


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


def _collect(events):
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    images = [e.image for e in events if isinstance(e, ImageDone)]
    return text, images, events[-1]


def test_cached_and_uncached_loops_agree(pair):
    conv = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (64, 64), "red")},
                                          {"type": "text", "text": "move it right, then left"}]}]  # fmt: skip
    kw = {"force_bov_every": 3, "max_images": 3, "max_new_tokens": 14, "seed": 3}
    text_c, images_c, fin_c = _collect(_run(pair, conv, use_cache=True, **kw))
    text_n, images_n, fin_n = _collect(_run(pair, conv, use_cache=False, **kw))
    assert text_c == text_n and len(images_c) == len(images_n) == 3
    for a, b in zip(images_c, images_n, strict=True):
        diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
        assert diff.max() <= 2, diff.max()  # float summation order differs between the paths, not the result
    assert fin_c.usage.vae_encodes == 4  # the user's image and each drawn image, once
    assert fin_n.usage.vae_encodes == 1 + 2 + 3  # every earlier image again for each new one
    assert fin_c.usage.mllm_prefill_tokens < fin_n.usage.mllm_prefill_tokens / 3


def test_force_bov_draws_first_and_stop_strings_end_the_turn(pair):
    events = _run(pair, force_bov=True, max_images=1, max_new_tokens=30)
    assert isinstance(events[0], ImageStarted)
    text, _, _ = _collect(events)
    assert text, "the untrained model writes something after the image"
    stop = text[:2]
    stopped = _run(pair, force_bov=True, max_images=1, max_new_tokens=30, stop=(stop,))
    text_s, _, fin = _collect(stopped)
    assert fin.reason == "stop" and stop in text_s and len(text_s) <= len(text)


def test_context_policy_never_cuts_an_image(pair):
    import dataclasses

    small = dataclasses.replace(pair.config, mllm=dataclasses.replace(pair.config.mllm, max_context=40))
    tight = DuoGenPair(small, pair.mllm, pair.dit, pair.vae)
    opts = GenerationOptions(force_bov_every=2, max_images=4, max_new_tokens=50)
    events = list(generate(tight, [{"role": "user", "content": "hi"}], opts))
    fin = events[-1]
    assert fin.reason == "context"
    starts = sum(isinstance(e, ImageStarted) for e in events)
    assert starts == sum(isinstance(e, ImageDone) for e in events)


def test_frame_budget_keeps_the_most_recent_images(pair, monkeypatch):
    import dataclasses

    from duogen.model import generate as generate_module

    seen = []
    real = generate_module.sample_latent

    def spy(dit, conditions, *args, **kwargs):
        seen.append(len(conditions))
        return real(dit, conditions, *args, **kwargs)

    monkeypatch.setattr(generate_module, "sample_latent", spy)
    small = dataclasses.replace(pair.config, dit=dataclasses.replace(pair.config.dit, max_frames=3))
    capped = DuoGenPair(small, pair.mllm, pair.dit, pair.vae)
    list(generate(capped, PROMPT, GenerationOptions(force_bov_every=1, max_images=4, max_new_tokens=8)))
    assert seen == [0, 1, 2, 2]


def test_structure_tokens_are_never_generated(pair, monkeypatch):
    """Even a model that prefers <|image_pad|> cannot write one: it would claim an image that is not there."""
    from duogen.model import session as session_module

    pad = pair.mllm.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    original = session_module.MLLMSession.advance

    def biased(self, enc):
        original(self, enc)
        self.logits[pad] = self.logits.max() + 50

    monkeypatch.setattr(session_module.MLLMSession, "advance", biased)
    events = _run(pair, max_new_tokens=5, max_images=0)
    assert events[-1].usage.new_tokens == 5 and "<|image_pad|>" not in "".join(
        e.text for e in events if isinstance(e, TextDelta)
    )


def test_oversized_pictures_get_a_clear_error_before_any_work(pair):
    mw, mh = pair.max_image_size
    with pytest.raises(
        DuoGenInputError, match=rf"the requested image size is {mw + 64}x64 px.*at most {mw}x{mh}"
    ):
        _run(pair, image_size=(mw + 64, 64))
    big = Image.new("RGB", (64, mh + 64))
    conv = [{"role": "user", "content": [{"type": "text", "text": "edit"}, {"type": "image", "image": big}]}]
    with pytest.raises(DuoGenInputError, match="input image 1 is 64x"):
        _run(pair, conv)
    _run(pair, image_size=(mw, 64), max_new_tokens=1)  # the largest size itself is fine


def test_min_new_tokens_holds_the_end_of_the_turn_back(pair, monkeypatch):
    """A model that wants to end the turn at once writes `min_new_tokens` first, then ends it."""
    from duogen.model import session as session_module

    end = pair.mllm.im_end_token_id
    original = session_module.MLLMSession.advance

    def eager_to_stop(self, enc):
        original(self, enc)
        self.logits[end] = self.logits.max() + 50

    monkeypatch.setattr(session_module.MLLMSession, "advance", eager_to_stop)
    assert _run(pair, max_new_tokens=20, max_images=0)[-1].usage.new_tokens == 1
    finished = _run(pair, max_new_tokens=20, max_images=0, min_new_tokens=7)[-1]
    assert (finished.reason, finished.usage.new_tokens) == ("stop", 8)  # 7 written, then the end
