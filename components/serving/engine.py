"""The generation engine: admission (a bounded queue), worker threads, timeouts and cancellation.

A request runs the interleaved loop (`duogen.model.generate.generate`) in a worker thread, with its MLLM
calls and denoising steps going through the shared `Scheduler` (batched across requests); its events reach
the asyncio side through a queue.
At most `max_running` requests generate at once; up to `max_queued` more wait for a slot; beyond that
`submit` raises `QueueFull` (HTTP 429 with Retry-After). A request's ticket is cancelled when its consumer
stops listening (client gone) or its deadline passes; the worker then stops at its next token or step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from duogen.model.generate import Finished, GenerationOptions, ImageDone, generate
from duogen.model.pair import DuoGenPair

from . import metrics
from .batching import Cancelled, Scheduler, Ticket


class QueueFull(Exception):
    """More requests are waiting than the queue holds; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy: too many requests in flight; retry in {retry_after}s")
        self.retry_after = retry_after


class RequestTimeout(Exception):
    """The request ran past its deadline; its work was stopped."""


@dataclass
class EngineSettings:
    max_running: int = 8  # requests generating at once (their DiT steps are batched together)
    max_queued: int = 32  # requests waiting for a slot before 429
    timeout_s: float = 300.0  # per request, queueing included
    batching: bool = True  # False: one request's step per DiT forward (the benchmark's baseline)
    decode_batching: bool = True  # False: each request runs its own MLLM forwards in its thread
    max_wait_s: float = 0.01  # how long a batch waits for the other requests of its lane


_DONE = object()


class GenerationEngine:
    def __init__(self, pair: DuoGenPair, settings: EngineSettings | None = None) -> None:
        self.pair = pair
        self.settings = settings or EngineSettings()
        s = self.settings
        self.scheduler = Scheduler(
            pair.dit,
            dit_batch=2 * s.max_running if s.batching else 1,
            decode_batching=s.decode_batching,
            mllm_batch=s.max_running,
            max_wait_s=s.max_wait_s,
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=s.max_running, thread_name_prefix="generate"
        )
        self._lock = threading.Lock()
        self._in_flight = 0  # admitted: running or waiting for a slot
        self._slots: asyncio.Semaphore | None = None
        self.running = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return max(0, self._in_flight - self.running)

    def close(self) -> None:
        self.scheduler.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _admit(self) -> None:
        s = self.settings
        with self._lock:
            if self._in_flight >= s.max_running + s.max_queued:
                metrics.REJECTED.inc()
                raise QueueFull(retry_after=max(1, round(s.timeout_s / 60)))
            self._in_flight += 1

    def _run(self, conversation, options: GenerationOptions, ticket: Ticket, put) -> None:
        """Worker thread: the loop's events go to `put`; cancellation is checked between events."""
        member = self.scheduler.join(ticket)
        try:
            events = generate(
                self.pair,
                conversation,
                options,
                dit_forward=member.dit_forward,
                mllm_advance=member.mllm_advance,
            )
            for event in events:
                ticket.check()
                put(event)
                if isinstance(event, Finished):
                    break
        except BaseException as err:  # noqa: BLE001 - every failure is handed to the consumer
            put(err)
        finally:
            member.leave()
            put(_DONE)

    def stream(
        self, conversation, options: GenerationOptions, request_id: str | None = None
    ) -> AsyncIterator:
        """Admit the request now (or raise `QueueFull`), and return the iterator of its events.

        Admission happens before the first event, so a streaming route can still answer 429; the returned
        iterator must be consumed (or closed), which releases the admission.
        """
        self._admit()
        admission = _Admission(self)
        events = self._events(conversation, options, Ticket(request_id or uuid.uuid4().hex), admission)
        return _Admitted(events, admission)

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    async def _events(
        self, conversation, options: GenerationOptions, ticket: Ticket, admission: _Admission
    ) -> AsyncIterator:
        deadline = time.monotonic() + self.settings.timeout_s
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.max_running)
        queue: asyncio.Queue = asyncio.Queue()
        acquired = False
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=max(0.0, deadline - time.monotonic()))
            acquired = True
            self.running += 1

            def put(item) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, item)

            loop.run_in_executor(self._pool, self._run, conversation, options, ticket, put)
            while True:
                item = await asyncio.wait_for(queue.get(), timeout=max(0.0, deadline - time.monotonic()))
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, ImageDone):
                    metrics.IMAGES.inc()
                elif isinstance(item, Finished):
                    metrics.TOKENS.labels("prompt").inc(item.usage.prompt_tokens)
                    metrics.TOKENS.labels("completion").inc(item.usage.new_tokens)
                yield item
        except TimeoutError:
            raise RequestTimeout(
                f"request {ticket.request_id} ran past the server's timeout of {self.settings.timeout_s:g}s"
            ) from None
        except Cancelled:
            raise RequestTimeout(f"request {ticket.request_id} was stopped") from None
        finally:
            ticket.cancel()
            if acquired:
                self.running -= 1
                self._slots.release()
            admission.release()


class _Admission:
    """One admitted request's place in the queue; released exactly once."""

    def __init__(self, engine: GenerationEngine) -> None:
        self.engine, self.released = engine, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.engine._release()


class _Admitted:
    """The events of an admitted request; closing it before the first event still frees its place."""

    def __init__(self, events: AsyncIterator, admission: _Admission) -> None:
        self._events, self._admission = events, admission

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self._events.__anext__()

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        except RuntimeError:  # still running in a task being cancelled: its own `finally` cleans up
            pass
        self._admission.release()
