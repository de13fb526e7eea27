"""Adapters from published text-to-image / editing dataset layouts into the common sample format.

- ShareGPT-4o-Image (`text_to_image.json`, `text_and_image_to_image.json`): a JSON list of records with
  `input_prompt`, `output_image` and, for editing, `input_image` (a path or a list of paths).
- Instruction pairs (`*.jsonl`): one JSON object per line with an instruction and a source and target image;
  the common key spellings (`instruction` / `edit_instruction` / `prompt`, `source_image` / `input_image`,
  `target_image` / `edited_image` / `output_image`) are all accepted.
Image paths are relative to the dataset file. A record with a missing or unreadable image is counted and
skipped. Each record becomes: user = [input images..., prompt], assistant = [<BOV>, output image].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .executor import Item, StageContext, WorkUnit
from .image_filters import decode
from .sample import Lineage, Part, Sample, Turn, sha256

STAGE_VERSION = "alignment-1"
PROMPT_KEYS = ("input_prompt", "instruction", "edit_instruction", "prompt", "text")
INPUT_KEYS = ("input_image", "source_image", "input_images", "image")
OUTPUT_KEYS = ("output_image", "target_image", "edited_image")


def _first(record: dict, keys: tuple[str, ...]) -> Any:
    return next((record[k] for k in keys if record.get(k)), None)


def read_records(path: str | Path) -> list[dict]:
    """The records of a ShareGPT-4o-Image JSON list or an instruction-pair JSONL file."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"{path.name}: expected a JSON list of records")
    return data


def record_to_item(record: dict, base: Path, key: str, ctx: StageContext) -> Item | None:
    prompt = _first(record, PROMPT_KEYS)
    output = _first(record, OUTPUT_KEYS)
    inputs = _first(record, INPUT_KEYS) or []
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    if not isinstance(prompt, str) or not isinstance(output, str):
        ctx.count("records_dropped:missing_fields")
        return None
    files: dict[str, bytes] = {}
    refs = []
    for i, rel in enumerate([*inputs, output]):
        path = base / rel
        data = path.read_bytes() if path.is_file() else None
        if data is None or isinstance(decode(data), str):
            ctx.count("records_dropped:bad_image")
            return None
        ext = "png" if data[:4] == b"\x89PNG" else "jpg"
        refs.append(f"img{i}.{ext}")
        files[refs[-1]] = data
    user = [Part("image", ref=r) for r in refs[:-1]] + [Part("text", text=prompt.strip())]
    sample = Sample(
        id=f"align-{sha256(key.encode())[:16]}",
        turns=[Turn("user", user), Turn("assistant", [Part("bov"), Part("image", ref=refs[-1])])],
        source="alignment",
        lineage=Lineage(key, {"alignment": STAGE_VERSION}, {r: sha256(d) for r, d in files.items()}),
    )
    ctx.count("editing" if inputs else "text_to_image")
    return sample, files


def alignment_stage(unit: WorkUnit, ctx: StageContext) -> list[Item]:
    """Executor stage: each input is a dataset file; every valid record becomes a sample."""
    items = []
    for spec in unit.inputs:
        try:
            records = read_records(spec)
        except (OSError, ValueError) as err:
            ctx.count("files_dropped:unreadable")
            ctx.count(f"unreadable:{type(err).__name__}")
            continue
        base = Path(spec).parent
        for n, record in enumerate(records):
            ctx.count("records_in")
            if not isinstance(record, dict):
                ctx.count("records_dropped:not_an_object")
                continue
            item = record_to_item(record, base, f"{spec}#{n}", ctx)
            if item is not None:
                items.append(item)
    ctx.count("samples", len(items))
    return items
