"""LLM/MLLM backends for the data engine: named tasks (rewrite, caption, expand, ...) in, text out.

Two interchangeable backends share one small interface (`Backend`): an OpenAI-compatible HTTP client (vLLM,
SGLang, hosted APIs) for real runs, and an offline dispatcher to plain functions for deterministic tests and
dry runs. `make_backend` picks one from a spec string so the CLI needs one flag.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from duogen.platform.prompts import PromptError, PromptLibrary

__all__ = [
    "Backend",
    "ChatClient",
    "LLMError",
    "OfflineBackend",
    "OpenAICompatibleBackend",
    "PromptError",
    "PromptLibrary",
    "Request",
    "image_data_url",
    "make_backend",
]


@dataclass(frozen=True)
class Request:
    """One task call, so batches can be handed to `run_many`."""

    task: str
    text: str | None = None
    images: Sequence[bytes] = ()
    params: Mapping[str, Any] | None = None


class Backend(Protocol):
    name: str

    def run(
        self,
        task: str,
        *,
        text: str | None = None,
        images: Sequence[bytes] = (),
        params: Mapping[str, Any] | None = None,
    ) -> str: ...

    def run_many(self, requests: Sequence[Request]) -> list[str]: ...


class LLMError(RuntimeError):
    """A task call that failed for good (bad request, retries used up, malformed answer)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
]


def image_data_url(data: bytes) -> str:
    """A `data:` URL with the mime type read from the magic bytes (servers reject a wrong type)."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return f"data:image/webp;base64,{base64.b64encode(data).decode('ascii')}"
    raise ValueError(f"unrecognised image format (first bytes {data[:8]!r}); expected PNG, JPEG, GIF or WebP")


def _is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _error_message(response: httpx.Response) -> str:
    """The server's own explanation: OpenAI-style {"error": {"message": ...}} or the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    if isinstance(error, str):
        return error
    return json.dumps(body)[:500]


class ChatClient:
    """One OpenAI-compatible `{base_url}/chat/completions` endpoint, shared by every caller (the data
    engine's task backend, the synthetic dialogue generator): transient failures (transport errors, 429,
    5xx) are retried with exponential backoff and 'equal jitter' (parallel workers do not retry in
    lockstep), honouring the server's Retry-After (capped); anything else raises `LLMError` with the
    server's own explanation. `seed` makes the jitter reproducible; `on_retry` counts extra attempts."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        retry_after_cap: float = 30.0,
        max_connections: int = 8,
        seed: int | None = None,
        on_retry: Callable[[], None] | None = None,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.retry_after_cap, self.on_retry = retry_after_cap, on_retry
        self._lock = threading.Lock()  # the jitter RNG across threads
        self._rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=max_connections)
        self._client = httpx.Client(timeout=timeout, headers=headers, limits=limits)

    def close(self) -> None:
        self._client.close()

    def complete(self, body: dict[str, Any], what: str) -> Any:
        """The first choice's message content (text, or a list of parts); `what` prefixes errors."""
        last = ""
        status = None
        for attempt in range(self.max_retries + 1):
            if attempt and self.on_retry is not None:
                self.on_retry()
            retry_after = None
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as err:  # connect errors and timeouts
                last, status = f"{type(err).__name__}: {err}", None
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return response.json()["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        raise LLMError(f"{what}: malformed response {response.text[:300]!r}", 200) from None
                last = f"HTTP {status}: {_error_message(response)}"
                if not _is_retryable(status):
                    raise LLMError(f"{what}: {last}", status=status)
                retry_after = self._retry_after(response)
            if attempt < self.max_retries:
                time.sleep(retry_after if retry_after is not None else self._delay(attempt))
        raise LLMError(f"{what}: gave up after {self.max_retries + 1} attempts; last: {last}", status)

    def _retry_after(self, response: httpx.Response) -> float | None:
        """Seconds the server asked us to wait, capped (HTTP-date values fall back to our backoff)."""
        try:
            return min(max(float(response.headers["retry-after"]), 0.0), self.retry_after_cap)
        except (KeyError, ValueError):
            return None

    def _delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * 2**attempt)
        with self._lock:
            return base * self._rng.uniform(0.5, 1.0)


