"""Deploy on one machine: start the predictor server on 127.0.0.1 for a model URI (a folder, s3://, or an
MLflow alias), ask it one held-out toy task over HTTP (the OpenAI Responses route, as a client would), save
the answer as an HTML page, stop the server. What the pipeline's deploy step does where no KServe runs.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from duogen.model.images import png_data_url
from duogen.platform.launch import free_port


def _request_body(seed: int, max_images: int) -> tuple[dict, list]:
    from duogen.components.evaluation.toyworld_eval import held_out_tasks, task_request

    task = held_out_tasks(1, steps=max_images, seed=seed)[0]
    content, user_parts = [], []
    for part in task_request(task)[0]["content"]:
        if part["type"] == "text":
            content.append({"type": "input_text", "text": part["text"]})
            user_parts.append(part["text"])
        else:
            content.append({"type": "input_image", "image_url": png_data_url(part["image"])})
            user_parts.append(part["image"])
    body = {"model": "duogen", "input": [{"role": "user", "content": content}], "max_output_tokens": 160}
    return body | {"seed": seed, "max_images": max_images}, user_parts


def answer_parts(response: dict) -> list[str | Image.Image]:
    """A Responses object's output items as page parts: message text and drawn pictures, in order."""
    parts: list[str | Image.Image] = []
    for item in response.get("output", []):
        if item.get("type") == "message":
            parts += [c["text"] for c in item.get("content", []) if c.get("type") == "output_text"]
        elif item.get("type") == "image_generation_call" and item.get("result"):
            parts.append(Image.open(io.BytesIO(base64.b64decode(item["result"]))).convert("RGB"))
    return parts


def ask(url: str, page: str | Path, title: str, seed: int = 0, timeout: float = 300.0, headers=None) -> dict:
    """One held-out toy task to a running server at `url` (its Responses route), the answer as a page."""
    from duogen.platform.html_page import write_page

    body, user_parts = _request_body(seed, max_images=2)
    reply = httpx.post(f"{url}/openai/v1/responses", json=body, timeout=timeout, headers=headers)
    if reply.status_code != 200:
        raise RuntimeError(f"the server answered {reply.status_code}: {reply.text[:500]}")
    response = reply.json()
    parts = answer_parts(response)
    page = write_page([("user", user_parts), ("assistant", parts)], page, title)
    return {
        "page": str(page),
        "url": f"{url}/openai/v1/responses",
        "images": sum(isinstance(p, Image.Image) for p in parts),
        "text": "".join(p for p in parts if isinstance(p, str)),
        "status": response.get("status"),
    }


def serve_and_ask(
    model: str, page: str | Path, env: dict | None = None, seed: int = 0, timeout: float = 300.0
) -> dict:
    """Serve `model` on 127.0.0.1, send one request, write `page`, stop the server."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    page = Path(page)
    page.parent.mkdir(parents=True, exist_ok=True)
    log = page.with_suffix(".server.log")
    command = [sys.executable, "-m", "duogen.cli", "serve", "--model", model, "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the server for {model} exited ({proc.returncode}): {log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=5).json().get("ready") is True:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the server for {model} was not ready within {timeout:.0f} s (log: {log})"
                )
            time.sleep(0.5)
        return ask(url, page, f"DuoGen answers over HTTP ({model})", seed, timeout)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
