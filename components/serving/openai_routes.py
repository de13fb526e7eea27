"""The OpenAI-style routes, mounted on the KServe server's FastAPI app under `/openai/v1` (the Responses
routes are in responses_routes.py), and what every such route shares: disconnect handling, SSE responses,
errors.

Protocol only: each route validates its body (schemas.py), turns it into a conversation (convert.py),
asks the predictor for events and writes them out (openai_output.py). Errors are raised as exceptions that
`server.py` turns into OpenAI-style error bodies (400 / 404 / 429 / 504).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from duogen.model.errors import DuoGenInputError

from . import metrics
from .convert import chat_conversation, image_request_conversation
from .engine import RequestTimeout
from .inputs import decode_image
from .openai_output import DONE, ChatChunks, chat_completion, images_response, sse
from .predictor import DuoGenPredictor, collect
from .schemas import ChatRequest, ImagesRequest

log = logging.getLogger("duogen.serving")


class FieldError(Exception):
    """An error about one request field: its answer's `param` names the field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class Unsupported(FieldError):
    """The field asks for what this server does not do: a 400."""


class NotFound(FieldError):
    """The field names something this server does not have (a stored response): a 404 `not_found`."""


class UnknownModel(Exception):
    def __init__(self, name: str, served: str) -> None:
        super().__init__(f"model {name!r} is not served here; this server serves {served!r}")


def check_model(predictor: DuoGenPredictor, name: str | None) -> None:
    if name is not None and name != predictor.name:
        raise UnknownModel(name, predictor.name)


async def until_disconnect(request: Request, work, streams: list):
    """Run `work` over `streams`; stop it if the client goes away (a non-streaming request has no other
    signal). The streams are closed however it ends, which frees their places in the queue."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise asyncio.CancelledError("client disconnected")
    finally:
        if not task.done():
            task.cancel()
        for stream in streams:
            await stream.aclose()


def stream_response(chunks: AsyncIterator[str], route: str) -> StreamingResponse:
    async def timed():
        start, first = time.perf_counter(), True
        async for chunk in chunks:
            if first:
                metrics.FIRST_EVENT.labels(route).observe(time.perf_counter() - start)
                first = False
            yield chunk

    return StreamingResponse(timed(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _merged(streams: list[AsyncIterator]) -> AsyncIterator[tuple[int, object]]:
    """Events of several choices as (choice index, event), as each arrives."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, events: AsyncIterator) -> None:
        try:
            async for event in events:
                await queue.put((i, event))
        except Exception as err:  # noqa: BLE001 - re-raised by the consumer
            await queue.put((i, err))
        finally:
            await events.aclose()
            queue.put_nowait((i, done))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        left = len(tasks)
        while left:
            i, item = await queue.get()
            if item is done:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            await stream.aclose()


