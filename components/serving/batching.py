"""The scheduler: every model forward of the running requests, batched across requests, on one thread.

Each request's generation loop runs in its own worker thread and hands its model work to the scheduler
through two hooks of `generate`: `mllm_advance(session, enc)` (the MLLM's next token, or a prompt, or an
image block) and `dit_forward(samples, texts)` (one denoising step). The worker blocks until its result is
back. The scheduler thread runs in ticks: at each tick, the waiting MLLM calls run as batched forwards
(`advance_together`: decode steps all together, prompts and image blocks grouped by length) and the waiting
DiT steps run as one packed forward (the pack never lets attention cross samples).

A request belongs to the lane of its last call: writing (MLLM decode steps) or drawing (DiT steps); the
`<BOV>` that starts a picture moves it to the DiT lane with its first denoising step, and its next token
after the picture moves it back. After a prompt or an image block it is in no lane until its next call.
A lane runs when every request in it has its call waiting, or `max_wait_s` after its first call arrived
(or after the scheduler got free, if it was busy), so a lone request is never held back for long and a slow
one does not stall the others.

`dit_batch=1` is the server without cross-request DiT batching; `decode_batching=False` lets each worker
run its MLLM calls itself, concurrently in its own thread (both are the serving benchmark's baselines).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch

from duogen.model.flow import run_dit
from duogen.model.session import MLLMSession
from duogen.model.session_batch import advance_together

from . import metrics


class Cancelled(Exception):
    """The request was cancelled (client gone, timeout): its generation stops at the next step."""


@dataclass
class Ticket:
    """One request's handle: cancelling it stops its work at the next event, token or denoising step."""

    request_id: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled(self.request_id)


