"""The KV-cached MLLM session: incremental feeding equals a full forward pass, hidden states included."""

import pytest
import torch
from PIL import Image

from duogen.model.chat import append_image, append_tokens
from duogen.model.connector import stack_layers
from duogen.model.mllm import DuoGenMLLM
from duogen.model.presets import tiny
from duogen.model.session import MLLMSession


@pytest.fixture(scope="module")
def mllm():
    return DuoGenMLLM.build(tiny().mllm, seed=0)


def _grow(mllm, session=None):
    """A conversation fed in steps: prompt with an image, text, <BOV> + a generated image, more text."""
    conv = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (64, 64), "red")},
                                          {"type": "text", "text": "move it"}]}]  # fmt: skip
    enc = mllm.encode(conv, add_generation_prompt=True)
    steps = [enc]
    enc = append_tokens(enc, [65, 66], mllm.tokenizer)
    steps.append(enc)
    enc = append_tokens(enc, [mllm.bov_token_id], mllm.tokenizer)
    enc = append_image(enc, Image.new("RGB", (56, 84), "blue"), mllm.tokenizer, mllm.image_processor)
    steps.append(enc)
    enc = append_tokens(enc, [67], mllm.tokenizer)
    steps.append(enc)
    if session is not None:
        for e in steps:
            session.advance(e)
    return enc


def test_incremental_hidden_states_equal_a_full_forward(mllm):
    session = MLLMSession(mllm, use_cache=True)
    enc = _grow(mllm, session)
    full_layers = mllm.layer_hidden_states(enc)
    torch.testing.assert_close(session.text_stream(len(enc)), stack_layers(full_layers), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(session.logits, mllm.forward_logits(enc)[-1], atol=1e-5, rtol=1e-5)
    assert session.prefill_tokens == len(enc)  # every token ran through the MLLM exactly once


def test_uncached_session_reruns_everything(mllm):
    cached, plain = MLLMSession(mllm, use_cache=True), MLLMSession(mllm, use_cache=False)
    enc = _grow(mllm, cached)
    _grow(mllm, plain)
    assert plain.prefill_tokens > 2 * cached.prefill_tokens
    torch.testing.assert_close(
        plain.text_stream(len(enc)), cached.text_stream(len(enc)), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="hidden states cover"):
        cached.text_stream(len(enc) + 1)


def test_kept_rows_grow_by_doubling_in_the_model_dtype(mllm):
    """One generated token at a time: the rows are copied O(log T) times (a `torch.cat` per token copied
    them T times), stay in the model's dtype and still equal a full forward's."""
    session = MLLMSession(mllm, use_cache=True)
    enc = mllm.encode([{"role": "user", "content": "draw"}], add_generation_prompt=True)
    session.advance(enc)
    for token in range(200):
        enc = append_tokens(enc, [65 + token % 20], mllm.tokenizer)
        session.advance(enc)
    assert session.reallocations <= 4  # 64 -> 128 -> 256 rows (capped by the context)
    assert session.stream.dtype == next(mllm.model.parameters()).dtype
    assert (
        session.stream.shape[0] == len(enc) and session.stream.data_ptr() == session.text_stream(1).data_ptr()
    )
    full = stack_layers(mllm.layer_hidden_states(enc))
    torch.testing.assert_close(session.text_stream(len(enc)), full, atol=1e-5, rtol=1e-5)


def test_sessions_advanced_together_equal_each_alone(mllm):
    """One forward for several sessions (prompts with and without images, then one-token steps, then a mix
    of an image block, a step and nothing new): each keeps exactly its own cache, positions and rows."""
    from duogen.model.session_batch import advance_together

    def conversation(i):
        image = [{"type": "image", "image": Image.new("RGB", (64, 32 * (i % 3 + 1)), "red")}] if i % 2 else []
        return [{"role": "user", "content": [*image, {"type": "text", "text": "word " * (3 + 5 * i)}]}]

    encs = [mllm.encode(conversation(i), add_generation_prompt=True) for i in range(4)]
    alone, together = [MLLMSession(mllm) for _ in encs], [MLLMSession(mllm) for _ in encs]

    def step(encs):
        for session, enc in zip(alone, encs, strict=True):
            session.advance(enc)
        advance_together(together, encs)
        for a, b in zip(alone, together, strict=True):
            assert (len(a), a.next_position) == (len(b), b.next_position)
            torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(a.stream, b.stream, atol=1e-5, rtol=1e-5)

    step(encs)
    assert len({len(e) for e in encs}) == 4  # four different lengths were padded together
    for k in range(3):
        encs = [append_tokens(e, [65 + k + i], mllm.tokenizer) for i, e in enumerate(encs)]
        step(encs)
    with_bov = append_tokens(encs[0], [mllm.bov_token_id], mllm.tokenizer)
    encs[0] = append_image(with_bov, Image.new("RGB", (56, 84), "blue"), mllm.tokenizer, mllm.image_processor)
    encs[1] = append_tokens(encs[1], [70], mllm.tokenizer)
    step(encs)  # session 2 and 3 have nothing new
    assert [a.cache.get_seq_length() for a in alone] == [b.cache.get_seq_length() for b in together]