def openai_router(predictor: DuoGenPredictor) -> APIRouter:
    """Models, chat completions and images (the Responses routes are `responses_routes.py`'s)."""
    router = APIRouter(prefix="/openai/v1")
    limits = predictor.settings.limits

    @router.get("/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": predictor.name, "object": "model", "created": 0, "owned_by": "duogen"}],
        }

    @router.post("/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        check_model(predictor, body.model)
        conversation = await chat_conversation(body, limits)
        stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
        tokens = body.max_completion_tokens or body.max_tokens
        base = predictor.options(body, tokens, force_bov=body.force_image, stop=stop)
        rid = request.state.request_id
        streams = await _admit(predictor, conversation, base, body.n, rid)
        if not body.stream:
            answers = await until_disconnect(request, asyncio.gather(*(collect(s) for s in streams)), streams)
            return chat_completion(predictor.name, list(answers))
        builder = ChatChunks(predictor.name)

        async def chunks():
            merged = _merged(streams)
            try:
                async for i, event in merged:
                    for chunk in builder.feed(i, event):
                        yield chunk
                yield DONE
            except Exception as err:  # noqa: BLE001 - the status is sent: say it in the stream
                kind, code, message = stream_error(err, rid)
                yield sse(None, {"error": {"message": message, "type": kind, "code": code, "param": None}})
            finally:
                await merged.aclose()

        return stream_response(chunks(), "/openai/v1/chat/completions")

    async def draw(body: ImagesRequest, request: Request, pictures: list) -> dict:
        check_model(predictor, body.model)
        conversation = image_request_conversation(body.prompt, pictures)
        base = predictor.options(body, 1, force_bov=True)
        base.max_images = 1
        if body.size and pictures:  # an edit is drawn at the asked size: the references are fitted to it
            size = predictor.image_size(body.size)
            for part in pictures:
                part["image"] = part["image"].convert("RGB").resize(size)
        rid = request.state.request_id
        streams = await _admit(predictor, conversation, base, body.n, rid)
        answers = await until_disconnect(request, asyncio.gather(*(collect(s) for s in streams)), streams)
        images = [image for a in answers for image in a.images]
        return images_response(images, [a.finished.usage for a in answers])

    @router.post("/images/generations")
    async def generations(body: ImagesRequest, request: Request):
        return await draw(body, request, [])

    @router.post(
        "/images/edits",
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["image", "prompt"],
                            "properties": {
                                "image": {"type": "string", "format": "binary"},
                                "prompt": {"type": "string"},
                                "n": {"type": "integer"},
                                "size": {"type": "string"},
                                "seed": {"type": "integer"},
                            },
                        }
                    }
                },
                "required": True,
            }
        },
    )
    async def edits(request: Request):
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise DuoGenInputError("images/edits takes multipart/form-data with 'image' file(s) and 'prompt'")
        try:
            form = await request.form(max_files=limits.max_images, max_fields=64)
        except Exception as err:  # noqa: BLE001 - starlette raises several kinds for a bad form
            raise DuoGenInputError(f"cannot read the multipart form: {err}") from None
        files = [*form.getlist("image"), *form.getlist("image[]")]
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str) and k not in ("image", "image[]")}
        try:
            body = ImagesRequest.model_validate(fields)
        except ValidationError as err:
            raise DuoGenInputError(validation_message(err)[1]) from None
        if not files or any(isinstance(f, str) for f in files):
            raise DuoGenInputError("images/edits needs one or more 'image' files")
        pictures = []
        for i, upload in enumerate(files):
            data = await upload.read(limits.max_bytes + 1)
            pictures.append({"type": "image", "image": decode_image(data, limits, f"image[{i}]")})
        return await draw(body, request, pictures)

    return router


async def _admit(predictor: DuoGenPredictor, conversation, options, n: int, rid: str) -> list:
    """`n` choices, seeds `seed`, `seed + 1`, ...: all admitted, or none (a refusal frees the others)."""
    streams = []
    try:
        for i in range(n):
            choice = dataclasses.replace(options, seed=options.seed + i)
            streams.append(predictor.stream(conversation, choice, f"{rid}-{i}" if n > 1 else rid))
    except BaseException:
        for stream in streams:
            await stream.aclose()
        raise
    return streams


def stream_error(err: Exception, rid: str) -> tuple[str, str, str]:
    """(type, code, message) for an error after a stream has started; no internals for unexpected ones."""
    if isinstance(err, DuoGenInputError):
        return "invalid_request_error", "invalid_request", str(err)
    if isinstance(err, RequestTimeout):
        return "server_error", "timeout", str(err)
    log.error("error while streaming", exc_info=err, extra={"fields": {"request_id": rid}})
    return "server_error", "server_error", f"internal server error (request id {rid})"


TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _where(error: dict) -> str:
    """A pydantic error's location as the field path a client wrote (`input[0].content[1]`), without the
    union members pydantic puts in it (`list[union[...]]`, `InputMessage`, `str`)."""
    path = ""
    for part in error.get("loc", ()):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "body" and "[" not in part and not part[:1].isupper() and part not in TYPE_TAGS:
            path += f".{part}" if path else part
    return path or "body"


def validation_message(err) -> tuple[str, str]:
    """(param, message): the first field that is wrong and one line a person can read about it."""
    errors = err.errors()
    first = max(errors, key=lambda e: len(e.get("loc", ())), default={})  # the most specific
    param = _where(first)
    return param, f"{param}: {first.get('msg', 'invalid request')}"


def validation_error_response(err) -> JSONResponse:
    param, message = validation_message(err)
    body = {"message": message, "type": "invalid_request_error", "param": param, "code": "invalid_value"}
    return JSONResponse(status_code=400, content={"error": body})