class OpenAICompatibleBackend:
    """POSTs `{base_url}/chat/completions`; retries transient failures, caches answers on disk by request.

    Params fill prompt placeholders; `temperature` and `max_tokens` in params also override the defaults, and
    `seed` in params is sent as the request's sampling seed.
    `seed` makes the retry jitter reproducible (it is not sent to the server). `stats` counts `requests`
    (run calls), `cache_hits`, `retries` (extra HTTP attempts) and `failures` (calls that raised).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        prompts: PromptLibrary,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        retry_after_cap: float = 30.0,
        max_concurrency: int = 4,
        max_tokens: int = 1024,
        cache_dir: Path | str | None = None,
        seed: int | None = None,
    ):
        self.name = f"openai:{model}"
        self.model, self.prompts, self.max_tokens = model, prompts, max_tokens
        self.max_concurrency = max_concurrency
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0, "failures": 0}
        self._lock = threading.Lock()  # guards stats across run_many threads
        self.chat = ChatClient(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            retry_after_cap=retry_after_cap,
            max_connections=max(max_concurrency, 1) * 2,
            seed=seed,
            on_retry=lambda: self._count("retries"),
        )
        self.url = self.chat.url

    def close(self) -> None:
        self.chat.close()

    def __enter__(self) -> OpenAICompatibleBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def payload(self, task: str, text: str | None, images: Sequence[bytes], params: Mapping[str, Any] | None):
        """The chat-completions body for one task call (also the cache key's source)."""
        params = dict(params or {})
        system, user = self.prompts.render(task, text, params)
        content: str | list[dict[str, Any]] = user
        if images:
            parts = [{"type": "image_url", "image_url": {"url": image_data_url(img)}} for img in images]
            content = [{"type": "text", "text": user}, *parts]
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": content}
        ]
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": float(params.get("temperature", 0.0)),
            "max_tokens": int(params.get("max_tokens", self.max_tokens)),
        }
        if "seed" in params:  # a sampling seed for the server (judges ask with fixed seeds)
            body["seed"] = int(params["seed"])
        return body

    def run(
        self,
        task: str,
        *,
        text: str | None = None,
        images: Sequence[bytes] = (),
        params: Mapping[str, Any] | None = None,
    ) -> str:
        self._count("requests")
        try:
            body = self.payload(task, text, images, params)
            key = hashlib.sha256(
                json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            ).hexdigest()
            cached = self._cache_get(key)
            if cached is not None:
                self._count("cache_hits")
                return cached
            answer = self._post(task, body)
            self._cache_put(key, task, answer)
            return answer
        except Exception:
            self._count("failures")
            raise

    def run_many(self, requests: Sequence[Request]) -> list[str]:
        """Answers in input order, at most `max_concurrency` calls in flight; the first error propagates."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(requests)))) as pool:
            futures = [
                pool.submit(self.run, r.task, text=r.text, images=r.images, params=r.params) for r in requests
            ]
            return [f.result() for f in futures]

    def _post(self, task: str, body: dict[str, Any]) -> str:
        content = self.chat.complete(body, f"task {task!r}")
        if not isinstance(content, str):
            raise LLMError(f"task {task!r}: response content is not text: {content!r}", 200)
        return content

    def _cache_get(self, key: str) -> str | None:
        if self.cache_dir is None:
            return None
        try:
            return json.loads((self.cache_dir / f"{key}.json").read_text(encoding="utf-8"))["answer"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or unreadable entries are misses; the next write replaces them

    def _cache_put(self, key: str, task: str, answer: str) -> None:
        """Temp file + os.replace so a crash or a concurrent writer never leaves a half-written entry."""
        if self.cache_dir is None:
            return
        record = {"model": self.model, "task": task, "answer": answer}
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f, ensure_ascii=False)
            os.replace(tmp, self.cache_dir / f"{key}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class OfflineBackend:
    """Deterministic, network-free backend: each task is a plain function the data engine supplies."""

    name = "offline"

    def __init__(self, handlers: Mapping[str, Callable[..., str]]):
        self.handlers = dict(handlers)

    def run(
        self,
        task: str,
        *,
        text: str | None = None,
        images: Sequence[bytes] = (),
        params: Mapping[str, Any] | None = None,
    ) -> str:
        handler = self.handlers.get(task)
        if handler is None:
            raise LLMError(
                f"offline backend has no handler for task {task!r}; known tasks: {sorted(self.handlers)}"
            )
        answer = handler(text=text, images=tuple(images), params=dict(params or {}))
        if not isinstance(answer, str):
            raise LLMError(f"offline handler for {task!r} returned {type(answer).__name__}, not str")
        return answer

    def run_many(self, requests: Sequence[Request]) -> list[str]:
        return [self.run(r.task, text=r.text, images=r.images, params=r.params) for r in requests]


def make_backend(
    spec: str,
    prompts: PromptLibrary | None = None,
    handlers: Mapping[str, Callable[..., str]] | None = None,
    **options: Any,
) -> Backend:
    """`offline`, or an OpenAI-compatible base URL (`http://host:8000/v1`).

    The model name and API key come from DUOGEN_LLM_MODEL / DUOGEN_LLM_API_KEY so they stay out of configs;
    `options` (timeout, cache_dir, max_concurrency, ...) go to the HTTP backend.
    """
    if spec == "offline":
        if handlers is None:
            raise ValueError("the offline backend needs handlers (task -> function)")
        return OfflineBackend(handlers)
    if spec.startswith(("http://", "https://")):
        if prompts is None:
            raise ValueError(f"backend {spec!r} needs a PromptLibrary")
        model = os.environ.get("DUOGEN_LLM_MODEL")
        if not model:
            raise ValueError(f"backend {spec!r} needs the model name in DUOGEN_LLM_MODEL")
        api_key = os.environ.get("DUOGEN_LLM_API_KEY") or None
        return OpenAICompatibleBackend(spec, model, api_key, prompts=prompts, **options)
    raise ValueError(f"unknown LLM backend {spec!r}; use 'offline' or an http(s):// base URL ending in /v1")
