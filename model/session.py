"""An MLLM conversation held in the KV cache, fed incrementally, with every layer's hidden states kept.

`advance(enc)` runs only the tokens of `enc` the session has not seen yet (new text, or a whole image block
after `<BOV>`) through Qwen2.5-VL with the KV cache, so the cache is extended and never refilled. The 3-D
(mRoPE) positions of the new chunk are computed on the chunk alone and shifted by the next free position,
which gives exactly the positions of a full-sequence pass. Each fed token's hidden states of all decoder
layers are normalised and concatenated once (the connector's input, per token), so the DiT's text stream
for a `<BOV>` at position p is a slice, not a re-run of the prompt. Those rows (100352 wide in production)
live in one buffer in the model's dtype that grows by doubling, so a long answer copies them O(log T)
times, not once per generated token.

With `use_cache=False` the same API re-runs the whole sequence every time: the reference the cached path
must reproduce, and the baseline of the cache benchmark. Several sessions advance in one forward with
`session_batch.advance_together` (the server's batched decoding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .chat import EncodedConversation
from .connector import stack_layers
from .mllm import DuoGenMLLM


@dataclass
class Chunk:
    """Tokens of one conversation a session has not run yet, ready for the model."""

    ids: torch.Tensor  # [n]
    mm: torch.Tensor  # [n] token types (image tokens are 1)
    pixel_values: torch.Tensor | None  # the chunk's images, patches flattened
    grids: torch.Tensor | None  # [images, 3]
    positions: torch.Tensor  # [3, 1, n] mRoPE positions, already shifted by the session's next position
    end: int  # length of the conversation once the chunk is in

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class MLLMSession:
    def __init__(self, mllm: DuoGenMLLM, use_cache: bool = True, norm_eps: float = 1e-8) -> None:
        self.mllm = mllm
        self.use_cache = use_cache
        self.norm_eps = norm_eps
        self.batch = None  # the `session_batch.SharedCache` holding this session's cache, if any
        self._cache = DynamicCache(config=mllm.model.config) if use_cache else None
        self.fed = 0  # tokens of the conversation already in the cache
        self.next_position = 0  # first free (1-D) mRoPE position
        self._rows: torch.Tensor | None = None  # [capacity, layers * hidden]: connector input per token
        self._filled = 0
        self.reallocations = 0  # times the row buffer grew
        self.logits: torch.Tensor | None = None  # next-token logits after the last fed token
        self.prefill_tokens = 0  # tokens run through the MLLM (the cost the cache saves)

    def __len__(self) -> int:
        return self.fed

    def _positions(self, ids: torch.Tensor, mm: torch.Tensor, grids: torch.Tensor | None, start: int):
        pos, _ = self.mllm.model.model.get_rope_index(ids[None], mm[None], image_grid_thw=grids)
        return pos + start

    def chunk(self, enc: EncodedConversation) -> Chunk | None:
        """The part of `enc` this session has not run yet (all of it without the cache), with its inputs."""
        start = self.fed if self.use_cache else 0
        if start >= len(enc):
            return None
        ids, mm = enc.input_ids[start:], enc.mm_token_type_ids[start:]
        images = [k for k, (s, _) in enumerate(enc.image_spans) if s >= start]
        pixel_values = grids = None
        if images:
            grids = enc.image_grid_thw[images]
            counts = enc.image_grid_thw.prod(-1).tolist()
            first = int(sum(counts[: images[0]]))
            pixel_values = enc.pixel_values[first : first + int(grids.prod(-1).sum())]
        offset = self.next_position if self.use_cache else 0
        if images or bool(mm.any()):
            positions = self._positions(ids, mm, grids, offset)
        else:  # text: the same position on all three axes, one after another
            positions = (torch.arange(len(ids)) + offset).expand(3, 1, len(ids))
        return Chunk(ids, mm, pixel_values, grids, positions, len(enc))

    @property
    def cache(self) -> DynamicCache | None:
        """This session's own KV cache (handed back first if it is lent to a batch, `session_batch`)."""
        if self.batch is not None:
            self.batch.release()
        return self._cache

    @cache.setter
    def cache(self, cache: DynamicCache | None) -> None:
        self._cache = cache

    @torch.no_grad()
    def advance(self, enc: EncodedConversation) -> None:
        """Run the tokens of `enc` past `self.fed` (all of `enc` without the cache)."""
        chunk = self.chunk(enc)
        if chunk is None:
            return
        out = forward_chunks(self.mllm.model, [chunk], self.cache, None, self.use_cache)
        layers = torch.stack(out.hidden_states[1:], dim=0)[:, 0]  # [L, n, H]
        rows = stack_layers(layers, eps=self.norm_eps)
        self.absorb(chunk, rows, self.mllm.model.lm_head(out.last_hidden_state[0, -1]))

    def absorb(self, chunk: Chunk, rows: torch.Tensor, logits: torch.Tensor) -> None:
        """Take in a forward's results for `chunk`: its connector rows [n, L*H] and the next-token logits."""
        self._keep(rows, reset=not self.use_cache)
        self.logits = logits
        self.prefill_tokens += int(chunk.ids.shape[0])
        self.fed = chunk.end
        self.next_position = int(chunk.positions.max()) + 1

    def _keep(self, rows: torch.Tensor, reset: bool) -> None:
        start = 0 if reset else self._filled
        needed = start + rows.shape[0]
        if self._rows is None or needed > self._rows.shape[0]:
            grown = max(needed, 2 * (0 if self._rows is None else self._rows.shape[0]), 64)
            buffer = rows.new_empty((min(grown, max(needed, self.mllm.cfg.max_context)), rows.shape[1]))
            if self._rows is not None and start:
                buffer[:start] = self._rows[:start]
            self._rows = buffer
            self.reallocations += 1
        self._rows[start:needed] = rows
        self._filled = needed

    @property
    def stream(self) -> torch.Tensor | None:
        """[T, layers * hidden]: the connector input of every fed token (a view of the buffer)."""
        return None if self._rows is None else self._rows[: self._filled]

    def text_stream(self, upto: int) -> torch.Tensor:
        """Connector input for the tokens before position `upto` (a `<BOV>`), from the kept hidden states."""
        if self.stream is None or upto > self.stream.shape[0]:
            raise ValueError(
                f"hidden states cover {0 if self.stream is None else self.stream.shape[0]} tokens, "
                f"asked for {upto}"
            )
        return self.stream[:upto]


def forward_chunks(model, chunks: list[Chunk], cache, mask, use_cache: bool):
    """One forward of the chunks, right-padded with token id 0 of type 0 (text, never an image)."""
    dev = next(model.parameters()).device
    n_max = max(len(c) for c in chunks)

    def pad(t: torch.Tensor, value: int = 0) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, n_max - t.shape[-1]), value=value)

    ids = torch.stack([pad(c.ids) for c in chunks])
    mm = torch.stack([pad(c.mm) for c in chunks])
    positions = torch.cat([pad(c.positions, int(c.positions.max())) for c in chunks], dim=1)  # [3, B, n]
    images = [c for c in chunks if c.pixel_values is not None]
    pixel_values = torch.cat([c.pixel_values for c in images]).to(dev) if images else None
    grids = torch.cat([c.grids for c in images]).to(dev) if images else None
    return model.model(
        input_ids=ids.to(dev),
        pixel_values=pixel_values,
        image_grid_thw=grids,
        mm_token_type_ids=mm.to(dev),
        position_ids=positions.to(dev),
        attention_mask=mask,
        past_key_values=cache,
        use_cache=use_cache,
        output_hidden_states=True,
    )
