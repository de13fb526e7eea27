"""An offline byte-level tokenizer with Qwen2.5-VL's special tokens plus `<BOV>`.

Tests and the tiny preset must never touch the network, so the tokenizer is built in code: Qwen2's
pre-tokenizer and byte-level decoder over the 256 byte tokens with no merges (every byte is one token),
then Qwen's chat/vision specials and DuoGen's `<BOV>`. 256 + 9 = 265 ids, inside the tiny preset's 288.
With `bpe_words` (the toy preset's world words) byte-level BPE merges are trained offline on those words, as
Qwen's own BPE would have them, so each is one token; any other text still falls back to bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VISION_PAD = "<|vision_pad|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

# In Qwen's id order, so the tiny tokenizer lays them out like the real one (after the text vocabulary).
QWEN_SPECIAL_TOKENS = (
    ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, VISION_PAD, IMAGE_PAD, VIDEO_PAD,
)  # fmt: skip


def word_merges(words: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE (Qwen2's pre-tokenizer and byte alphabet) trained offline on `words`, each with and
    without a leading space, until every one is a single token: (vocab of bytes + merged tokens, merges)."""
    from tokenizers import Tokenizer, models, trainers

    byte_to_char = bytes_to_unicode()
    alphabet = [byte_to_char[b] for b in range(256)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = Qwen2Tokenizer(
        vocab={c: i for i, c in enumerate(alphabet)}, merges=[]
    ).backend_tokenizer.pre_tokenizer
    corpus = [w for word in words for w in (word, " " + word)] * 4
    trainer = trainers.BpeTrainer(
        vocab_size=256 + sum(len(w.encode()) for w in corpus),
        initial_alphabet=alphabet,
        show_progress=False,
        min_frequency=1,
    )
    tok.train_from_iterator(corpus, trainer)
    data = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["merges"]]
    vocab = {c: i for i, c in enumerate(alphabet)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab, merges


def build_tokenizer(bov_token: str = "<BOV>", bpe_words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: ids 0-255 are the bytes, 256-263 Qwen's specials, 264 `<BOV>`.

    Built through `Qwen2Tokenizer` (same split regex and byte-level decoder as the real Qwen tokenizer), then
    wrapped in the generic fast tokenizer class. Two deliberate differences from `Qwen2Tokenizer`:
    the NFC normaliser is dropped, so any UTF-8 string (also non-NFC, e.g. "e" + combining accent) survives
    encode -> decode byte for byte; and because the class saved is the generic one, `save_pretrained` ->
    `AutoTokenizer.from_pretrained` reloads exactly this pipeline (transformers 5 rebuilds a `Qwen2Tokenizer`
    from its own `__init__`, which would put NFC back).
    """
    byte_to_char = bytes_to_unicode()
    vocab, merges = {byte_to_char[b]: b for b in range(256)}, []
    if bpe_words:
        vocab, merges = word_merges(bpe_words)
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    specials = [*QWEN_SPECIAL_TOKENS, bov_token]
    qwen = Qwen2Tokenizer(vocab=vocab, merges=merges, extra_special_tokens=specials)
    backend = qwen.backend_tokenizer
    backend.normalizer = None
    # Qwen2.5-VL-Instruct ends an assistant turn with <|im_end|> and pads with <|endoftext|>.
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        extra_special_tokens=specials,
    )
