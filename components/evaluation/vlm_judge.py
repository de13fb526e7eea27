"""VLM judge: any OpenAI-compatible endpoint scores interleaved answers with a benchmark's rubric.

Rubrics are prompt files (`rubrics/<benchmark>.txt`: CoMM's 0-10 criteria, InterleavedBench's five aspects
0-5, Cooking / How-to sequence- and image-level metrics 0-10) and `RUBRICS` below says which scores each
must return. A call sends the request and the answer as text with `[image k]` markers, their pictures as
data URLs in the same order, at temperature 0 with a fixed seed. The reply must be one JSON object with
every criterion as a number in range (strict parsing: anything else is a failed attempt); a failed attempt
is asked again with the next seed, at most `attempts` times. HTTP failures are retried by the backend
(timeouts, 429 and 5xx with backoff). Each item's record is appended to `records.jsonl` as soon as it is
judged, so a rerun resumes: judged items are skipped, failed ones are asked again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from duogen.platform.llm import LLMError, OpenAICompatibleBackend
from duogen.platform.prompts import PromptLibrary

from .toyworld_judge import bootstrap_ci

RUBRIC_DIR = Path(__file__).parent / "rubrics"
RUBRICS = {
    "comm": (("style", "entity", "trend", "completeness", "coherence"), (0, 10)),
    "interleavedbench": (
        ("text_quality", "perceptual_quality", "image_coherence", "text_image_coherence", "helpfulness"),
        (0, 5),
    ),
    "howto": (
        ("sequence_correctness", "sequence_consistency", "image_step_alignment", "image_quality"),
        (0, 10),
    ),
}


class JudgeReplyError(ValueError):
    """The judge's reply is not the JSON the rubric asks for."""


@dataclass
class JudgeItem:
    """One answer to judge: the request and the answer as ordered parts (text or image bytes)."""

    id: str
    request: list[str | bytes]
    answer: list[str | bytes]
    missing: list[str] = field(default_factory=list)  # image files the source named but that do not exist


def placeholder_parts(
    text: str, names: list[str], folder: Path, missing: list[str], marker: str = "<IMAGE>"
) -> list[str | bytes]:
    """Text with image placeholders (`marker`) and the image files they stand for, in order, as parts.
    Files that do not exist, and markers without a file name, are listed in `missing`."""
    out: list[str | bytes] = []
    chunks = text.split(marker)
    for k, chunk in enumerate(chunks):
        if chunk.strip():
            out.append(chunk.strip())
        if k == len(chunks) - 1:
            break
        if k >= len(names):
            missing.append(f"{marker} marker {k + 1} has no image file named")
            continue
        image = folder / names[k]
        if image.is_file():
            out.append(image.read_bytes())
        else:
            missing.append(names[k])
    return out


def read_comm(folder: str | Path) -> Iterator[JudgeItem]:
    """CoMM result files (`results.json` per sample: `model_input` / `model_output` with `<IMAGE>`
    placeholders, `input_image_list`, `prediction_image_list`), images resolved next to each file. The
    answer judged is the model's prediction: `model_output` with `prediction_image_list`. Image files that
    do not exist are left out and listed in the item's `missing`."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*.json")):
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "model_input" not in data:
            continue
        missing: list[str] = []
        request = placeholder_parts(
            data["model_input"], data.get("input_image_list") or [], path.parent, missing
        )
        answer = placeholder_parts(
            data.get("model_output") or "", data.get("prediction_image_list") or [], path.parent, missing
        )
        yield JudgeItem(str(path.relative_to(folder)), request, answer, missing)


def _item_parts(items: list[dict], folder: Path, missing: list[str]) -> list[str | bytes]:
    out: list[str | bytes] = []
    for part in items:
        if part.get("type") == "image":
            image = folder / part["path"]
            if image.is_file():
                out.append(image.read_bytes())
            else:
                missing.append(part["path"])
        else:
            out.append(str(part.get("text", "")))
    return out


def read_items(path: str | Path) -> Iterator[JudgeItem]:
    """Any benchmark in one generic layout: an items.jsonl whose lines are {"id", "request": [parts],
    "answer": [parts]}, a part being {"type": "text", "text"} or {"type": "image", "path"} (relative to the
    file). InterleavedBench and Cooking / How-to sets are converted to it once."""
    path = Path(path)
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        data = json.loads(line)
        missing: list[str] = []
        request = _item_parts(data.get("request", []), path.parent, missing)
        answer = _item_parts(data.get("answer", []), path.parent, missing)
        yield JudgeItem(str(data.get("id", n)), request, answer, missing)


def render(item: JudgeItem) -> tuple[str, list[bytes]]:
    """The judge's text (parts in order, pictures as `[image k]`) and the pictures in that order."""
    images: list[bytes] = []

    def text(parts: list[str | bytes]) -> str:
        out = []
        for part in parts:
            if isinstance(part, bytes):
                images.append(part)
                out.append(f"[image {len(images)}]")
            else:
                out.append(part)
        return " ".join(out)

    return f"REQUEST:\n{text(item.request)}\n\nANSWER TO JUDGE:\n{text(item.answer)}", images


