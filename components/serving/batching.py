"""Cross-request DiT batching: concurrent requests' denoising steps run as one packed forward.

Each request's generation loop runs in its own worker thread and calls `DiTBatcher.forward` once per
denoising step (through `generate(..., dit_forward=...)`). The batcher thread collects the calls that are
waiting, packs all their samples into one sequence (the pack takes samples of any sizes and never lets
attention cross samples), runs the DiT once and hands each caller its own outputs. It waits for the other
requests drawing right now (they announce themselves with `enter()` / `leave()`), at most `max_wait_s`
after the first call arrived, so a lone request is never held back for long.

`max_batch=1` is the same server without cross-request batching: one request's step per forward, in
arrival order (the baseline the serving benchmark compares with).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch

from duogen.model.flow import run_dit

from . import metrics


class Cancelled(Exception):
    """The request was cancelled (client gone, timeout): its generation stops at the next step."""


@dataclass
class Ticket:
    """One request's handle: cancelling it stops its work at the next event or denoising step."""

    request_id: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled(self.request_id)


@dataclass(eq=False)  # compared by identity (its fields hold tensors)
class _Call:
    samples: list
    texts: list
    ticket: Ticket
    done: threading.Event = field(default_factory=threading.Event)
    result: list | None = None
    error: BaseException | None = None


class DiTBatcher:
    def __init__(self, dit: torch.nn.Module, max_batch: int = 16, max_wait_s: float = 0.01) -> None:
        self.dit = dit
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max_wait_s
        self._cond = threading.Condition()
        self._pending: list[_Call] = []
        self._drawing = 0
        self._closed = False
        self.forwards = 0  # packed DiT forwards run
        self.steps = 0  # request steps served (forwards * requests per forward)
        self._thread = threading.Thread(target=self._loop, name="dit-batcher", daemon=True)
        self._thread.start()

    def enter(self) -> None:
        """A request starts a denoising loop: until it `leave`s, a batch waits for its next step."""
        with self._cond:
            self._drawing += 1

    def leave(self) -> None:
        with self._cond:
            self._drawing -= 1
            self._cond.notify_all()

    def bind(self, ticket: Ticket):
        """The `dit_forward` for one request."""

        def forward(samples, texts):
            return self.forward(samples, texts, ticket)

        return forward

    def forward(self, samples: list, texts: list, ticket: Ticket) -> list:
        ticket.check()
        call = _Call(samples, texts, ticket)
        with self._cond:
            if self._closed:
                raise Cancelled("the server is shutting down")
            self._pending.append(call)
            self._cond.notify_all()
        while not call.done.wait(0.1):
            if ticket.cancelled.is_set():
                with self._cond:
                    if call in self._pending:  # not started: leave the queue, nothing to wait for
                        self._pending.remove(call)
                        raise Cancelled(ticket.request_id)
        if call.error is not None:
            raise call.error
        return call.result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _take(self) -> list[_Call] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                for call in self._pending:
                    call.error = Cancelled("the server is shutting down")
                    call.done.set()
                return None
            deadline = time.monotonic() + self.max_wait_s
            while len(self._pending) < min(self._drawing, self.max_batch):
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = []
            for call in batch:
                if call.ticket.cancelled.is_set():
                    call.error = Cancelled(call.ticket.request_id)
                    call.done.set()
                else:
                    live.append(call)
            if not live:
                continue
            try:
                with torch.no_grad():
                    outs = run_dit(
                        self.dit, [s for c in live for s in c.samples], [t for c in live for t in c.texts]
                    )
                self.forwards += 1
                metrics.DIT_BATCH.observe(len(live))
                self.steps += len(live)
                for call in live:
                    call.result, outs = outs[: len(call.samples)], outs[len(call.samples) :]
            except BaseException as err:  # noqa: BLE001 - handed to every caller; the thread keeps serving
                for call in live:
                    call.error = err
            for call in live:
                call.done.set()
