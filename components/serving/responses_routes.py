"""The Responses routes (`POST /responses`, `GET` and `DELETE /responses/{id}`), in two vocabularies.

`/openai/v1` speaks OpenAI's: a picture is an `image_generation_call` item with
`response.image_generation_call.*` progress events, what the official `openai` client parses.
`/openresponses/v1` speaks the Open Responses specification's: the spec has no picture item and says an
implementor's own items and events carry its slug, so a picture is a `duogen:image_generation_call` item with
`duogen:image_generation_call.*` events. Everything
else (text items, the response object, stream framing, refusals, stored responses) is the same code. Either
vocabulary's picture items are accepted back as input, and both share one response store.
"""

from __future__ import annotations

import asyncio
import dataclasses

from fastapi import APIRouter, Request

from .convert import responses_conversation
from .openai_output import DONE, OPENAI, ResponseBuilder, Vocabulary
from .openai_routes import (
    NotFound,
    Unsupported,
    check_model,
    stream_error,
    stream_response,
    until_disconnect,
)
from .predictor import DuoGenPredictor
from .response_store import ResponseStore
from .schemas import INPUT_ITEMS, ResponsesRequest


def responses_router(
    predictor: DuoGenPredictor,
    store: ResponseStore | None,
    prefix: str = "/openai/v1",
    vocabulary: Vocabulary = OPENAI,
) -> APIRouter:
    """`store` keeps responses for `previous_response_id` and GET/DELETE (None: none are kept)."""
    router = APIRouter(prefix=prefix)
    limits = predictor.settings.limits

    @router.post("/responses")
    async def responses(body: ResponsesRequest, request: Request):
        check_model(predictor, body.model)
        if (refused := body.refusal()) is not None:
            raise Unsupported(*refused)
        if body.previous_response_id is not None:
            earlier = await stored_conversation(store, body.previous_response_id)
            body = body.model_copy(
                update={"input": INPUT_ITEMS.validate_python(earlier) + body.input_items()}
            )
        keep = store is not None and body.store is not False
        conversation = await responses_conversation(body, limits)
        options = predictor.options(body, body.max_output_tokens, force_bov=body.starts_with_image())
        if body.tool_choice == "none":  # no tool call: no picture
            options = dataclasses.replace(options, max_images=0)
        rid = request.state.request_id
        builder = ResponseBuilder(predictor.name, body, options, stored=keep, vocabulary=vocabulary)
        events = predictor.stream(conversation, options, rid)

        async def save() -> None:
            if keep and builder.finished is not None:
                context = [item.model_dump(exclude_none=True) for item in body.input_items()]
                await asyncio.to_thread(store.put, builder.response(builder.status()), context)

        if not body.stream:

            async def run() -> dict:
                async for event in events:
                    builder.feed(event, body.size)
                await save()
                return builder.response(builder.status())

            return await until_disconnect(request, run(), [events])

        async def chunks():
            for chunk in builder.start():
                yield chunk
            try:
                async for event in events:
                    for chunk in builder.feed(event, body.size):
                        yield chunk
            except Exception as err:  # noqa: BLE001 - the status is sent: say it in the stream
                for chunk in builder.fail(*stream_error(err, rid)):
                    yield chunk
            finally:
                await events.aclose()
            await save()
            yield DONE

        return stream_response(chunks(), f"{prefix}/responses")

    @router.get("/responses/{response_id}")
    async def get_response(response_id: str) -> dict:
        record = await asyncio.to_thread(store.get, response_id) if store else None
        if record is None:
            raise NotFound("response_id", f"no stored response {response_id!r}")
        return record["response"]

    @router.delete("/responses/{response_id}")
    async def delete_response(response_id: str) -> dict:
        if not (store and await asyncio.to_thread(store.delete, response_id)):
            raise NotFound("response_id", f"no stored response {response_id!r}")
        return {"id": response_id, "object": "response", "deleted": True}

    return router


async def stored_conversation(store: ResponseStore | None, response_id: str) -> list[dict]:
    """The items a follow-up of `response_id` continues from; a 404 naming the field when there are none."""
    if store is None:
        raise NotFound(
            "previous_response_id",
            f"no stored response {response_id!r}: this server keeps no responses (started with "
            "--response-store none); send the earlier turns in input",
        )
    items = await asyncio.to_thread(store.conversation, response_id)
    if items is None:
        raise NotFound(
            "previous_response_id", f"no stored response {response_id!r} (unknown, deleted or expired)"
        )
    return items
