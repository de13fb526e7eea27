"""The VLM-judge path end to end against a real OpenAI-compatible HTTP server on 127.0.0.1: a small judge
server in this test answers valid, invalid and late JSON. Checked: the request format (model, seed,
temperature, the rubric as system prompt, images as data URLs in order), strict parsing with bounded
retries, timeouts retried, per-item records, and a rerun that resumes (judged items are not asked again)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from duogen.components.evaluation.vlm_judge import (
    JudgeReplyError,
    judge_items,
    make_judge,
    parse_reply,
    read_comm,
)

sys.path.insert(0, str(Path(__file__).parent))
from http_stub import JSONHandler, chat_reply, serve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DUOGEN = str(Path(sys.executable).parent / "duogen")
VALID = {"scores": {"style": 7, "entity": 8, "trend": 6, "completeness": 9, "coherence": 5}, "reason": "ok"}


def png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def comm_folder(tmp_path) -> Path:
    """Three CoMM samples in the published layout (copied task file + its images), one per behaviour."""
    data = json.loads((ROOT / "tests" / "data" / "comm" / "task1_results.json").read_text())
    for name in ("valid", "invalid_once", "late_once"):
        folder = tmp_path / "comm" / name
        folder.mkdir(parents=True)
        sample = dict(data)
        sample["model_output"] = f"{name}: (1) <IMAGE> (2) <IMAGE>"
        sample["prediction_image_list"] = ["predict_1.png", "predict_2.png"]
        (folder / "results.json").write_text(json.dumps(sample))
        for k, image in enumerate(data["input_image_list"]):
            (folder / image).write_bytes(png((10 * k, 0, 0)))
        (folder / "predict_1.png").write_bytes(png((0, 200, 0)))
        (folder / "predict_2.png").write_bytes(png((0, 0, 200)))
    return tmp_path / "comm"


class JudgeServer:
    """Answers /v1/chat/completions: valid JSON, or for items named so, invalid JSON or a late reply once."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.seen: dict[str, int] = {}
        server = self

        class Handler(JSONHandler):
            def do_POST(self):
                body = self.json_body()
                server.requests.append(body)
                text = body["messages"][-1]["content"][0]["text"]
                kind = next(k for k in ("invalid_once", "late_once", "valid") if f"{k}:" in text)
                count = server.seen[kind] = server.seen.get(kind, 0) + 1
                if kind == "late_once" and count == 1:
                    time.sleep(3)  # past the client's timeout: the backend retries
                reply = (
                    "Sure! Here are my scores."
                    if kind == "invalid_once" and count == 1
                    else json.dumps(VALID)
                )
                self.send_json(200, chat_reply(reply))

        self.httpd, url = serve(Handler)
        self.url = url + "/v1"

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture()
def server():
    s = JudgeServer()
    yield s
    s.close()


def test_replies_are_parsed_strictly():
    assert parse_reply(json.dumps(VALID), "comm")["completeness"] == 9.0
    assert parse_reply("```json\n" + json.dumps(VALID) + "\n```", "comm")["style"] == 7.0
    for bad, why in [
        ("Sure! 7/10", "not JSON"),
        (json.dumps({"score": 5}), "scores"),
        (json.dumps({"scores": {**VALID["scores"], "trend": 11}}), "trend"),
        (json.dumps({"scores": {**VALID["scores"], "entity": "8"}}), "entity"),
        (json.dumps({"scores": {k: v for k, v in VALID["scores"].items() if k != "style"}}), "style"),
    ]:
        with pytest.raises(JudgeReplyError, match=why):
            parse_reply(bad, "comm")


def test_comm_files_are_read_with_their_images(comm_folder):
    items = {i.id.split("/")[0]: i for i in read_comm(comm_folder)}
    item = items["valid"]
    assert [type(p).__name__ for p in item.request].count("bytes") == 5  # the 5 input images, in place
    assert item.answer[0] == "valid: (1)" and item.answer[1] == png((0, 200, 0)) and not item.missing


