"""`KEY=VALUE` items of the command line (`--set`, `--default`, `--gate`, training overrides): one parser,
one error message; each caller types the values its own way."""

from __future__ import annotations

from collections.abc import Iterable

from duogen.model.errors import DuoGenInputError


def split_items(
    items: Iterable[str] | None, flag: str, key: str = "KEY", value: str = "VALUE"
) -> list[tuple[str, str]]:
    """[(key, value)] in order; an item without `=` or with an empty key is a `DuoGenInputError` naming it."""
    out = []
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise DuoGenInputError(f"{flag} {item!r} is not {key}={value}")
        out.append((name, text))
    return out
