"""The InferenceService's own command (`duogen serve`) with a bearer token from a
file (a mounted Secret) and a queue of one: auth on, probes open, 429 with Retry-After when full; and
readiness false until the pair is loaded."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import httpx
import pytest
from openai import AuthenticationError, OpenAI

sys.path.insert(0, str(Path(__file__).parent))
from serving_server import predictor_server  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    root = tmp_path_factory.mktemp("auth")
    DuoGenPair.build(get_preset("tiny"), seed=0).save_pretrained(root / "pair")
    (root / "token").write_text(TOKEN + "\n")
    command = [
        str(Path(sys.executable).parent / "duogen"),
        "serve",
        "--model",
        str(root / "pair"),
        "--auth-token-file",
        str(root / "token"),
        "--max-running",
        "1",
        "--max-queued",
        "0",
        "--max-new-tokens",
        "4000",
    ]
    with predictor_server(command, root / "server.log") as s:
        yield s


def test_auth_is_required_where_it_matters(server):
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=server.openai, api_key="wrong", max_retries=0).models.list()
    r = httpx.get(f"{server.openai}/models", timeout=10)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert (
        httpx.post(f"{server.url}/v1/models/duogen:predict", json={"instances": []}, timeout=10).status_code
        == 401
    )
    client = OpenAI(base_url=server.openai, api_key=TOKEN, max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == ["duogen"]
    assert client.responses.create(model="duogen", input="hi", max_output_tokens=2).usage.output_tokens == 2
    # probes, scrapes and the chat page itself stay open (the page sends the token the user types)
    for path in ("/", "/v2/health/live", "/v2/health/ready", "/v1/models/duogen", "/metrics", "/ui/"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200, path


def test_a_full_queue_answers_429_with_retry_after(server):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    # a long picture (100 steps at 256x256: a second or more) keeps the one slot busy; a text answer of the
    # random tiny pair may end after a few dozen tokens, before the second request arrives
    long = {"input": "go", "force_image": True, "steps": 100, "size": "256x256", "stream": True}
    started, release = threading.Event(), threading.Event()

    def occupy():
        with httpx.stream("POST", f"{server.openai}/responses", json=long, headers=headers, timeout=120) as r:
            for line in r.iter_lines():
                if "image_generation_call.in_progress" in line:
                    started.set()
                if release.is_set():
                    break  # leaving disconnects: the server stops this request

    thread = threading.Thread(target=occupy)
    thread.start()
    assert started.wait(60)
    # the one slot is taken and the queue holds none: refused at once
    refused = httpx.post(
        f"{server.openai}/responses",
        json={"input": "hi", "max_output_tokens": 1},
        headers=headers,
        timeout=30,
    )
    release.set()
    thread.join(60)
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "queue_full"
    for _ in range(50):  # the disconnected request frees its slot
        ok = httpx.post(
            f"{server.openai}/responses",
            json={"input": "hi", "max_output_tokens": 1},
            headers=headers,
            timeout=30,
        )
        if ok.status_code == 200:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert ok.status_code == 200


def test_readiness_is_false_until_the_pair_is_loaded():
    """In-process (KServe's app through httpx's ASGI transport): a predictor that has not loaded is not
    ready, and a generation request is a 503 that says so."""
    from fastapi import FastAPI
    from kserve.model_repository import ModelRepository
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

    from duogen.components.serving.predictor import DuoGenPredictor, PredictorSettings
    from duogen.components.serving.server import ModelsReadyDataPlane, ServeSettings, install

    predictor = DuoGenPredictor(PredictorSettings(model="unused"))
    repository = ModelRepository()
    repository.update(predictor)
    app = FastAPI()
    register_v2_endpoints(app, ModelsReadyDataPlane(repository), ModelRepositoryExtension(repository))
    RESTServer._add_exception_handlers(None, app)  # KServe's own handlers, as its server installs them
    install(app, predictor, ServeSettings())

    async def ask():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ready = await client.get("/v2/health/ready")
            model_ready = await client.get("/v2/models/duogen/ready")
            generate = await client.post("/openai/v1/responses", json={"input": "hi", "size": "64x64"})
            return ready, model_ready, generate

    ready, model_ready, generate = asyncio.run(ask())
    assert ready.status_code == 503
    assert model_ready.status_code == 503
    assert generate.status_code == 503 and "not ready" in generate.json()["error"]["message"]
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    predictor.pair = DuoGenPair.build(get_preset("tiny"))
    predictor.load()
    try:
        ready, model_ready, generate = asyncio.run(ask())
    finally:
        predictor.stop()
    assert ready.status_code == model_ready.status_code == generate.status_code == 200
