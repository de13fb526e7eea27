"""Where web pages come from: a folder of HTML files, WARC files, or CoMM-style JSON; all become RawPage.

A RawPage carries its HTML bytes and a way to fetch the bytes of an image it references (a local file next
to the page, a WARC record, or nothing for external URLs, which are then counted as unavailable).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse


@dataclass
class RawPage:
    url: str  # what lineage records: a file path or the page's URL
    html: bytes
    fetch: Callable[[str], bytes | None]  # image src (as written in the page) -> bytes, or None


def _file_fetcher(page_path: Path) -> Callable[[str], bytes | None]:
    base = page_path.parent

    def fetch(src: str) -> bytes | None:
        if urlparse(src).scheme in ("http", "https", "data"):
            return None  # external: not fetched offline
        path = (base / src).resolve()
        return path.read_bytes() if path.is_file() else None

    return fetch


def folder_inputs(folder: str | Path) -> list[str]:
    """Every `*.html`/`*.htm` page under `folder`, sorted (the executor's inputs are file paths)."""
    root = Path(folder)
    return sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in (".html", ".htm"))


def read_html_file(path: str | Path) -> RawPage:
    path = Path(path)
    return RawPage(str(path), path.read_bytes(), _file_fetcher(path))


def read_warc(path: str | Path) -> Iterator[RawPage]:
    """HTML responses of a WARC file; images are fetched from the same WARC's responses by URL."""
    from warcio.archiveiterator import ArchiveIterator

    pages, blobs = [], {}
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream):
            if record.rec_type != "response":
                continue
            url = record.rec_headers.get_header("WARC-Target-URI")
            ctype = (record.http_headers.get_header("Content-Type") or "") if record.http_headers else ""
            body = record.content_stream().read()
            if "html" in ctype:
                pages.append((url, body))
            else:
                blobs[url] = body
    for url, body in pages:

        def fetch(src: str, base: str = url) -> bytes | None:
            return blobs.get(urljoin(base, src))

        yield RawPage(url, body, fetch)


def read_comm_json(path: str | Path) -> RawPage:
    """A CoMM `results.json` (text with `<IMAGE>` placeholders + image lists) as a simple HTML page.

    The interleaved side is used: `model_output` with `output_gt_image_list` when the output holds the
    images, else `model_input` with `input_image_list` (then the output text follows, if any). Image files
    are resolved next to the JSON file.
    """
    path = Path(path)
    data = json.loads(path.read_text())
    out_text, in_text = data.get("model_output") or "", data.get("model_input") or ""
    if "<IMAGE>" in out_text and data.get("output_gt_image_list"):
        parts = [(in_text.replace("<IMAGE>", ""), []), (out_text, data["output_gt_image_list"])]
    else:
        parts = [(in_text, data.get("input_image_list") or []), (out_text.replace("<IMAGE>", ""), [])]
    body = []
    for text, images in parts:
        chunks = text.split("<IMAGE>")
        for i, chunk in enumerate(chunks):
            if chunk.strip():
                body.append(f"<p>{html.escape(chunk.strip())}</p>")
            if i < len(chunks) - 1 and i < len(images):
                body.append(f'<img src="{html.escape(images[i])}">')
    page = f"<html><body><article>{''.join(body)}</article></body></html>".encode()
    return RawPage(str(path), page, _file_fetcher(path))


def read_input(spec: str) -> Iterator[RawPage]:
    """One executor input: an .html file, a .warc/.warc.gz file, or a CoMM .json file."""
    lower = spec.lower()
    if lower.endswith((".warc", ".warc.gz")):
        yield from read_warc(spec)
    elif lower.endswith(".json"):
        yield read_comm_json(spec)
    else:
        yield read_html_file(spec)
