"""The chat page in a real headless Chromium (Debian's `chromium`, driven by Playwright; no browser is
downloaded): it loads from the server, sends a request with an attached picture, and shows the answer's
text and the picture the pair drew, in the order they streamed in; a follow-up continues the stored answer by
its id instead of resending the conversation."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from browser import launch  # noqa: E402
from serving_server import predictor_server  # noqa: E402

DUOGEN = str(Path(sys.executable).parent / "duogen")


@pytest.fixture(scope="module")
def server(pair_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("page") / "server.log"
    with predictor_server([DUOGEN, "serve", "--model", str(pair_dir)], log) as s:
        yield s


def test_the_chat_page_streams_text_and_pictures(server, tmp_path):
    from playwright.sync_api import sync_playwright

    attached = tmp_path / "start.png"
    Image.new("RGB", (48, 48), (255, 0, 0)).save(attached)
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/ui/")
            page.wait_for_function("document.getElementById('status').textContent.includes('duogen')")
            page.fill("#prompt", "Move the square to the left.")
            page.set_input_files("#files", str(attached))
            page.check("#force")
            page.fill("#tokens", "6")
            page.fill("#images", "1")
            page.click("#send")
            page.wait_for_selector(".assistant[data-done]", timeout=60_000)
            assert page.get_attribute(".assistant", "data-done") in ("completed", "incomplete")
            # the user's own picture sits in the user's bubble; the answer's picture was drawn by the pair
            assert page.locator(".user img").count() == 1
            drawn = page.locator(".assistant img.generated")
            assert drawn.count() == 1
            src = drawn.get_attribute("src")
            assert src.startswith("data:image/png;base64,")
            size = page.evaluate(
                "() => { const i = document.querySelector('.assistant img.generated');"
                " return [i.naturalWidth, i.naturalHeight]; }"
            )
            assert size == [48, 48]  # drawn at the size of the attached picture
            first = page.evaluate("() => document.querySelector('.assistant').firstChild.nodeName")
            assert first == "IMG"  # asked to start with a picture: it comes before any text
            # a follow-up sends only its own turn and names the stored first answer, picture and all
            sent = []
            page.on(
                "request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/responses") else None
            )
            page.uncheck("#force")
            page.fill("#prompt", "Now move it up.")
            page.click("#send")
            page.wait_for_function(
                "document.querySelectorAll('.assistant[data-done]').length == 2", timeout=60_000
            )
            (follow_up,) = sent
            assert (
                len(follow_up["input"]) == 1
                and follow_up["input"][0]["content"][0]["text"] == "Now move it up."
            )
            stored = httpx.get(
                f"{server.openai}/responses/{follow_up['previous_response_id']}", timeout=30
            ).json()
            assert stored["output"][0]["type"] == "image_generation_call"
            shot = page.screenshot()
            assert Image.open(io.BytesIO(shot)).size[0] > 0
            (tmp_path / "page.png").write_bytes(shot)
        finally:
            browser.close()
