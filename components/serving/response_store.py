"""Stored responses: what `previous_response_id`, `GET /responses/{id}` and `DELETE /responses/{id}` read.

One JSON object per response under a folder or an `s3://` prefix (`duogen serve --response-store`): every
replica of an InferenceService given the same prefix continues every other's conversations. Each record
keeps the response and the conversation it answered (the items of every earlier turn, their pictures as
base64 PNGs), so a follow-up sends only its new turn and the earlier pictures are still condition frames.
A record expires `ttl_s` after it was written (bounded retention of users' conversations); reading an
expired one deletes it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from duogen.platform import storage

RESPONSE_ID = re.compile(r"^resp_[0-9a-f]{32}$")  # what `openai_output.new_id("resp")` makes


class ResponseStore:
    def __init__(self, root: str, ttl_s: float = 24 * 3600, clock: Callable[[], float] = time.time) -> None:
        if ttl_s <= 0:
            raise ValueError(f"the response store's retention must be positive, got {ttl_s} s")
        self.root, self.ttl_s, self.clock = root, ttl_s, clock

    def _path(self, response_id: str) -> str | None:
        return storage.join(self.root, f"{response_id}.json") if RESPONSE_ID.match(response_id) else None

    def put(self, response: dict, context: list[dict]) -> None:
        """Keep `response` with `context`, the input items it answered (earlier turns included)."""
        record = {"expires_at": self.clock() + self.ttl_s, "response": response, "context": context}
        storage.write_text(self._path(response["id"]), json.dumps(record, separators=(",", ":")))

    def get(self, response_id: str) -> dict | None:
        """The record ({"response", "context"}) or None: unknown, malformed id, or expired (then deleted)."""
        path = self._path(response_id)
        text = storage.read_text(path) if path else None
        if text is None:
            return None
        record = json.loads(text)
        if record["expires_at"] <= self.clock():
            storage.delete(path)
            return None
        return record

    def delete(self, response_id: str) -> bool:
        path = self._path(response_id)
        return storage.delete(path) if path else False

    def conversation(self, response_id: str) -> list[dict] | None:
        """Every item of the conversation up to and including the stored response's output: the input a
        follow-up continues from."""
        record = self.get(response_id)
        return None if record is None else record["context"] + record["response"]["output"]
