"""InterleavedBench instances: read them, let a pair answer them, hand the answers to the VLM judge.

The release (`interleaved_bench.json` in the `mqliu/InterleavedBench` repository, images unzipped from its
`zipped_images/`) is one JSON list; an instance has `id`, `task_name`, `image` (paths relative to the images
folder) and `conversations`, whose first `human` turn holds the instruction and context with one `<image>`
marker per entry of `image`, in order (a leading `<BEGIN>` marker is dropped). Anything past the first
human turn is the reference, which the judge does not read. Answers are written in the generic judge
layout (`items.jsonl`, see `vlm_judge.read_items`) with their pictures as PNG files beside it, one line per
instance as soon as it is answered, so a rerun answers only what is missing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from duogen.model.errors import DuoGenInputError

from .vlm_judge import placeholder_parts


@dataclass
class BenchInstance:
    id: str
    task_name: str
    request: list[str | bytes]  # text and image bytes in the order the human turn gives them
    missing: list[str] = field(default_factory=list)  # image files named but not found


def read_instances(path: str | Path, images: str | Path | None = None) -> list[BenchInstance]:
    """Every instance of `interleaved_bench.json`; `images` is the unzipped images folder (default: the
    file's own folder). An instance without a human turn is a clear error naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DuoGenInputError(f"{path}: not a readable InterleavedBench JSON file ({err})") from err
    if not isinstance(data, list):
        raise DuoGenInputError(
            f"{path}: InterleavedBench instances are one JSON list, found {type(data).__name__}"
        )
    folder = Path(images) if images else path.parent
    out = []
    for n, inst in enumerate(data):
        turns = inst.get("conversations") if isinstance(inst, dict) else None
        human = next((t for t in turns or [] if isinstance(t, dict) and t.get("from") == "human"), None)
        if human is None:
            raise DuoGenInputError(f"{path}: instance {n} ({inst.get('id', '?')!r}) has no human turn")
        missing: list[str] = []
        text = str(human.get("value", "")).replace("<BEGIN>", "")
        request = placeholder_parts(text, list(inst.get("image") or []), folder, missing, marker="<image>")
        out.append(BenchInstance(str(inst.get("id", n)), str(inst.get("task_name", "")), request, missing))
    return out


def _conversation(request: list[str | bytes]) -> list[dict]:
    content = [
        {"type": "image", "image": Image.open(io.BytesIO(p)).convert("RGB")}
        if isinstance(p, bytes)
        else {"type": "text", "text": p}
        for p in request
    ]
    return [{"role": "user", "content": content}]


def _answered(items: Path) -> set[str]:
    if not items.is_file():
        return set()
    return {json.loads(line)["id"] for line in items.read_text().splitlines() if line.strip()}


def answer_instances(
    answer: Callable[[list[dict]], list[str | Image.Image]],
    instances: Iterable[BenchInstance],
    out: str | Path,
    on_item: Callable[[str], None] | None = None,
) -> Path:
    """`answer(conversation) -> parts` for every instance not yet in `out/items.jsonl`; returns that file.
    Request pictures are saved too, so the judge sees what the model saw."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    items = out / "items.jsonl"
    done = _answered(items)
    for inst in instances:
        if inst.id in done:
            continue
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in inst.id)

        def save(part, role: str, k: int, stem: str = stem) -> dict:
            if isinstance(part, str):
                return {"type": "text", "text": part}
            name = f"images/{stem}_{role}{k}.png"
            image = part if isinstance(part, Image.Image) else Image.open(io.BytesIO(part))
            image.save(out / name)
            return {"type": "image", "path": name}

        parts = answer(_conversation(inst.request))
        record = {
            "id": inst.id,
            "task_name": inst.task_name,
            "request": [save(p, "in", k) for k, p in enumerate(inst.request)],
            "answer": [save(p, "out", k) for k, p in enumerate(parts)],
        }
        with items.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if on_item:
            on_item(inst.id)
    return items


def pair_answerer(pair, options) -> Callable[[list[dict]], list[str | Image.Image]]:
    """The pair's own interleaved answer, collected with `Answer`."""
    from duogen.model.generate import generate_answer

    def answer(conversation: list[dict]) -> list[str | Image.Image]:
        return generate_answer(pair, conversation, options).parts

    return answer
