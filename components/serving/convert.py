"""OpenAI request bodies -> the pair's conversation (turns of text and PIL images, in the client's order).

A user turn keeps its parts in the order the client sent them (image before text or after). Pictures of
earlier answers come back as the client holds them: `image_generation_call` items (Responses) or the
Markdown data-URL images this server writes into chat `content`; both become assistant images, so a
follow-up request is drawn consistent with them.
"""

from __future__ import annotations

import re

from duogen.model.errors import DuoGenInputError

from .inputs import ImageLimits, decode_base64, load_image_url
from .schemas import ChatRequest, InputImageCall, ResponsesRequest

# What `chat_content` writes for a picture; read back when a client sends the answer in a later turn.
MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\((data:image/[a-z]+;base64,[A-Za-z0-9+/=]+)\)")

ROLE = {"developer": "system"}


class _Images:
    """Counts images over the whole request, so the limit holds however they are spread."""

    def __init__(self, limits: ImageLimits) -> None:
        self.limits, self.count = limits, 0

    def _count(self, what: str) -> None:
        self.count += 1
        if self.count > self.limits.max_images:
            raise DuoGenInputError(
                f"{what}: more than the limit of {self.limits.max_images} images per request"
            )

    async def url(self, url: str, what: str) -> dict:
        self._count(what)
        return {"type": "image", "image": await load_image_url(url, self.limits, what)}

    def base64(self, data: str, what: str) -> dict:
        self._count(what)
        return {"type": "image", "image": decode_base64(data, self.limits, what)}


async def _text_with_images(text: str, images: _Images, what: str) -> list[dict]:
    """Assistant text as this server wrote it: Markdown data-URL images become pictures in place."""
    parts, at = [], 0
    for k, match in enumerate(MARKDOWN_IMAGE.finditer(text)):
        if match.start() > at:
            parts.append({"type": "text", "text": text[at : match.start()]})
        parts.append(await images.url(match.group(1), f"{what} image {k}"))
        at = match.end()
    if at < len(text):
        parts.append({"type": "text", "text": text[at:]})
    return parts


def _add(turns: list[dict], role: str, parts: list[dict]) -> None:
    if turns and turns[-1]["role"] == role == "assistant":
        turns[-1]["content"].extend(parts)  # a picture item continues the answer it belongs to
    else:
        turns.append({"role": role, "content": parts})


async def responses_conversation(body: ResponsesRequest, limits: ImageLimits) -> list[dict]:
    images = _Images(limits)
    turns: list[dict] = []
    if body.instructions:
        turns.append({"role": "system", "content": [{"type": "text", "text": body.instructions}]})
    items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    for i, item in enumerate(items):
        what = f"input[{i}]"
        if isinstance(item, InputImageCall):
            _add(turns, "assistant", [images.base64(item.result, f"{what}.result")])
            continue
        role = item["role"] if isinstance(item, dict) else ROLE.get(item.role, item.role)
        content = item["content"] if isinstance(item, dict) else item.content
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = []
            for j, part in enumerate(content):
                if part.type == "input_image":
                    parts.append(await images.url(part.image_url, f"{what}.content[{j}]"))
                else:
                    parts.append({"type": "text", "text": part.text})
        _add(turns, role, parts)
    return turns


async def chat_conversation(body: ChatRequest, limits: ImageLimits) -> list[dict]:
    images = _Images(limits)
    turns: list[dict] = []
    for i, message in enumerate(body.messages):
        what = f"messages[{i}]"
        role = ROLE.get(message.role, message.role)
        if message.content is None:
            continue
        if isinstance(message.content, str):
            if role == "assistant":
                parts = await _text_with_images(message.content, images, what)
            else:
                parts = [{"type": "text", "text": message.content}]
        else:
            parts = []
            for j, part in enumerate(message.content):
                if part.type == "image_url":
                    parts.append(await images.url(part.image_url.url, f"{what}.content[{j}]"))
                else:
                    parts.append({"type": "text", "text": part.text})
        _add(turns, role, parts)
    if not turns:
        raise DuoGenInputError("messages: no message has content")
    return turns


def image_request_conversation(prompt: str, pictures: list) -> list[dict]:
    """Text to image (no pictures) or editing: the request text, then the reference pictures."""
    return [{"role": "user", "content": [{"type": "text", "text": prompt}, *pictures]}]
