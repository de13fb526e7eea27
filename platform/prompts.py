"""Prompt files for the data engine's LLM tasks: one `<task>.txt` per task, kept out of code so they can be
reviewed and tuned without touching the backends.

A file has an optional `system:` section followed by a `user:` section (a file without headers is all user
text). Placeholders are `str.format` fields: `{text}` is the task's input text, any other `{name}` comes from
the request's params; write literal braces as `{{` and `}}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_HEADER = re.compile(r"^(system|user):[ \t]*", re.MULTILINE)


class PromptError(KeyError):
    """An unknown task or a placeholder with no value; a KeyError for callers, with a readable message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Values(dict):
    """format_map values that name the task and the missing placeholder instead of a bare KeyError('x')."""

    def __init__(self, task: str, values: Mapping[str, Any]):
        super().__init__(values)
        self.task = task

    def __missing__(self, key: str):
        have = ", ".join(sorted(self)) or "none"
        raise PromptError(f"prompt {self.task!r} needs placeholder {{{key}}} but got no value (have: {have})")


def parse_prompt(source: str) -> tuple[str, str]:
    """Split a prompt file into (system, user); headers count only at the start of a line."""
    headers = list(_HEADER.finditer(source))
    if not headers:
        return "", source.strip()
    if source[: headers[0].start()].strip():
        raise ValueError("text before the first 'system:'/'user:' header")
    sections: dict[str, str] = {}
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(source)
        name = match.group(1)
        if name in sections:
            raise ValueError(f"section {name + ':'!r} appears twice")
        sections[name] = source[match.end() : end].strip()
    if "user" not in sections:
        raise ValueError("no 'user:' section")
    if list(sections)[0] != "system" and "system" in sections:
        raise ValueError("'system:' must come before 'user:'")
    return sections.get("system", ""), sections["user"]


class PromptLibrary:
    """The prompt folder; files are read on each render so edits show up without a restart."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"prompt folder {self.folder} does not exist")

    @property
    def tasks(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.txt"))

    def load(self, task: str) -> tuple[str, str]:
        path = self.folder / f"{task}.txt"
        if not path.is_file():
            raise PromptError(f"no prompt for task {task!r} in {self.folder}; known tasks: {self.tasks}")
        try:
            return parse_prompt(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def render(
        self, task: str, text: str | None = None, params: Mapping[str, Any] | None = None
    ) -> tuple[str, str]:
        """(system, user) with placeholders filled; `text` wins over a param of the same name."""
        system, user = self.load(task)
        values = _Values(task, {**(params or {}), **({"text": text} if text is not None else {})})
        return system.format_map(values), user.format_map(values)
