"""Writes an interleaved conversation as a self-contained folder: page.html + one PNG per image."""

from __future__ import annotations

import html
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