def parse_reply(reply: str, rubric: str) -> dict[str, float]:
    """Strictly: one JSON object (a ```json fence is tolerated) with every criterion a number in range."""
    criteria, (low, high) = RUBRICS[rubric]
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", reply.strip())
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        raise JudgeReplyError(f"not JSON: {err}") from None
    scores = data.get("scores") if isinstance(data, dict) else None
    if not isinstance(scores, dict):
        raise JudgeReplyError("no 'scores' object")
    out = {}
    for name in criteria:
        value = scores.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise JudgeReplyError(f"score {name!r} is {value!r}, not a number in [{low}, {high}]")
        out[name] = float(value)
    return out


def make_judge(base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0, **kwargs):
    """An OpenAI-compatible backend reading this folder's rubrics (no answer cache: records resume)."""
    return OpenAICompatibleBackend(
        base_url, model, api_key, prompts=PromptLibrary(RUBRIC_DIR), timeout=timeout, cache_dir=None, **kwargs
    )


def judge_items(
    items, backend, rubric: str, out: str | Path, seed: int = 0, attempts: int = 3, progress=None
) -> dict:
    """Judge every item not judged yet; returns {"summary", "records"} over all records in `out`."""
    if rubric not in RUBRICS:
        raise ValueError(f"unknown rubric {rubric!r}; choose one of {sorted(RUBRICS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "records.jsonl"
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["status"] == "ok":
                done[record["id"]] = record
    with open(path, "a") as f:
        for item in items:
            if item.id in done:
                continue
            record = _judge_one(item, backend, rubric, seed, attempts)
            f.write(json.dumps(record) + "\n")
            f.flush()
            if record["status"] == "ok":
                done[item.id] = record
            if progress is not None:
                progress(record)
    records = list(done.values())
    criteria = RUBRICS[rubric][0]
    summary = {}
    for name in criteria:
        mean, low, high = bootstrap_ci(r["scores"][name] for r in records)
        summary[name] = {"mean": round(mean, 4), "ci95": [round(low, 4), round(high, 4)], "n": len(records)}
    return {"summary": summary, "records": records}


def _judge_one(item: JudgeItem, backend, rubric: str, seed: int, attempts: int) -> dict:
    text, images = render(item)
    errors = []
    for attempt in range(attempts):
        try:
            reply = backend.run(rubric, text=text, images=images, params={"seed": seed + attempt})
            scores = parse_reply(reply, rubric)
        except (JudgeReplyError, LLMError) as err:
            errors.append(f"attempt {attempt + 1}: {err}")
            continue
        return {
            "id": item.id,
            "status": "ok",
            "scores": scores,
            "attempts": attempt + 1,
            "missing_images": item.missing,
            "reply": reply,
        }
    return {"id": item.id, "status": "failed", "errors": errors, "missing_images": item.missing}
