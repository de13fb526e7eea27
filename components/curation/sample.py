"""The one schema for every interleaved sample, whatever stage or source made it.

A sample is a conversation: turns of ordered parts — text, an image reference (a name inside the sample's
shard entry), or the `<BOV>` marker that tells the MLLM to draw the next image — plus where it came from
(source) and how (lineage: input URL/file, stage versions, content hashes). Validation names the sample
and the field, so a bad record in a shard of thousands can be found.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "image", "bov")


class SampleFormatError(ValueError):
    """A record does not follow the sample schema; the message names the sample and the field."""


@dataclass
class Part:
    type: Literal["text", "image", "bov"]
    text: str | None = None  # for text
    ref: str | None = None  # for image: the image's name in the sample's shard entry
    caption: str | None = None  # for image: what the captioner said
    category: str | None = None  # for image: natural_photo / gui_screenshot / document_page / illustration


@dataclass
class Turn:
    role: Literal["system", "user", "assistant"]
    parts: list[Part]


@dataclass
class Lineage:
    input: str  # URL or file the sample was made from
    stages: dict[str, str] = field(default_factory=dict)  # stage name -> version
    hashes: dict[str, str] = field(default_factory=dict)  # content name -> sha256
    dropped: dict[str, str] = field(default_factory=dict)  # what a stage left out (e.g. image src) -> reason


@dataclass
class Sample:
    id: str
    turns: list[Turn]
    source: str  # "web", "synthetic", "video", "alignment", "toyworld", ...
    lineage: Lineage

    def image_refs(self) -> list[str]:
        return [p.ref for t in self.turns for p in t.parts if p.type == "image"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Sample:
        """Build and validate; raises SampleFormatError naming what is wrong."""
        if not isinstance(data, dict):
            raise SampleFormatError(f"a sample must be a JSON object, got {type(data).__name__}")
        sid = data.get("id")
        where = f"sample {sid!r}"
        if not isinstance(sid, str) or not sid:
            raise SampleFormatError("sample has no string 'id'")
        for key in ("turns", "source", "lineage"):
            if key not in data:
                raise SampleFormatError(f"{where}: missing field {key!r}")
        lin = data["lineage"]
        if not isinstance(lin, dict) or not isinstance(lin.get("input"), str):
            raise SampleFormatError(f"{where}: lineage must be an object with a string 'input'")
        turns = []
        for i, t in enumerate(data["turns"] if isinstance(data["turns"], list) else []):
            if not isinstance(t, dict) or t.get("role") not in ROLES:
                raise SampleFormatError(f"{where}: turn {i} has no valid role (one of {ROLES})")
            parts = []
            for j, p in enumerate(t.get("parts") or []):
                parts.append(_part(p, f"{where}: turn {i} part {j}"))
            if not parts:
                raise SampleFormatError(f"{where}: turn {i} has no parts")
            turns.append(Turn(t["role"], parts))
        if not turns:
            raise SampleFormatError(f"{where}: 'turns' must be a non-empty list")
        lineage = Lineage(
            lin["input"],
            dict(lin.get("stages") or {}),
            dict(lin.get("hashes") or {}),
            dict(lin.get("dropped") or {}),
        )
        sample = cls(sid, turns, str(data["source"]), lineage)
        sample.validate()
        return sample

    def validate(self) -> None:
        """Structural rules: a `<BOV>` sits only in assistant turns and is followed by an image."""
        for i, turn in enumerate(self.turns):
            for j, part in enumerate(turn.parts):
                if part.type != "bov":
                    continue
                if turn.role != "assistant":
                    raise SampleFormatError(
                        f"sample {self.id!r}: turn {i} part {j}: <BOV> outside an assistant turn"
                    )
                nxt = turn.parts[j + 1] if j + 1 < len(turn.parts) else None
                if nxt is None or nxt.type != "image":
                    raise SampleFormatError(
                        f"sample {self.id!r}: turn {i} part {j}: <BOV> not followed by an image"
                    )


def _part(p: Any, where: str) -> Part:
    if not isinstance(p, dict) or p.get("type") not in PART_TYPES:
        raise SampleFormatError(f"{where}: part type must be one of {PART_TYPES}")
    if p["type"] == "text" and not isinstance(p.get("text"), str):
        raise SampleFormatError(f"{where}: text part without a string 'text'")
    if p["type"] == "image" and not (isinstance(p.get("ref"), str) and p["ref"]):
        raise SampleFormatError(f"{where}: image part without a 'ref'")
    return Part(p["type"], p.get("text"), p.get("ref"), p.get("caption"), p.get("category"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
