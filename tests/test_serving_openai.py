"""The predictor server as users call it: a real `duogen serve` process on 127.0.0.1 with a tiny pair, the
official `openai` client unmodified, curl-like httpx for KServe's V1/V2 routes and for bad input."""

from __future__ import annotations

import base64
import http.server
import io
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai import BadRequestError, OpenAI
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from serving_server import predictor_server  # noqa: E402

DUOGEN = str(Path(sys.executable).parent / "duogen")


def png(size=(64, 64), colour=(0, 0, 255)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def noise_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((side, side), 100).save(buf, format="PNG")  # noise does not compress
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.fixture(scope="module")
def image_host(tmp_path_factory):
    """A plain http server on 127.0.0.1 holding one PNG (the allow-listed image host)."""
    root = tmp_path_factory.mktemp("images")
    (root / "blue.png").write_bytes(png((56, 56)))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(pair_dir, image_host, tmp_path_factory):
    command = [
        DUOGEN,
        "serve",
        "--model",
        str(pair_dir),
        "--max-new-tokens",
        "1500",
        "--allow-image-host",
        image_host,
        "--max-input-images",
        "3",
        "--max-image-bytes",
        "200000",
        "--max-body-bytes",
        "2000000",
    ]
    with predictor_server(command, tmp_path_factory.mktemp("log") / "server.log") as s:
        yield s


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.openai, api_key="unused", timeout=60, max_retries=0)


def vision_tokens(size) -> int:
    from duogen.model.chat import build_image_processor, image_token_count
    from duogen.model.presets import get_preset

    return image_token_count(size, build_image_processor(get_preset("tiny").mllm))


def metric(server, name: str, **labels) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_responses_returns_text_and_pictures_as_ordered_items(client):
    kwargs = dict(
        model="duogen",
        input="Draw a red circle.",
        max_output_tokens=8,
        extra_body={"force_image": True, "size": "64x48", "seed": 3},
    )
    r = client.responses.create(**kwargs)
    assert r.object == "response" and r.status in ("completed", "incomplete")
    assert r.output[0].type == "image_generation_call"  # forced: the answer starts with a picture
    assert decode(r.output[0].result).size == (64, 48)
    assert all(item.type == "message" for item in r.output[1:])
    assert r.usage.output_tokens <= 8 and r.usage.input_tokens > 0
    again = client.responses.create(**kwargs)
    other = client.responses.create(**{**kwargs, "extra_body": {**kwargs["extra_body"], "seed": 4}})
    assert again.output[0].result == r.output[0].result  # the seed makes the answer reproducible
    assert other.output[0].result != r.output[0].result


def test_streamed_responses_send_events_in_order_and_match_the_plain_answer(client):
    kwargs = dict(
        model="duogen",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": data_url(png((48, 48)))},
                    {"type": "input_text", "text": "Move it to the left."},
                ],
            }
        ],
        max_output_tokens=24,
        tool_choice={"type": "image_generation"},
        extra_body={"max_images": 2, "seed": 1},
    )
    plain = client.responses.create(**kwargs)
    events = list(client.responses.create(stream=True, **kwargs))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    first_image = kinds.index("response.image_generation_call.in_progress")
    assert kinds[first_image - 1 : first_image + 4] == [
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
        "response.image_generation_call.completed",
        "response.output_item.done",
    ]
    final = events[-1].response
    assert [o.type for o in final.output] == [o.type for o in plain.output]
    assert final.output[0].result == plain.output[0].result
    assert decode(final.output[0].result).size == (48, 48)  # drawn at the size of the user's picture
    streamed_text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed_text == final.output_text == plain.output_text


def test_chat_completions_keep_each_picture_in_place(client):
    plain = client.chat.completions.create(
        model="duogen",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=6,
        seed=5,
        extra_body={"force_image": True},
    )
    content = plain.choices[0].message.content
    assert content.startswith("![image 1](data:image/png;base64,")
    b64 = content[len("![image 1](data:image/png;base64,") : content.index(")")]
    assert decode(b64).size == (64, 64)
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.completion_tokens <= 6

    chunks = list(
        client.chat.completions.create(
            model="duogen",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=6,
            seed=5,
            n=2,
            stream=True,
            extra_body={"force_image": True},
        )
    )
    by_choice: dict[int, list] = {0: [], 1: []}
    for chunk in chunks:
        by_choice[chunk.choices[0].index].append(chunk.choices[0])
    for choices in by_choice.values():
        assert choices[0].delta.role == "assistant"
        assert choices[-1].finish_reason in ("stop", "length")
    streamed = "".join(c.delta.content or "" for c in by_choice[0])
    assert streamed == content  # choice 0 uses the request's seed, as the plain call did
    assert "".join(c.delta.content or "" for c in by_choice[1]) != content  # choice 1: seed + 1


