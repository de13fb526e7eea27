"""The Open Responses specification's own JSON schemas (tests/data/openresponses/openapi.json, version
2026-04-24): a validator for any component schema, and a stream event's schema found by its `type`. With
`extended=True` the document also holds DuoGen's published extension (components/serving/
openresponses_extension.json: its picture item joins the item union, its progress events are events)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

import duogen.components.serving as serving

SPEC = json.loads((Path(__file__).parent / "data" / "openresponses" / "openapi.json").read_text())
VERSION = SPEC["info"]["version"]
EXTENSION = json.loads((Path(serving.__file__).parent / "openresponses_extension.json").read_text())


@cache
def document(extended: bool) -> dict:
    if not extended:
        return SPEC
    doc = copy.deepcopy(SPEC)
    doc["components"]["schemas"].update(EXTENSION["components"]["schemas"])
    doc["components"]["schemas"]["ItemField"]["oneOf"].append(
        {"$ref": "#/components/schemas/DuoGenImageGenerationCall"}
    )
    return doc


@cache
def validator(name: str, extended: bool = False) -> Draft202012Validator:
    """The component schema `name` (its `$ref`s resolve inside the document)."""
    components = document(extended)["components"]
    if name not in components["schemas"]:
        raise KeyError(f"the Open Responses document {VERSION} has no schema {name!r}")
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": components})


@cache
def event_schema(kind: str, extended: bool = False) -> str:
    """The name of the streaming event schema whose `type` is `kind` (`response.created` ->
    ResponseCreatedStreamingEvent); a KeyError for an event the document does not define."""
    for name, schema in document(extended)["components"]["schemas"].items():
        if name.endswith("StreamingEvent") and kind in schema.get("properties", {}).get("type", {}).get(
            "enum", []
        ):
            return name
    raise KeyError(f"the Open Responses document {VERSION} defines no stream event {kind!r}")


def problems(name: str, instance: object, extended: bool = False) -> list[str]:
    """Every way `instance` breaks schema `name`, as `path: message` lines (empty: it conforms)."""
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '.'}: {e.message[:300]}"
        for e in validator(name, extended).iter_errors(instance)
    ]
