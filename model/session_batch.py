"""Several MLLM sessions advanced in one forward: the server's batched decoding (and batched prefill).

Each session keeps its own conversation, rows and 3-D (mRoPE) positions; their KV caches of different
lengths go into one right-padded cache with a mask of the slots that hold real tokens (`SharedCache`).
A forward takes each session's new chunk (one token when decoding; a prompt or an image block), right-padded
to the longest, with a 4-D boolean mask: a row sees its own past slots and its own chunk, causally, and
nothing padded. The shared cache stays shared between forwards while the same sessions run together
(decoding: every tick), so a decode step copies nothing beyond what `transformers`' DynamicCache copies for
one request alone; a session's own cache is cut out of it only when the group changes (a request joins,
starts a picture, ends) or the session runs alone.

The padded layout was chosen by measurement over re-padding every step (README, "Serving"); a paged or
ragged layout (FlexAttention) would also drop the padded slots' compute. On CUDA in bf16 (untested here: no
GPU) a batched row and the same request alone round differently (other kernel shapes), so a greedy answer
may part from its alone twin where two tokens' logits are within rounding; in float32 they agree.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from .chat import EncodedConversation
from .connector import stack_layers
from .session import MLLMSession, forward_chunks


class SharedCache:
    """The KV caches of sessions that run together: [B, heads, slots, dim] per layer, `valid` [B, slots]."""

    def __init__(self, sessions: list[MLLMSession]) -> None:
        own = [s.cache for s in sessions]  # each one's own cache (cut out of an earlier batch if need be)
        self.config = sessions[0].mllm.model.config
        self.sessions = sessions
        lengths = [s.fed for s in sessions]
        width = max(lengths)
        dev = sessions[0].mllm.device
        self.valid = torch.arange(width, device=dev)[None] < torch.tensor(lengths, device=dev)[:, None]
        self.cache = DynamicCache(config=self.config)
        filled = [c for c, n in zip(own, lengths, strict=True) if n]
        for li in range(len(filled[0].layers) if filled else 0):
            ref = filled[0].layers[li]
            keys, values = [], []
            for cache, n in zip(own, lengths, strict=True):
                if n:
                    keys.append(torch.nn.functional.pad(cache.layers[li].keys, (0, 0, 0, width - n)))
                    values.append(torch.nn.functional.pad(cache.layers[li].values, (0, 0, 0, width - n)))
                else:
                    keys.append(ref.keys.new_zeros((1, ref.keys.shape[1], width, ref.keys.shape[3])))
                    values.append(ref.values.new_zeros((1, ref.values.shape[1], width, ref.values.shape[3])))
            self.cache.update(torch.cat(keys), torch.cat(values), li)
        for s in sessions:
            s.batch, s.cache = self, None  # lent: the shared copy is the only one

    def holds(self, sessions: list[MLLMSession]) -> bool:
        """Whether it holds exactly these sessions (in any order)."""
        return len(sessions) == len(self.sessions) and all(s.batch is self for s in sessions)

    def release(self) -> None:
        """Give every session its own compact cache back (the real slots of its row)."""
        for b, session in enumerate(self.sessions):
            own = DynamicCache(config=self.config)
            slots = self.valid[b].nonzero().squeeze(1)
            for li, layer in enumerate(self.cache.layers):
                own.update(layer.keys[b : b + 1, :, slots], layer.values[b : b + 1, :, slots], li)
            session.batch = None
            session.cache = own
        self.sessions = []


@torch.no_grad()
def advance_together(sessions: list[MLLMSession], encs: list[EncodedConversation]) -> None:
    """Run several sessions' unseen tokens in one forward; each ends as if it had advanced alone."""
    work = [(s, c) for s, e in zip(sessions, encs, strict=True) if (c := s.chunk(e)) is not None]
    if len(work) <= 1:  # alone: its own cache, no mask
        for s, e in zip(sessions, encs, strict=True):
            s.advance(e)
        return
    if not all(s.use_cache for s, _ in work):
        raise ValueError("only cached sessions run together")
    shared = work[0][0].batch
    if shared is None or not shared.holds([s for s, _ in work]):
        shared = SharedCache([s for s, _ in work])
    order = {id(s): b for b, s in enumerate(shared.sessions)}
    work.sort(key=lambda item: order[id(item[0])])  # the rows' order in the shared cache
    group = [s for s, _ in work]
    chunks = [c for _, c in work]
    model = group[0].mllm.model
    dev = group[0].mllm.device
    lengths = torch.tensor([len(c) for c in chunks], device=dev)
    n_max = int(lengths.max())
    step = torch.arange(n_max, device=dev)
    real = step[None] < lengths[:, None]  # [B, n_max]: which chunk slots hold tokens
    past = shared.valid[:, None, :] & real[:, :, None]  # [B, n_max, slots]
    causal = step[None, :] <= step[:, None]  # [n_max, n_max]
    new = (causal[None] & real[:, None, :] & real[:, :, None]) | (
        ~real[:, :, None] & torch.eye(n_max, dtype=torch.bool, device=dev)[None]
    )  # a padded query sees itself only (no empty softmax row)
    # boolean, for SDPA (the attention the MLLM is built with); transformers passes a 4-D mask through as is
    mask = torch.cat([past, new], dim=2)[:, None]  # [B, 1, n_max, slots + n_max]
    out = forward_chunks(model, chunks, shared.cache, mask, True)
    shared.valid = torch.cat([shared.valid, real], dim=1)
    layers = torch.stack(out.hidden_states[1:])  # [L, B, n_max, H]
    rows = stack_layers(layers.flatten(1, 2), eps=group[0].norm_eps).view(len(group), n_max, -1)
    last = out.last_hidden_state[torch.arange(len(group), device=dev), lengths - 1]
    logits = model.lm_head(last)
    for b, (session, chunk) in enumerate(work):
        session.absorb(chunk, rows[b, : len(chunk)], logits[b])