def test_the_judge_path_end_to_end_with_retries_and_resume(comm_folder, server, tmp_path):
    backend = make_judge(server.url, "judge-model", api_key="k", timeout=1.5, max_retries=2, backoff=0.01)
    result = judge_items(read_comm(comm_folder), backend, "comm", tmp_path / "out", seed=7)
    assert len(result["records"]) == 3
    by = {r["id"].split("/")[0]: r for r in result["records"]}
    assert (
        by["valid"]["attempts"] == 1
        and by["invalid_once"]["attempts"] == 2
        and by["late_once"]["attempts"] == 1
    )
    assert backend.stats["retries"] == 1  # the late reply was asked again by the backend
    assert result["summary"]["completeness"]["mean"] == 9.0
    # the request as sent: rubric, fixed seeds (the next one after an invalid reply), images as data URLs
    first = server.requests[0]
    assert first["model"] == "judge-model" and first["temperature"] == 0.0 and first["seed"] == 7
    assert "CoMM" in first["messages"][0]["content"]
    parts = first["messages"][1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 7 and all(u.startswith("data:image/png;base64,") for u in urls)
    assert base64.b64decode(urls[5].split(",", 1)[1]) == png(
        (0, 200, 0)
    )  # answer pictures after the request's
    assert "[image 6]" in parts[0]["text"]
    seeds = [r["seed"] for r in server.requests if "invalid_once:" in r["messages"][1]["content"][0]["text"]]
    assert seeds == [7, 8]
    # a rerun asks nothing: every item has its record
    asked = len(server.requests)
    again = judge_items(read_comm(comm_folder), backend, "comm", tmp_path / "out", seed=7)
    assert len(server.requests) == asked and len(again["records"]) == 3


def test_a_judge_that_never_answers_right_leaves_a_failed_record_that_a_rerun_retries(comm_folder, tmp_path):
    class Broken:
        calls = 0

        def run(self, task, text=None, images=(), params=None):
            Broken.calls += 1
            return "no"

    result = judge_items(read_comm(comm_folder), Broken(), "comm", tmp_path / "out", attempts=2)
    assert result["records"] == [] and Broken.calls == 6
    lines = [json.loads(x) for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines] == ["failed"] * 3 and all(len(r["errors"]) == 2 for r in lines)
    judge_items(read_comm(comm_folder), Broken(), "comm", tmp_path / "out", attempts=1)
    assert Broken.calls == 9  # failed items are asked again


def test_duogen_eval_vlm_runs_against_the_server(comm_folder, server, tmp_path):
    shutil.rmtree(comm_folder / "late_once")
    out = subprocess.run(
        [
            DUOGEN,
            "eval",
            "vlm",
            "--benchmark",
            "comm",
            "--data",
            str(comm_folder),
            "--base-url",
            server.url,
            "--judge-model",
            "judge-model",
            "--out",
            str(tmp_path / "vlm"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["coherence"] == 5.0 and line["judged"] == 2
    assert (tmp_path / "vlm" / "report.html").exists()


def test_every_rubric_renders_and_names_its_criteria():
    from duogen.components.evaluation.vlm_judge import RUBRIC_DIR, RUBRICS
    from duogen.platform.prompts import PromptLibrary

    library = PromptLibrary(RUBRIC_DIR)
    for rubric, (criteria, _) in RUBRICS.items():
        system, user = library.render(rubric, "REQUEST: x", {})
        assert user == "REQUEST: x" and all(f'"{c}"' in system for c in criteria)


def test_the_generic_items_layout_is_read_in_order(tmp_path):
    from duogen.components.evaluation.vlm_judge import read_items

    (tmp_path / "a.png").write_bytes(png((1, 2, 3)))
    line = {
        "id": "x1",
        "request": [{"type": "text", "text": "make soup"}, {"type": "image", "path": "a.png"}],
        "answer": [{"type": "text", "text": "Step 1"}, {"type": "image", "path": "gone.png"}],
    }
    (tmp_path / "items.jsonl").write_text(json.dumps(line) + "\n")
    (item,) = read_items(tmp_path / "items.jsonl")
    assert item.id == "x1" and item.request == ["make soup", png((1, 2, 3))]
    assert item.answer == ["Step 1"] and item.missing == ["gone.png"]
