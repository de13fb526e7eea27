"""The Open Responses specification's own JSON schemas (tests/data/openresponses/openapi.json, version
2026-04-24): a validator for any component schema, and a stream event's schema found by its `type`."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

SPEC = json.loads((Path(__file__).parent / "data" / "openresponses" / "openapi.json").read_text())
SCHEMAS = SPEC["components"]["schemas"]
VERSION = SPEC["info"]["version"]


@cache
def validator(name: str) -> Draft202012Validator:
    """The component schema `name` (its `$ref`s resolve inside the document)."""
    if name not in SCHEMAS:
        raise KeyError(f"the Open Responses document {VERSION} has no schema {name!r}")
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]})


@cache
def event_schema(kind: str) -> str:
    """The name of the streaming event schema whose `type` is `kind` (`response.created` ->
    ResponseCreatedStreamingEvent); a KeyError for an event the specification does not define."""
    for name, schema in SCHEMAS.items():
        if name.endswith("StreamingEvent") and schema.get("properties", {}).get("type", {}).get("enum") == [
            kind
        ]:
            return name
    raise KeyError(f"the Open Responses document {VERSION} defines no stream event {kind!r}")


def problems(name: str, instance: object) -> list[str]:
    """Every way `instance` breaks schema `name`, as `path: message` lines (empty: it conforms)."""
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '.'}: {e.message[:300]}"
        for e in validator(name).iter_errors(instance)
    ]
