"""InterleavedBench instances in the release's layout (one JSON list; `image` paths relative to the unzipped
images folder; one `<image>` marker per path in the first human turn): read in order, answered by a pair
into the judge's generic layout (resumable), and judged end to end by `duogen eval vlm --model` against a
real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from duogen.components.evaluation.interleavedbench import answer_instances, read_instances
from duogen.components.evaluation.vlm_judge import read_items
from duogen.model.errors import DuoGenInputError

sys.path.insert(0, str(Path(__file__).parent))
from http_stub import JSONHandler, chat_reply, serve  # noqa: E402

DUOGEN = str(Path(sys.executable).parent / "duogen")
SCORES = {"text_quality": 4, "perceptual_quality": 3, "image_coherence": 2, "text_image_coherence": 5}


def png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def bench(tmp_path) -> Path:
    images = tmp_path / "zipped_images" / "wiki_images_test"
    images.mkdir(parents=True)
    (images / "1_0.png").write_bytes(png((200, 0, 0)))
    (images / "1_1.png").write_bytes(png((0, 200, 0)))
    data = [
        {
            "id": "wikihow_next_step_0_1",
            "task_name": "wikihow_next_step",
            "image": ["wiki_images_test/1_0.png", "wiki_images_test/1_1.png"],
            "conversations": [
                {"from": "human", "value": "<BEGIN> Make tea. <image> Boil water. <image> What next?"},
                {"from": "gpt", "value": "Pour the water. <image>"},
            ],
        },
        {
            "id": "storytelling_generation_7",
            "task_name": "storytelling_generation",
            "image": ["wiki_images_test/gone.png"],
            "conversations": [{"from": "human", "value": "A fox <image> and a crow <image>. Go on."}],
        },
    ]
    (tmp_path / "interleaved_bench.json").write_text(json.dumps(data))
    return tmp_path


def test_instances_are_read_in_the_order_their_markers_give(bench):
    first, second = read_instances(bench / "interleaved_bench.json", bench / "zipped_images")
    assert (first.id, first.task_name) == ("wikihow_next_step_0_1", "wikihow_next_step")
    assert first.request == ["Make tea.", png((200, 0, 0)), "Boil water.", png((0, 200, 0)), "What next?"]
    assert first.missing == []
    assert second.request == ["A fox", "and a crow", ". Go on."]
    assert second.missing == ["wiki_images_test/gone.png", "<image> marker 2 has no image file named"]


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"id": 1}))
    with pytest.raises(DuoGenInputError, match="one JSON list, found dict"):
        read_instances(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(
        json.dumps([{"id": "x9", "conversations": [{"from": "gpt", "value": "hi"}]}])
    )
    with pytest.raises(DuoGenInputError, match="instance 0 \\('x9'\\) has no human turn"):
        read_instances(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("[{")
    with pytest.raises(DuoGenInputError, match="not a readable InterleavedBench JSON"):
        read_instances(tmp_path / "c.json")


def test_answers_go_to_the_judge_layout_and_a_rerun_answers_only_what_is_missing(bench, tmp_path):
    instances = read_instances(bench / "interleaved_bench.json", bench / "zipped_images")
    asked: list[list[dict]] = []

    def answer(conversation):
        asked.append(conversation)
        return [f"answer {len(asked)}", Image.new("RGB", (8, 8), (0, 0, 255 - len(asked)))]

    out = tmp_path / "answers"
    answer_instances(answer, instances[:1], out)
    items = answer_instances(answer, instances, out)  # the rerun: only the second is asked
    assert len(asked) == 2
    parts = asked[0][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image", "text", "image", "text"]
    assert parts[1]["image"].getpixel((0, 0)) == (200, 0, 0)
    read = list(read_items(items))
    assert [i.id for i in read] == ["wikihow_next_step_0_1", "storytelling_generation_7"]
    assert read[0].request[1] == png((200, 0, 0)) and read[0].answer[0] == "answer 1"
    picture = Image.open(io.BytesIO(read[1].answer[1]))
    assert picture.getpixel((0, 0)) == (0, 0, 253) and read[1].missing == []


class Judge:
    """Scores every item with the InterleavedBench criteria; counts the pictures it was sent."""

    def __init__(self) -> None:
        self.images: list[int] = []
        judge = self

        class Handler(JSONHandler):
            def do_POST(self):
                body = self.json_body()
                parts = body["messages"][-1]["content"]
                parts = parts if isinstance(parts, list) else []  # a text-only item is sent as a string
                urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
                for url in urls:
                    Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).verify()
                judge.images.append(len(urls))
                reply = json.dumps({"scores": {**SCORES, "helpfulness": len(urls)}, "reason": "ok"})
                self.send_json(200, chat_reply(reply))

        self.httpd, url = serve(Handler)
        self.url = url + "/v1"


def test_duogen_eval_vlm_answers_interleavedbench_with_the_pair_then_judges(bench, tmp_path):
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    DuoGenPair.build(get_preset("tiny"), seed=0).save_pretrained(tmp_path / "pair")
    judge = Judge()
    cmd = [
        DUOGEN,
        "eval",
        "vlm",
        "--benchmark",
        "interleavedbench",
        "--data",
        str(bench / "interleaved_bench.json"),
    ]
    cmd += [
        "--images",
        str(bench / "zipped_images"),
        "--model",
        str(tmp_path / "pair"),
        "--max-new-tokens",
        "12",
    ]
    cmd += ["--max-images", "1", "--base-url", judge.url, "--judge-model", "j", "--out", str(tmp_path / "r")]
    out = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, timeout=300)
    judge.httpd.shutdown()
    assert out.returncode == 0, out.stderr[-3000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["judged"] == 2 and line["text_quality"] == 4.0 and line["image_coherence"] == 2.0
    items = list(read_items(tmp_path / "r" / "answers" / "items.jsonl"))
    sent = [sum(isinstance(p, bytes) for p in i.request + i.answer) for i in items]
    assert sorted(judge.images) == sorted(sent) and sent[0] >= 2  # the request's pictures and the answer's
    assert line["helpfulness"] == pytest.approx(sum(sent) / 2)
