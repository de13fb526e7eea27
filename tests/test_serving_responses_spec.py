"""`POST /openai/v1/responses` against the Open Responses specification (version 2026-04-24): every response
object and stream event validated with the specification's own JSON schemas (tests/data/openresponses, not
our reading of them), the stream framed as the spec says ([DONE] last, errors nested and followed by
`response.failed`), a cut answer's item `incomplete`, and what the server cannot do refused with a 400 naming
the field instead of being ignored. A real `duogen serve` process with a tiny pair; raw HTTP where the
framing is the point, the official `openai` client where users meet it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from openai import APIError, BadRequestError, NotFoundError, OpenAI

sys.path.insert(0, str(Path(__file__).parent))
from openresponses import event_schema, problems  # noqa: E402
from serving_server import predictor_server  # noqa: E402

DUOGEN = str(Path(sys.executable).parent / "duogen")
TEXT_ONLY = {"model": "duogen", "input": "Move the red circle to the left.", "tool_choice": "none"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("responses")


@pytest.fixture(scope="module")
def server(pair_dir, store, tmp_path_factory):
    command = [
        DUOGEN,
        "serve",
        "--model",
        str(pair_dir),
        "--max-new-tokens",
        "20000",
        "--response-store",
        str(store),
    ]
    with predictor_server(command, tmp_path_factory.mktemp("log") / "server.log") as s:
        yield s


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.openai, api_key="unused", timeout=60, max_retries=0)


def sse_events(server, body: dict, route: str = "/openai/v1") -> tuple[list[tuple[str | None, object]], str]:
    """(event line, parsed data) of every event of a streamed request, and the raw text."""
    url = f"{server.url}{route}/responses"
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = lines["data"]
        events.append((lines.get("event"), data if data == "[DONE]" else json.loads(data)))
    return events, raw


def test_a_response_is_the_specs_response_resource_and_echoes_what_was_applied(server):
    """All 31 fields of ResponseResource (a missing `completed_at` or `store`, a null `temperature` fail);
    the settings echoed as applied: greedy sampling is temperature 0 and top_p 1, metadata and the caller's
    identifiers come back; tool_choice "none" draws no picture; the answer cut at max_output_tokens is an
    `incomplete` response whose last message item is `incomplete` too (it said `completed` before)."""
    body = {**TEXT_ONLY, "max_output_tokens": 5, "metadata": {"ticket": "42"}, "safety_identifier": "user-7"}
    r = httpx.post(f"{server.openai}/responses", json=body, timeout=60)
    assert r.status_code == 200, r.text
    response = r.json()
    assert problems("ResponseResource", response) == []
    assert response["status"] == "incomplete" and response["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    assert [item["type"] for item in response["output"]] == ["message"]  # "none": no picture
    assert response["output"][-1]["status"] == "incomplete"
    assert (response["temperature"], response["top_p"]) == (0.0, 1.0)
    assert response["metadata"] == {"ticket": "42"} and response["safety_identifier"] == "user-7"
    assert response["completed_at"] >= response["created_at"] and response["store"] is True
    assert response["usage"]["output_tokens"] == 5


def test_a_stream_is_the_specs_event_sequence_ending_in_done(server, client):
    """Each event matches the schema its `type` names and its `event:` line; sequence numbers count up from
    0; the message item goes added -> part added -> deltas -> text done -> part done -> item done; the last
    event is the literal [DONE] (the official client stops there)."""
    events, raw = sse_events(server, {**TEXT_ONLY, "max_output_tokens": 6, "temperature": 0.7, "seed": 1})
    assert events[-1] == (None, "[DONE]") and raw.endswith("data: [DONE]\n\n")
    events = events[:-1]
    for line, data in events:
        assert line == data["type"]
        assert problems(event_schema(data["type"]), data) == [], data["type"]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    kinds = [data["type"] for _, data in events]
    deltas = kinds.count("response.output_text.delta")
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    final = events[-1][1]["response"]
    assert final["temperature"] == 0.7 and final["output"][0]["status"] == "incomplete"
    streamed = list(client.responses.create(stream=True, **TEXT_ONLY, max_output_tokens=6))
    assert streamed[-1].type == "response.incomplete"


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"tools": [{"type": "function", "name": "get_weather", "parameters": {}}]}, "tools[0]"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text.format"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"background": True}, "background"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "name": "get_weather"}}, "tool_choice"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "x"}]}]},
            "input[0].content[0]",
        ),
    ],
)
def test_what_the_server_cannot_do_is_refused_naming_the_field(server, extra, param):
    """A function tool, a JSON schema, reasoning, logprobs, background mode, a forced tool call with no tool:
    before, each was a 200 as if never asked. Now a 400 `invalid_request_error` whose `param` is the field
    and whose message is one readable line."""
    r = httpx.post(
        f"{server.openai}/responses", json={**TEXT_ONLY, **extra, "max_output_tokens": 2}, timeout=60
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert "\n" not in error["message"] and len(error["message"]) < 300 and "Traceback" not in r.text


def test_refusals_reach_the_official_client_and_the_server_keeps_serving(client):
    with pytest.raises(BadRequestError) as refused:
        client.responses.create(
            **TEXT_ONLY, tools=[{"type": "function", "name": "f", "parameters": {}, "strict": False}]
        )
    assert refused.value.param == "tools[0]"
    with pytest.raises(NotFoundError) as missing:
        client.responses.create(**TEXT_ONLY, previous_response_id="resp_unknown")
    assert missing.value.body["type"] == "not_found" and missing.value.param == "previous_response_id"
    # OpenAI's own image tool is this server's tool: "required" with it starts the answer with a picture
    drawn = client.responses.create(
        model="duogen", input="Draw it.", tools=[{"type": "image_generation"}], tool_choice="required",
        max_output_tokens=2, extra_body={"size": "32x32"},
    )  # fmt: skip
    assert drawn.output[0].type == "image_generation_call"


def test_an_error_mid_stream_is_the_specs_error_event_then_response_failed(pair_dir, tmp_path):
    """The request runs past its deadline after its stream began: the spec's `error` event (payload nested
    under `error`, where both official SDKs look) and `response.failed` carrying it, then [DONE]; the
    official client raises instead of ending quietly. (A server with a half-second deadline: the tiny pair
    needs seconds to fill its 4,096-token context.)"""
    long = {**TEXT_ONLY, "max_output_tokens": 20000}
    command = [DUOGEN, "serve", "--model", str(pair_dir), "--max-new-tokens", "20000", "--timeout", "0.5"]
    with predictor_server(command, tmp_path / "server.log") as hurried:
        events, _ = sse_events(hurried, long)
        client = OpenAI(base_url=hurried.openai, api_key="unused", timeout=60, max_retries=0)
        with pytest.raises(APIError, match="timeout"):
            for _ in client.responses.create(stream=True, **long):
                pass
    assert events[-1] == (None, "[DONE]")
    (_, error), (_, failed) = events[-3], events[-2]
    assert problems("ErrorStreamingEvent", error) == [] and error["error"]["code"] == "timeout"
    assert problems("ResponseFailedStreamingEvent", failed) == []
    assert failed["response"]["status"] == "failed" and failed["response"]["error"]["code"] == "timeout"


def test_a_follow_up_by_previous_response_id_continues_the_stored_conversation(
    pair_dir, store, client, tmp_path
):
    """Turn 1 draws a picture; turn 2 names it by `previous_response_id` and sends only its own words, on
    another replica sharing the store. It must answer exactly as when the client resends turn 1's input and
    output itself (greedy, same seed: same text, same picture, same input tokens, which count turn 1's
    picture as vision tokens). A server that ignored the id, or kept only the text, answers differently."""
    first = client.responses.create(
        model="duogen", input="Draw the red circle.", tools=[{"type": "image_generation"}],
        tool_choice="required", max_output_tokens=4, extra_body={"size": "32x32", "seed": 2},
    )  # fmt: skip
    assert first.store and first.output[0].type == "image_generation_call"
    follow_up = {"model": "duogen", "max_output_tokens": 6, "tool_choice": {"type": "image_generation"},
                 "extra_body": {"seed": 5, "size": "32x32"}}  # fmt: skip
    turn = [{"role": "user", "content": "Now move it to the left."}]
    command = [DUOGEN, "serve", "--model", str(pair_dir), "--response-store", str(store)]
    with predictor_server(command, tmp_path / "replica.log") as replica:
        other = OpenAI(base_url=replica.openai, api_key="unused", timeout=60, max_retries=0)
        continued = other.responses.create(previous_response_id=first.id, input=turn, **follow_up)
        assert (
            other.responses.retrieve(first.id).model_dump() == first.model_dump()
        )  # the replica reads it too
    resent_input = [
        {"role": "user", "content": "Draw the red circle."},
        *[item.model_dump(exclude_none=True) for item in first.output],
        *turn,
    ]
    resent = client.responses.create(input=resent_input, **follow_up)
    assert continued.previous_response_id == first.id and resent.previous_response_id is None
    assert continued.usage.input_tokens == resent.usage.input_tokens > first.usage.input_tokens
    assert [o.type for o in continued.output] == [o.type for o in resent.output]
    assert (
        continued.output[0].result == resent.output[0].result and continued.output_text == resent.output_text
    )


def test_stored_responses_can_be_read_deleted_and_opted_out_of(server, client):
    kept = client.responses.create(**TEXT_ONLY, max_output_tokens=2)
    read = httpx.get(f"{server.openai}/responses/{kept.id}", timeout=30).json()
    assert (
        problems("ResponseResource", read) == []
        and read["output"][0]["content"][0]["text"] == kept.output_text
    )
    client.responses.delete(kept.id)
    with pytest.raises(NotFoundError):
        client.responses.retrieve(kept.id)
    with pytest.raises(NotFoundError) as gone:
        client.responses.create(**TEXT_ONLY, previous_response_id=kept.id)
    assert gone.value.param == "previous_response_id"
    private = client.responses.create(**TEXT_ONLY, max_output_tokens=2, store=False)
    assert private.store is False
    with pytest.raises(NotFoundError):
        client.responses.retrieve(private.id)
    with pytest.raises(NotFoundError):
        client.responses.retrieve("../../etc/passwd")


def test_a_stored_response_expires_after_its_retention(tmp_path):
    from duogen.components.serving.response_store import ResponseStore

    now = [1000.0]
    store = ResponseStore(str(tmp_path), ttl_s=60, clock=lambda: now[0])
    response = {"id": "resp_" + "0" * 32, "output": [{"type": "message", "content": []}]}
    store.put(response, [{"role": "user", "content": "hi"}])
    now[0] += 59
    assert store.conversation(response["id"]) == [{"role": "user", "content": "hi"}, *response["output"]]
    now[0] += 2
    assert store.get(response["id"]) is None and not list(tmp_path.iterdir())  # expired and deleted
    assert store.get("resp_../x") is None and store.delete("../x") is False


def test_pictures_come_in_openais_vocabulary_or_the_specs_by_route(server, client):
    """The same request on both routes draws the same picture. /openai/v1 names it as OpenAI does (the
    official client parses it); /openresponses/v1 names it with DuoGen's slug, and there the whole answer,
    picture included, validates against the specification extended by DuoGen's published schema
    (components/serving/openresponses_extension.json), as does every stream event, while the bare
    specification rejects the item (why a slug-less OpenAI item cannot be served there). The spec route's
    picture item is accepted back as input."""
    body = {"model": "duogen", "input": "Draw the red circle.", "tools": [{"type": "image_generation"}],
            "tool_choice": "required", "max_output_tokens": 3, "size": "32x32", "seed": 2}  # fmt: skip
    spec = httpx.post(f"{server.url}/openresponses/v1/responses", json=body, timeout=60).json()
    picture = spec["output"][0]
    assert picture["type"] == "duogen:image_generation_call" and picture["status"] == "completed"
    assert problems("ResponseResource", spec, extended=True) == []
    assert problems("ResponseResource", spec) != []
    extras = {k: body[k] for k in ("size", "seed")}
    openai = client.responses.create(**{k: v for k, v in body.items() if k not in extras}, extra_body=extras)
    assert openai.output[0].type == "image_generation_call" and openai.output[0].result == picture["result"]
    events, _ = sse_events(server, body, route="/openresponses/v1")
    assert events[-1] == (None, "[DONE]")
    for line, data in events[:-1]:
        assert line == data["type"]
        assert problems(event_schema(data["type"], extended=True), data, extended=True) == [], data["type"]
    kinds = [data["type"] for _, data in events[:-1]]
    assert "duogen:image_generation_call.completed" in kinds and not any(
        k.startswith("response.image_") for k in kinds
    )
    turns = [
        {"role": "user", "content": "Draw the red circle."},
        picture,
        {"role": "user", "content": "Move it."},
    ]
    follow_up = {"input": turns, "max_output_tokens": 2, "tool_choice": "none"}
    again = httpx.post(f"{server.url}/openresponses/v1/responses", json=follow_up, timeout=60)
    assert again.status_code == 200 and again.json()["usage"]["input_tokens"] > spec["usage"]["input_tokens"]


def test_the_store_keeps_responses_in_object_storage(tmp_path, monkeypatch):
    """What the chart configures (`s3://<bucket>/responses`), on a real S3 server (SeaweedFS): kept, read,
    deleted, and an expired record gone."""
    from s3_server import s3_server

    from duogen.components.serving.response_store import ResponseStore

    with s3_server(tmp_path / "s3") as s3:
        s3.create_bucket("duogen")
        for key, value in s3.env.items():
            monkeypatch.setenv(key, value)
        now = [0.0]
        store = ResponseStore("s3://duogen/responses", ttl_s=3600, clock=lambda: now[0])
        kept, old = ({"id": f"resp_{c * 32}", "output": []} for c in "ab")
        store.put(kept, [{"role": "user", "content": "hi"}])
        assert store.conversation(kept["id"]) == [{"role": "user", "content": "hi"}]
        assert store.delete(kept["id"]) and store.get(kept["id"]) is None and not store.delete(kept["id"])
        store.put(old, [])
        now[0] += 3601
        assert store.get(old["id"]) is None and not store.delete(old["id"])  # expired: read once, then gone