def test_chat_answer_sent_back_brings_its_pictures_into_the_context(client):
    first = client.chat.completions.create(
        model="duogen",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=2,
        extra_body={"force_image": True},
    )
    answer = first.choices[0].message.content
    text = answer[answer.index(")") + 1 :]
    follow = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "and now?"},
    ]
    stripped = [follow[0], {"role": "assistant", "content": text}, follow[2]]
    with_picture = client.chat.completions.create(model="duogen", messages=follow, max_tokens=1)
    without = client.chat.completions.create(model="duogen", messages=stripped, max_tokens=1)
    # the picture came back as <BOV> + its vision tokens
    assert with_picture.usage.prompt_tokens - without.usage.prompt_tokens == 1 + vision_tokens((64, 64))


def test_images_generate_and_edit(client):
    gen = client.images.generate(model="duogen", prompt="a red square", n=2, size="32x32")
    images = [decode(d.b64_json) for d in gen.data]
    assert [im.size for im in images] == [(32, 32), (32, 32)]
    assert images[0].tobytes() != images[1].tobytes()  # each of n has its own seed
    refs = [
        ("a.png", png((48, 32), (0, 0, 255)), "image/png"),
        ("b.png", png((48, 32), (255, 0, 0)), "image/png"),
    ]
    edit = client.images.edit(model="duogen", image=refs, prompt="make it green")
    assert [decode(d.b64_json).size for d in edit.data] == [(48, 32)]  # drawn at the reference's size
    sized = client.images.edit(model="duogen", image=refs[:1], prompt="make it green", size="32x32")
    assert decode(sized.data[0].b64_json).size == (32, 32)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["duogen"]


def test_image_urls_only_from_the_allow_list(client, image_host):
    def ask(url: str):
        return client.responses.create(
            model="duogen",
            max_output_tokens=1,
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this?"},
                        {"type": "input_image", "image_url": url},
                    ],
                }
            ],
        )

    text_only = client.responses.create(model="duogen", input="what is this?", max_output_tokens=1)
    fetched = ask(f"http://{image_host}/blue.png")
    assert fetched.usage.input_tokens - text_only.usage.input_tokens == vision_tokens(
        (56, 56)
    )  # it is in the prompt
    with pytest.raises(BadRequestError, match="allow-list"):
        ask("http://127.0.0.2:9/blue.png")


def test_kserve_v1_and_v2_predict(server):
    v1 = httpx.post(
        f"{server.url}/v1/models/duogen:predict",
        timeout=60,
        json={
            "instances": [
                {
                    "prompt": "hi",
                    "max_new_tokens": 3,
                    "force_image": True,
                    "images": [base64.b64encode(png((32, 32))).decode()],
                }
            ]
        },
    )
    assert v1.status_code == 200, v1.text
    parts = v1.json()["predictions"][0]["parts"]
    assert parts[0]["type"] == "image" and decode(parts[0]["png"]).size == (32, 32)
    v2 = httpx.post(
        f"{server.url}/v2/models/duogen/infer",
        timeout=60,
        json={
            "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["hi"]}],
            "parameters": {"max_new_tokens": 2, "force_image": True},
        },
    )
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["images"]["shape"] == [1] and decode(outputs["images"]["data"][0]).size == (64, 64)
    assert outputs["finish_reason"]["data"][0] in ("stop", "length")
    bad = httpx.post(
        f"{server.url}/v2/models/duogen/infer",
        timeout=30,
        json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]},
    )
    assert bad.status_code == 400 and "prompt" in bad.text


def test_metrics_count_requests_and_images(client, server):
    route = "/openai/v1/images/generations"
    before = (
        metric(server, "duogen_images_drawn_total"),
        metric(server, "duogen_requests_total", route=route, status="200"),
        metric(server, "duogen_request_seconds_count", route=route),
    )
    client.images.generate(model="duogen", prompt="a square", n=2, size="32x32")
    after = (
        metric(server, "duogen_images_drawn_total"),
        metric(server, "duogen_requests_total", route=route, status="200"),
        metric(server, "duogen_request_seconds_count", route=route),
    )
    assert after[0] - before[0] == 2 and after[1] - before[1] == 1 and after[2] - before[2] == 1
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for name in (
        "duogen_queue_depth",
        "duogen_running_requests",
        "duogen_tokens_total",
        "duogen_dit_batch_requests",
    ):
        assert name in text


