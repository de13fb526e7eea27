"""The pair's events -> OpenAI response objects: Responses (items and SSE), chat completions, images.

Responses: text becomes `message` items with `output_text`, each picture an `image_generation_call` item
(base64 PNG `result`), in the order the pair produced them. Chat completions carry one string `content`,
so a picture is written into it where it was drawn as a Markdown image with a PNG data URL
(`![image 1](data:image/png;base64,...)`): every client parses it unchanged, Markdown renderers show it,
and the place of each picture in the text is kept.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from duogen.model.generate import Finished, ImageDone, ImageStarted, TextDelta, Usage
from duogen.model.images import png_base64

FINISH = {"stop": "stop", "length": "length", "context": "length"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def sse(event: str | None, data: dict | str) -> str:
    body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {body}\n\n"


def markdown_image(index: int, image) -> str:
    return f"![image {index + 1}](data:image/png;base64,{png_base64(image)})"


# --- Responses ---------------------------------------------------------------------------------------------


def _message(item_id: str, text: str, status: str = "completed") -> dict:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text else [],
    }


@dataclass(frozen=True)
class Vocabulary:
    """How a picture is named in a Responses answer: its item's type and its progress events' prefix."""

    image_item: str
    image_events: str


OPENAI = Vocabulary("image_generation_call", "response.image_generation_call")
# the Open Responses spec has no picture item: an implementor's own items and events carry its slug
OPEN_RESPONSES = Vocabulary("duogen:image_generation_call", "duogen:image_generation_call")


def _image_call(item_id: str, image=None, size: str | None = None, kind: str = OPENAI.image_item) -> dict:
    return {
        "type": kind,
        "id": item_id,
        "status": "completed" if image is not None else "in_progress",
        "result": png_base64(image) if image is not None else None,
        "output_format": "png",
        "action": "generate",
        "size": size,
    }


def _usage(usage: Usage | None) -> dict:
    prompt, new = (usage.prompt_tokens, usage.new_tokens) if usage else (0, 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": new,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + new,
    }


class ResponseBuilder:
    """Builds one Responses object from the events; `feed` also returns the SSE events for streaming.

    The object carries every field of the Open Responses `ResponseResource` (all are required there, the
    nullable ones as null): the request's settings echoed as they were applied (`temperature` and `top_p`
    are the values sampling used, not the request's nulls), and what this server does not do stated as such
    (no truncation, no reasoning, no penalties, no background mode)."""

    def __init__(
        self, model: str, request, options, stored: bool = False, vocabulary: Vocabulary = OPENAI
    ) -> None:
        self.id, self.created = new_id("resp"), int(time.time())
        self.model, self.request, self.options, self.stored = model, request, options, stored
        self.vocabulary = vocabulary
        self.output: list[dict] = []
        self.text_open = False
        self.seq = 0
        self.finished: Finished | None = None
        self.completed_at: int | None = None
        self.failure: dict | None = None

    def response(self, status: str) -> dict:
        incomplete = status == "incomplete"
        request, options = self.request, self.options
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "completed_at": self.completed_at,
            "status": status,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "model": self.model,
            "previous_response_id": request.previous_response_id,
            "instructions": request.instructions,
            "output": self.output,
            "error": self.failure,
            "tools": [],
            "tool_choice": request.tool_choice_echo(),
            "truncation": "disabled",
            "parallel_tool_calls": False,
            "text": {"format": {"type": "text"}},
            "top_p": options.top_p,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "top_logprobs": 0,
            "temperature": options.temperature,
            "reasoning": None,
            "usage": _usage(self.finished.usage) if self.finished else None,
            "max_output_tokens": request.max_output_tokens,
            "max_tool_calls": None,
            "store": self.stored,
            "background": False,
            "service_tier": "default",
            "metadata": request.metadata or {},
            "safety_identifier": request.safety_identifier,
            "prompt_cache_key": request.prompt_cache_key,
        }

    def _event(self, kind: str, **fields) -> str:
        self.seq += 1
        return sse(kind, {"type": kind, "sequence_number": self.seq - 1, **fields})

    def _picture_event(self, stage: str, item_id: str, index: int) -> str:
        return self._event(f"{self.vocabulary.image_events}.{stage}", item_id=item_id, output_index=index)

    def _close_text(self, status: str = "completed") -> list[str]:
        """Close the open message item: `incomplete` when the answer was cut there (it is then the last)."""
        if not self.text_open:
            return []
        self.text_open = False
        item = self.output[-1]
        item["status"] = status
        index, part = len(self.output) - 1, item["content"][0]
        return [
            self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            ),
            self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            ),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def start(self) -> list[str]:
        return [
            self._event("response.created", response=self.response("in_progress")),
            self._event("response.in_progress", response=self.response("in_progress")),
        ]

    def feed(self, event, size: str | None = None) -> list[str]:
        out: list[str] = []
        if isinstance(event, TextDelta):
            index = len(self.output) - 1
            if not self.text_open:
                item = _message(new_id("msg"), "", "in_progress")
                item["content"] = [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]
                self.output.append(item)
                self.text_open, index = True, len(self.output) - 1
                out.append(
                    self._event(
                        "response.output_item.added",
                        output_index=index,
                        item=_message(item["id"], "", "in_progress"),
                    )
                )
                out.append(
                    self._event(
                        "response.content_part.added",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        part={"type": "output_text", "text": "", "annotations": []},
                    )
                )
            item = self.output[index]
            item["content"][0]["text"] += event.text
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=event.text,
                    logprobs=[],
                )
            )
        elif isinstance(event, ImageStarted):
            out += self._close_text()
            item = _image_call(new_id("ig"), size=size, kind=self.vocabulary.image_item)
            self.output.append(item)
            index = len(self.output) - 1
            out.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
            for stage in ("in_progress", "generating"):
                out.append(self._picture_event(stage, item["id"], index))
        elif isinstance(event, ImageDone):
            index = len(self.output) - 1
            size = f"{event.image.width}x{event.image.height}"
            item = self.output[index] = _image_call(
                self.output[index]["id"], event.image, size, self.vocabulary.image_item
            )
            out.append(self._picture_event("completed", item["id"], index))
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        elif isinstance(event, Finished):
            self.finished, self.completed_at = event, int(time.time())
            status = self.status()
            out += self._close_text(status)
            kind = "response.completed" if status == "completed" else "response.incomplete"
            out.append(self._event(kind, response=self.response(status)))
        return out

    def status(self) -> str:
        if self.failure is not None:
            return "failed"
        return "incomplete" if self.finished and self.finished.reason != "stop" else "completed"

    def fail(self, kind: str, code: str, message: str) -> list[str]:
        """A failure after the stream started: the spec's `error` event (its payload nested under `error`,
        where both official SDKs look to raise) followed by `response.failed` carrying the error."""
        self.failure = {"code": code, "message": message}
        error = {"type": kind, "code": code, "message": message, "param": None}
        return [
            self._event("error", error=error),
            self._event("response.failed", response=self.response("failed")),
        ]


DONE = sse(None, "[DONE]")  # the terminal event of every stream (Open Responses and chat completions alike)


# --- Chat completions --------------------------------------------------------------------------------------


def chat_completion(model: str, answers: list[dict]) -> dict:
    """`answers`: one `Answer` per choice."""
    prompt = answers[0].finished.usage.prompt_tokens
    completion = sum(a.finished.usage.new_tokens for a in answers)
    choices = []
    for i, answer in enumerate(answers):
        images = 0
        content = ""
        for part in answer.parts:
            if isinstance(part, str):
                content += part
            else:
                content += markdown_image(images, part)
                images += 1
        choices.append(
            {
                "index": i,
                "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                "finish_reason": FINISH[answer.finished.reason],
                "logprobs": None,
            }
        )
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class ChatChunks:
    """Chat completion chunks for a stream of (choice index, event)."""

    def __init__(self, model: str) -> None:
        self.id, self.created, self.model = new_id("chatcmpl"), int(time.time()), model
        self.started: set[int] = set()
        self.images: dict[int, int] = {}

    def _chunk(self, index: int, delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if usage is not None:
            body["usage"] = usage
        return sse(None, body)

    def feed(self, index: int, event) -> list[str]:
        out = []
        if index not in self.started:
            self.started.add(index)
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        if isinstance(event, TextDelta):
            out.append(self._chunk(index, {"content": event.text}))
        elif isinstance(event, ImageDone):
            n = self.images.get(index, 0)
            self.images[index] = n + 1
            out.append(self._chunk(index, {"content": markdown_image(n, event.image)}))
        elif isinstance(event, Finished):
            u = event.usage
            usage = {
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.new_tokens,
                "total_tokens": u.prompt_tokens + u.new_tokens,
            }
            out.append(self._chunk(index, {}, FINISH[event.reason], usage))
        return out


# --- Images -----------------------------------------------------------------------------------------------


def images_response(images: list, usage: list[Usage]) -> dict:
    size = f"{images[0].width}x{images[0].height}" if images else None
    prompt = sum(u.prompt_tokens for u in usage)
    return {
        "created": int(time.time()),
        "data": [{"b64_json": png_base64(im), "revised_prompt": None} for im in images],
        "output_format": "png",
        "size": size,
        "usage": {
            "input_tokens": prompt,
            "output_tokens": 0,
            "total_tokens": prompt,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": prompt},
        },
    }
