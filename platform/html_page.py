"""Writes an interleaved conversation as a self-contained folder: page.html + one PNG per image."""

from __future__ import annotations

import html
import json
from pathlib import Path

from PIL import Image

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 760px; margin: 2em auto; color: #222; }
.turn { border-radius: 8px; padding: 0.8em 1em; margin: 0.8em 0; }
.user { background: #eef3ff; } .assistant { background: #f4f4f4; } .system { background: #fff7e0; }
.role { font-size: 0.8em; text-transform: uppercase; color: #666; }
img { image-rendering: pixelated; width: 192px; border: 1px solid #ccc; margin: 0.4em 0; display: block; }
pre { white-space: pre-wrap; font-family: inherit; margin: 0.3em 0; }
"""


def write_page(turns: list[tuple[str, list[str | Image.Image]]], out: str | Path, title: str) -> Path:
    """`turns`: (role, parts) with parts text or PIL images, in order; `out` is a folder (page.html goes in
    it) or an .html path (images go beside it). Returns the page's path."""
    out = Path(out)
    page = out if out.suffix.lower() in (".html", ".htm") else out / "page.html"
    out = page.parent
    out.mkdir(parents=True, exist_ok=True)
    body, n = [], 0
    for role, parts in turns:
        body.append(f'<div class="turn {html.escape(role)}"><div class="role">{html.escape(role)}</div>')
        for part in parts:
            if isinstance(part, Image.Image):
                n += 1
                name = f"{page.stem}_image_{n:02d}.png"
                part.save(out / name)
                body.append(f'<img src="{name}" alt="image {n}">')
            elif part:
                body.append(f"<pre>{html.escape(part)}</pre>")
        body.append("</div>")
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>"
    )
    return page


def write_answer(pair, conversation, user_parts: list, options, out: Path, title: str, quiet: bool) -> dict:
    """Run the interleaved loop with a progress bar, write the page; return a summary (also as JSON)."""
    from tqdm import tqdm

    from duogen.model.generate import Answer, ImageDone, ImageStarted, TextDelta, generate

    answer = Answer()
    with tqdm(total=options.max_new_tokens, desc="generating", unit="tok", disable=quiet) as bar:
        for event in generate(pair, conversation, options):
            answer.add(event)
            if isinstance(event, TextDelta | ImageStarted):
                bar.update(1)
            if isinstance(event, ImageStarted):
                bar.set_postfix_str(f"drawing image {event.index + 1}")
            elif isinstance(event, ImageDone):
                bar.set_postfix_str(f"{event.index + 1} image(s) drawn")
    page = write_page([("user", user_parts), ("assistant", answer.parts)], out, title)
    finished = answer.finished
    usage = finished.usage
    summary = {
        "page": str(page),
        "images": usage.images,
        "new_tokens": usage.new_tokens,
        "finish_reason": finished.reason,
        "vae_encodes": usage.vae_encodes,
        "mllm_prefill_tokens": usage.mllm_prefill_tokens,
        "dit_seconds": round(usage.dit_seconds, 3),
    }
    page.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return summary