@dataclass(eq=False)  # compared by identity (its fields hold tensors)
class _Call:
    args: tuple
    ticket: Ticket
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None

    def finish(self, result: object = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class _Lane:
    """The calls of one kind waiting for the next tick, and how many requests may still send one."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max(1, max_batch)
        self.pending: list[_Call] = []
        self.members = 0  # running requests whose last call went to this lane
        self.first_at = 0.0  # when the oldest waiting call arrived

    def ready(self, now: float, free_since: float, max_wait_s: float) -> bool:
        """Every member's call is here, or the oldest has waited `max_wait_s` since the scheduler was free
        (calls that came during a forward still wait for the rest: otherwise a lane splits for good into
        two groups that alternate)."""
        if not self.pending:
            return False
        complete = len(self.pending) >= min(self.members, self.max_batch)
        return complete or now - max(self.first_at, free_since) >= max_wait_s

    def take(self) -> list[_Call]:
        batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
        self.first_at = time.monotonic() if self.pending else 0.0
        return batch


class Member:
    """One running request at the scheduler: its `generate` hooks, and the lane it is in."""

    def __init__(self, scheduler: Scheduler, ticket: Ticket) -> None:
        self.scheduler, self.ticket = scheduler, ticket
        self.lane: _Lane | None = None

    def mllm_advance(self, session: MLLMSession, enc) -> None:
        if not self.scheduler.decode_batching or not session.use_cache:  # the uncached reference runs alone
            self.scheduler._move(self, None)
            self.ticket.check()
            session.advance(enc)
            return
        step = _new_tokens(session, enc) == 1
        self.scheduler._call(self, self.scheduler.mllm, (session, enc))
        if not step:  # after a prompt or an image block the next call may be anything: wait for none
            self.scheduler._move(self, None)

    def dit_forward(self, samples: list, texts: list) -> list:
        return self.scheduler._call(self, self.scheduler.dit, (samples, texts))

    def leave(self) -> None:
        self.scheduler._move(self, None)


class Scheduler:
    def __init__(
        self,
        dit: torch.nn.Module,
        dit_batch: int = 16,
        decode_batching: bool = True,
        mllm_batch: int = 16,
        max_wait_s: float = 0.01,
    ) -> None:
        self.dit_model = dit
        self.decode_batching = decode_batching
        self.max_wait_s = max_wait_s
        self.mllm, self.dit = _Lane(mllm_batch), _Lane(dit_batch)
        self._cond = threading.Condition()
        self._closed = False
        # counters: forwards run, and request calls they served
        self.dit_forwards = self.dit_steps = 0
        self.mllm_forwards = self.mllm_calls = 0
        self.decode_forwards = self.decode_steps = 0  # the MLLM forwards of one-token steps only
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def join(self, ticket: Ticket) -> Member:
        """A request starts generating; `Member.leave()` when it ends (however it ends)."""
        return Member(self, ticket)

    def _move(self, member: Member, lane: _Lane | None) -> None:
        with self._cond:
            self._enter(member, lane)
            self._cond.notify_all()

    @staticmethod
    def _enter(member: Member, lane: _Lane | None) -> None:
        """Move `member` to `lane` (None: no lane); the caller holds the lock."""
        if member.lane is lane:
            return
        if member.lane is not None:
            member.lane.members -= 1
        if lane is not None:
            lane.members += 1
        member.lane = lane

    def _call(self, member: Member, lane: _Lane, args: tuple):
        member.ticket.check()
        call = _Call(args, member.ticket)
        with self._cond:
            if self._closed:
                raise Cancelled("the server is shutting down")
            self._enter(member, lane)
            if not lane.pending:
                lane.first_at = time.monotonic()
            lane.pending.append(call)
            self._cond.notify_all()
        while not call.done.wait(0.1):
            if member.ticket.cancelled.is_set():
                with self._cond:
                    if call in lane.pending:  # not started: leave the queue, nothing to wait for
                        lane.pending.remove(call)
                        raise Cancelled(member.ticket.request_id)
        if call.error is not None:
            raise call.error
        return call.result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _take(self) -> tuple[list[_Call], list[_Call]] | None:
        """Wait until a lane is ready; take its calls (and the other lane's, if it is ready too)."""
        lanes = (self.mllm, self.dit)
        free_since = time.monotonic()
        with self._cond:
            while True:
                if self._closed:
                    for lane in lanes:
                        for call in lane.pending:
                            call.finish(error=Cancelled("the server is shutting down"))
                        lane.pending = []
                    return None
                now = time.monotonic()
                ready = [lane.ready(now, free_since, self.max_wait_s) for lane in lanes]
                if any(ready):
                    return tuple(lane.take() if r else [] for lane, r in zip(lanes, ready, strict=True))
                waits = [
                    max(lane.first_at, free_since) + self.max_wait_s - now for lane in lanes if lane.pending
                ]
                self._cond.wait(max(0.0, min(waits)) if waits else None)

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            mllm_calls, dit_calls = (self._live(calls) for calls in taken)
            for group in _groups(mllm_calls):
                self._run(group, self._advance)
            if dit_calls:
                self._run(dit_calls, self._denoise)

    @staticmethod
    def _live(calls: list[_Call]) -> list[_Call]:
        live = []
        for call in calls:
            if call.ticket.cancelled.is_set():
                call.finish(error=Cancelled(call.ticket.request_id))
            else:
                live.append(call)
        return live

    @staticmethod
    def _run(calls: list[_Call], work) -> None:
        try:
            with torch.no_grad():
                results = work(calls)
        except BaseException as err:  # noqa: BLE001 - handed to every caller; the thread keeps serving
            for call in calls:
                call.finish(error=err)
            return
        for call, result in zip(calls, results, strict=True):
            call.finish(result)

    def _advance(self, calls: list[_Call]) -> list[None]:
        decode = all(_call_tokens(c) == 1 for c in calls)
        advance_together([c.args[0] for c in calls], [c.args[1] for c in calls])
        self.mllm_forwards += 1
        self.mllm_calls += len(calls)
        if decode:
            self.decode_forwards += 1
            self.decode_steps += len(calls)
            metrics.DECODE_BATCH.observe(len(calls))
        return [None] * len(calls)

    def _denoise(self, calls: list[_Call]) -> list[list]:
        outs = run_dit(
            self.dit_model, [s for c in calls for s in c.args[0]], [t for c in calls for t in c.args[1]]
        )
        self.dit_forwards += 1
        self.dit_steps += len(calls)
        metrics.DIT_BATCH.observe(len(calls))
        results = []
        for call in calls:
            results.append(outs[: len(call.args[0])])
            outs = outs[len(call.args[0]) :]
        return results


def _new_tokens(session: MLLMSession, enc) -> int:
    """Tokens of `enc` the session has not run yet."""
    return len(enc) - len(session)


def _call_tokens(call: _Call) -> int:
    return _new_tokens(*call.args)


def _groups(calls: list[_Call], waste: float = 0.5) -> list[list[_Call]]:
    """MLLM calls in forwards: one-token steps all together; longer chunks (prompts, image blocks) grouped
    by length so that padding adds at most `waste` of the real tokens to a group."""
    steps = [c for c in calls if _call_tokens(c) <= 1]
    groups = [steps] if steps else []
    group: list[_Call] = []
    for call in sorted((c for c in calls if _call_tokens(c) > 1), key=_call_tokens):
        widest = _call_tokens(call)
        if group and widest * (len(group) + 1) > (1 + waste) * sum(map(_call_tokens, [*group, call])):
            groups.append(group)
            group = []
        group.append(call)
    if group:
        groups.append(group)
    return groups