BAD = [
    (
        "malformed JSON",
        "/responses",
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        400,
    ),
    ("wrong type", "/responses", {"json": {"input": 5}}, 400),
    (
        "bad base64",
        "/responses",
        {
            "json": {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": "data:image/png;base64,@@@"}],
                    }
                ]
            }
        },
        400,
    ),
    (
        "corrupt image",
        "/responses",
        {
            "json": {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": data_url(png()[:60])}]}
                ]
            }
        },
        400,
    ),
    (
        "unsupported image",
        "/responses",
        {
            "json": {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": data_url(b"GIF87a" + b"\0" * 20)}],
                    }
                ]
            }
        },
        400,
    ),
    (
        "oversized image",
        "/responses",
        {
            "json": {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": data_url(noise_png(500))}],
                    }
                ]
            }
        },
        400,
    ),
    (
        "too many images",
        "/responses",
        {
            "json": {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": data_url(png((8, 8)))}] * 4,
                    }
                ]
            }
        },
        400,
    ),
    ("body too large", "/responses", {"json": {"input": "x" * 2_100_000}}, 413),
    ("chunked body too large", "/responses", {"chunks": [b'{"input": "' + b"x" * 1_000_000] * 3}, 413),
    (
        "unknown model",
        "/chat/completions",
        {"json": {"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}},
        404,
    ),
    (
        "temperature out of range",
        "/chat/completions",
        {"json": {"messages": [{"role": "user", "content": "x"}], "temperature": 5}},
        400,
    ),
    ("n out of range", "/images/generations", {"json": {"prompt": "x", "n": 99}}, 400),
    ("too many tokens", "/responses", {"json": {"input": "x", "max_output_tokens": 10**6}}, 400),
    ("size not a multiple", "/images/generations", {"json": {"prompt": "x", "size": "30x30"}}, 400),
    ("edit without a file", "/images/edits", {"data": {"prompt": "x"}, "files": {"other": ("a", b"1")}}, 400),
    ("edit as JSON", "/images/edits", {"json": {"prompt": "x"}}, 400),
    (
        "URL outside the allow-list",
        "/chat/completions",
        {
            "json": {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}}
                        ],
                    }
                ]
            }
        },
        400,
    ),
    (
        "system turn with an image",
        "/chat/completions",
        {
            "json": {
                "messages": [
                    {
                        "role": "system",
                        "content": [{"type": "image_url", "image_url": {"url": data_url(png((8, 8)))}}],
                    }
                ]
            }
        },
        400,
    ),
]


def post(url: str, kwargs: dict) -> httpx.Response:
    if "chunks" in kwargs:  # a body of unknown length (Transfer-Encoding: chunked)
        kwargs = {"content": iter(kwargs["chunks"]), "headers": {"content-type": "application/json"}}
    return httpx.post(url, timeout=30, **kwargs)


@pytest.mark.parametrize(("what", "path", "kwargs", "status"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_with_a_reason(server, what, path, kwargs, status):
    r = post(f"{server.openai}{path}", kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and "Traceback" not in r.text
    assert server.healthy()


def test_server_keeps_serving_after_bad_input(client, server):
    for _, path, kwargs, _ in BAD:
        post(f"{server.openai}{path}", kwargs)
    assert server.healthy()
    assert client.responses.create(model="duogen", input="hi", max_output_tokens=2).status in (
        "completed",
        "incomplete",
    )


def test_a_client_that_disconnects_stops_its_work(server):
    body = {"input": "go on", "max_output_tokens": 1500, "stream": True, "max_images": 0}
    started = time.perf_counter()
    with httpx.stream("POST", f"{server.openai}/responses", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if "output_text.delta" in line:
                break
    first_event = time.perf_counter() - started
    deadline = time.monotonic() + 10
    while metric(server, "duogen_running_requests") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped_after = time.perf_counter() - started
    assert metric(server, "duogen_running_requests") == 0
    full = time.perf_counter()
    httpx.post(f"{server.openai}/responses", json={**body, "stream": False}, timeout=120)
    full = time.perf_counter() - full
    # the abandoned request stopped well before a whole 1,500-token answer could have been written
    assert stopped_after - first_event < full / 2, (stopped_after, first_event, full)
