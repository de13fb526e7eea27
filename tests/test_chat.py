"""Tokenizer and chat format: exact masks, image token counts, the 480 px cap, chunks and input errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from duogen.model.chat import (
    IGNORE_INDEX,
    ImagePart,
    TextPart,
    Turn,
    append_image,
    append_tokens,
    build_image_processor,
    encode_conversation,
    last_text_chunk_mask,
    prepare_image,
    to_turns,
)
from duogen.model.errors import DuoGenInputError
from duogen.model.presets import tiny
from duogen.model.tokenizer import QWEN_SPECIAL_TOKENS, build_tokenizer

CFG = tiny().mllm
TOK = build_tokenizer(CFG.bov_token)
PROC = build_image_processor(CFG)
BOV = TOK.convert_tokens_to_ids("<BOV>")
PAD, VS, VE = (TOK.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"))
TEXTS = [
    "",
    "hello world",
    "e\u0301 non-NFC",
    "日本語 😀\n\t  x",
    "\x00\x7f\ufffd",
    "literal <BOV> <|im_end|>",
]


def img(w: int = 56, h: int = 56, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (w, h))


def encode(conv, **kw):
    return encode_conversation(conv, TOK, PROC, max_image_side=CFG.max_image_side, **kw)


def test_tokenizer_round_trip_and_layout():
    assert len(TOK) <= CFG.vocab_size
    ids = TOK.convert_tokens_to_ids([*QWEN_SPECIAL_TOKENS, "<BOV>"])
    assert ids == list(range(256, 265))
    assert TOK.eos_token == "<|im_end|>" and TOK.pad_token == "<|endoftext|>"
    for s in TEXTS:
        assert TOK.decode(TOK.encode(s, split_special_tokens=True)) == s
    assert TOK.encode("a<BOV>b") == [97, BOV, 98]  # the control token is one id


def test_tokenizer_save_load_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    TOK.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == len(TOK) and loaded.convert_tokens_to_ids("<BOV>") == BOV
    for s in TEXTS:
        assert loaded.encode(s) == TOK.encode(s)
        assert loaded.decode(loaded.encode(s, split_special_tokens=True)) == s


def test_labels_mask_user_and_vision_keep_bov_and_assistant_text():
    conv = [
        Turn("system", [TextPart("sys")]),
        Turn("user", [TextPart("look "), ImagePart(img(84, 56)), TextPart(" then draw")]),
        Turn("assistant", [TextPart("Here:"), ImagePart(img()), TextPart("done")]),
    ]
    e = encode(conv)
    ids, labels = e.input_ids, e.labels
    assert TOK.decode(ids) == (
        "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nlook <|vision_start|>"
        + "<|image_pad|>" * 6
        + "<|vision_end|> then draw<|im_end|>\n<|im_start|>assistant\nHere:<BOV><|vision_start|>"
        + "<|image_pad|>" * 4
        + "<|vision_end|>done<|im_end|>\n"
    )
    assert TOK.decode(ids[labels != IGNORE_INDEX]) == "Here:<BOV>done<|im_end|>"
    assert torch.equal(labels[labels != IGNORE_INDEX], ids[labels != IGNORE_INDEX])
    for s, t in e.image_spans:  # vision_start, pads and vision_end never in the loss
        assert (labels[s - 1 : t + 1] == IGNORE_INDEX).all()
    assert e.bov_positions == [int((ids == BOV).nonzero())]
    assert ids[e.bov_positions[0] + 1] == VS


def test_image_pad_counts_match_grid():
    sizes = [(56, 56), (300, 120), (29, 400), (10, 10)]
    e = encode([{"role": "user", "content": [{"type": "image", "image": img(w, h)} for w, h in sizes]}])
    merge = CFG.vision_spatial_merge_size
    assert e.image_grid_thw.shape == (4, 3)
    for (s, t), grid in zip(e.image_spans, e.image_grid_thw, strict=True):
        assert t - s == int(grid.prod()) // merge**2
        assert (e.input_ids[s:t] == PAD).all() and e.input_ids[s - 1] == VS and e.input_ids[t] == VE
    assert int(e.mm_token_type_ids.sum()) == int((e.input_ids == PAD).sum())
    assert e.pixel_values.shape[0] == int(e.image_grid_thw.prod(-1).sum())
    assert [im.size for im in e.images][:2] == [(56, 56), (308, 112)]


@pytest.mark.parametrize("size", [(1000, 500), (500, 1000), (480, 3), (3000, 2999)])
def test_480_pixel_cap(size):
    out = prepare_image(img(*size), 480)
    assert max(out.size) <= 480 and out.mode == "RGB"
    if size == (1000, 500):
        assert out.size == (480, 240)
    e = encode([Turn("user", [ImagePart(img(*size))])])
    _, gh, gw = e.image_grid_thw[0].tolist()
    assert max(gh, gw) * CFG.vision_patch_size <= 480


def test_prepare_image_modes():
    rgba = Image.new("RGBA", (40, 30), (10, 20, 30, 0))  # fully transparent -> white
    assert prepare_image(rgba, 480).getpixel((0, 0)) == (255, 255, 255)
    for mode in ("L", "LA", "P", "RGB"):
        assert prepare_image(img(40, 30, mode), 480).mode == "RGB"
    for mode in ("I;16", "CMYK", "F"):
        with pytest.raises(DuoGenInputError, match="unsupported image mode"):
            prepare_image(img(40, 30, mode), 480)
    with pytest.raises(DuoGenInputError, match="empty"):
        prepare_image(Image.new("RGB", (0, 5)), 480)
    with pytest.raises(DuoGenInputError, match="PIL"):
        prepare_image(torch.zeros(3, 8, 8), 480)
    with pytest.raises(DuoGenInputError, match="aspect ratio"):
        prepare_image(img(2000, 5), 480)


def test_chunk_ids_and_last_text_chunk_mask():
    conv = [
        {"role": "user", "content": "draw two"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "ab"},
                {"type": "image", "image": img()},
                {"type": "image", "image": img()},
                {"type": "text", "text": "c"},
            ],
        },
    ]
    e = encode(conv, add_generation_prompt=True)
    ch, ids = e.chunk_ids, e.input_ids
    text = ch[ch >= 0]
    assert (text[1:] >= text[:-1]).all() and text.unique().tolist() == [0, 1, 2]
    for k, (s, t) in enumerate(e.image_spans):  # image k: vision_start..vision_end, id -(k + 1)
        assert (ch[s - 1 : t + 1] == -(k + 1)).all() and ch[s - 2] >= 0 and ch[t + 1] >= 0
    assert int((ch < 0).sum()) == sum(t - s + 2 for s, t in e.image_spans)
    b1, b2 = e.bov_positions
    # first <BOV>: the request and the answer so far (an answer continues the chunk of what it answers, so
    # an immediate <BOV> still has the user's words as its last text chunk: CFG then drops the request)
    m = last_text_chunk_mask(ch, b1)
    assert m.shape == (b1,)
    assert TOK.decode(ids[:b1][m]) == "<|im_start|>user\ndraw two<|im_end|>\n<|im_start|>assistant\nab"
    # second <BOV> follows the first image directly: no text since that image
    assert not last_text_chunk_mask(ch, b2).any()
    # end of a generation prompt: the text since the last image, through the fresh assistant header
    m = last_text_chunk_mask(ch, len(ids))
    assert TOK.decode(ids[m]) == "c<|im_end|>\n<|im_start|>assistant\n"
    assert TOK.decode(ids).endswith("c<|im_end|>\n<|im_start|>assistant\n")
    # a user turn starts a chunk
    assert TOK.decode(ids[ch == ch[0]]).startswith(
        "<|im_start|>user\ndraw two<|im_end|>\n<|im_start|>assistant"
    )


def test_the_request_is_one_chunk_whichever_side_of_its_picture_it_stands():
    """The first picture's CFG negative drops the user's words with the answer's, whether the user's picture
    came before or after them (clients send both): the two orders give the same dropped words and keep
    the user's picture. Splitting the request at the picture would leave its words in one order's negative."""
    words = "move the red circle up"

    def dropped_and_kept(parts):
        conv = [{"role": "user", "content": parts},
                {"role": "assistant", "content": [{"type": "text", "text": "Step 1: go."},
                                                  {"type": "image", "image": img()}]}]  # fmt: skip
        e = encode(conv)
        m = last_text_chunk_mask(e.chunk_ids, e.bov_positions[0])
        ids = e.input_ids[: e.bov_positions[0]]
        return TOK.decode(ids[m]), TOK.decode(ids[~m])

    text_first = dropped_and_kept([{"type": "text", "text": words}, {"type": "image", "image": img()}])
    picture_first = dropped_and_kept([{"type": "image", "image": img()}, {"type": "text", "text": words}])
    for dropped, kept in (text_first, picture_first):
        assert words in dropped and "Step 1: go." in dropped and words not in kept
        assert "<|vision_start|>" in kept and "<|vision_start|>" not in dropped  # the picture stays
    assert text_first[0].replace("<|im_start|>user\n", "") == picture_first[0].replace(
        "<|im_start|>user\n", ""
    )


def test_dicts_strings_and_turns_encode_alike():
    picture = img()
    as_turns = [Turn("user", [TextPart("hi "), TextPart("there"), ImagePart(picture)])]
    as_dicts = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi there"}, {"type": "image", "image": picture}],
        }
    ]
    assert torch.equal(encode(as_turns).input_ids, encode(as_dicts).input_ids)
    assert to_turns([{"role": "user", "content": "x"}]) == [Turn("user", [TextPart("x")])]
    e = encode([{"role": "user", "content": "say <BOV>"}])  # user-typed control text stays plain bytes
    assert BOV not in e.input_ids.tolist() and e.pixel_values is None and e.image_grid_thw is None


@pytest.mark.parametrize(
    ("conv", "kwargs", "words"),
    [
        ([], {}, "empty"),
        ([{"role": "robot", "content": "x"}], {}, "unknown role 'robot'"),
        (
            [{"role": "system", "content": [{"type": "image", "image": Image.new("RGB", (8, 8))}]}],
            {},
            "system",
        ),
        ([{"role": "user", "content": "x" * 50}], {"max_context": 20}, "longer than the context of 20"),
        (
            [{"role": "user", "content": [Image.new("RGB", (8, 8))] * 3}],
            {"max_images": 2},
            "3 images, more than",
        ),
        ([{"role": "user", "content": [{"type": "audio"}]}], {}, "unknown content item"),
        ([{"role": "user", "content": [{"type": "image", "image": "cat.png"}]}], {}, "PIL"),
    ],
)
def test_input_errors(conv, kwargs, words):
    with pytest.raises(DuoGenInputError, match=words):
        encode(conv, **kwargs)


def test_context_error_names_lengths():
    with pytest.raises(DuoGenInputError) as info:
        encode([{"role": "user", "content": "x" * 50}], max_context=20)
    assert "conversation is 58 tokens (58 text + 0 image)" in str(info.value)


def test_append_tokens_and_image_rebuild_the_full_encoding():
    """Inference grows the sequence token by token and image by image; it must equal encoding it whole."""
    a, b = img(56, 84), img(84, 56)
    user = {"role": "user", "content": "draw"}
    reply = [{"type": "text", "text": "x"}, {"type": "image", "image": a}, {"type": "image", "image": b}]
    full = encode([user, {"role": "assistant", "content": [*reply, {"type": "text", "text": "y"}]}])
    enc = encode([user], add_generation_prompt=True)
    enc = append_tokens(enc, TOK.encode("x") + [BOV], TOK)
    enc = append_image(enc, a, TOK, PROC, CFG.max_image_side)
    enc = append_tokens(enc, [BOV], TOK)
    enc = append_image(enc, b, TOK, PROC, CFG.max_image_side)
    enc = append_tokens(enc, TOK.encode("y<|im_end|>\n"), TOK)
    for name in ("input_ids", "chunk_ids", "mm_token_type_ids", "pixel_values", "image_grid_thw"):
        assert torch.equal(getattr(enc, name), getattr(full, name)), name
    assert enc.image_spans == full.image_spans and enc.bov_positions == full.bov_positions
    in_loss = full.labels != IGNORE_INDEX  # appended text is labelled; only the final "\n" differs
    assert torch.equal(enc.labels[in_loss], full.labels[in_loss])
    assert not last_text_chunk_mask(enc.chunk_ids, full.bov_positions[1]).any()  # <BOV> right after image


def test_the_toy_tokenizer_learns_its_world_words_whole(tmp_path, monkeypatch):
    """The toy preset's byte-level BPE: each toy word is one token (with or without its leading space), any
    text still round-trips byte for byte, the specials follow the merged vocabulary, and a save reloads it."""
    from duogen.model.presets import TOY_WORDS, toy

    cfg = toy().mllm
    tok = build_tokenizer(cfg.bov_token, cfg.bpe_words)
    assert len(tok) <= cfg.vocab_size
    for word in TOY_WORDS:
        assert len(tok.encode(word, add_special_tokens=False)) == 1, word
        assert len(tok.encode(" " + word, add_special_tokens=False)) == 1, word
    request = "How do I swap the positions of the green triangle and the red circle, then remove it?"
    assert len(tok.encode(request, add_special_tokens=False)) == 20  # as bytes: 85 tokens
    for s in [*TEXTS, request]:
        assert tok.decode(tok.encode(s, split_special_tokens=True)) == s
    assert tok.convert_tokens_to_ids("<BOV>") == len(tok) - 1 and tok.encode("a<BOV>b")[1] == len(tok) - 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.encode(request) == tok.encode(request) and len(loaded) == len(tok)
