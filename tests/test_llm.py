"""The LLM backends against a real OpenAI-compatible HTTP server on 127.0.0.1 (stdlib, in a thread)."""

import sys
import threading
import time
from collections import deque
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from duogen.platform.llm import (
    LLMError,
    OfflineBackend,
    OpenAICompatibleBackend,
    PromptError,
    PromptLibrary,
    Request,
    make_backend,
)

sys.path.insert(0, str(Path(__file__).parent))
from http_stub import JSONHandler, chat_reply  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16
GIF = b"GIF89a" + b"\x00" * 16


class FakeServer(ThreadingHTTPServer):
    """Echoes "ECHO:<user text>|images=<n>"; `plan` queues failures the next calls take, one each."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.release = threading.Event()  # wakes handlers told to hang, so shutdown is quick
        self.reset()

    def reset(self):
        self.plan: deque = deque()
        self.bodies: list[dict] = []
        self.headers_seen: list[dict] = []
        self.calls = self.inflight = self.max_inflight = 0
        self.delay = 0.0

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(JSONHandler):
    server: FakeServer

    def do_POST(self):
        srv = self.server
        body = self.json_body()
        with srv.lock:
            srv.calls += 1
            srv.inflight += 1
            srv.max_inflight = max(srv.max_inflight, srv.inflight)
            srv.bodies.append(body)
            srv.headers_seen.append(dict(self.headers))
            action = srv.plan.popleft() if srv.plan else None
        try:
            if self.path != "/v1/chat/completions":
                return self.reply(404, {"error": {"message": f"no route {self.path}"}})
            if action == "hang":
                srv.release.wait(2.0)
                return
            if action == 503:
                return self.reply(503, {"error": {"message": "overloaded"}})
            if action == 429:
                return self.reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
            if action == 400:
                return self.reply(400, {"error": {"message": "prompt too long", "type": "invalid_request"}})
            time.sleep(srv.delay)
            user = body["messages"][-1]["content"]
            if isinstance(user, list):
                text = next(p["text"] for p in user if p["type"] == "text")
                n_images = sum(p["type"] == "image_url" for p in user)
            else:
                text, n_images = user, 0
            answer = f"ECHO:{text}|images={n_images}"
            self.reply(200, chat_reply(answer))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)
        finally:
            with srv.lock:
                srv.inflight -= 1

    reply = JSONHandler.send_json


@pytest.fixture(scope="module")
def _server():
    srv = FakeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def server(_server):
    _server.reset()
    return _server


@pytest.fixture
def prompts(tmp_path):
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "rewrite.txt").write_text(
        "system:\nYou rewrite steps in a {style} voice.\nuser:\nRewrite: {text}\n"
    )
    (folder / "caption.txt").write_text("Caption this image.")
    (folder / "caption_transition.txt").write_text("user:\nWhat changed between the frames? {{json}}")
    return PromptLibrary(folder)


def backend(server, prompts, **kw):
    kw = {"timeout": 2.0, "backoff": 0.01, "seed": 0, **kw}
    return OpenAICompatibleBackend(server.base_url, "fake-vl", "sk-test", prompts=prompts, **kw)


def test_prompt_library_renders_and_names_what_is_missing(prompts):
    assert prompts.tasks == ["caption", "caption_transition", "rewrite"]
    system, user = prompts.render("rewrite", "cut the onion", {"style": "terse"})
    assert (system, user) == ("You rewrite steps in a terse voice.", "Rewrite: cut the onion")
    assert prompts.render("caption") == ("", "Caption this image.")
    assert prompts.render("caption_transition") == ("", "What changed between the frames? {json}")
    with pytest.raises(PromptError, match=r"'rewrite' needs placeholder \{style\}"):
        prompts.render("rewrite", "x")
    with pytest.raises(KeyError):  # still a KeyError for callers that catch lookups
        prompts.render("rewrite", "x")
    with pytest.raises(PromptError, match=r"known tasks: \['caption', 'caption_transition', 'rewrite'\]"):
        prompts.render("dialogise", "x")


def test_request_shape_system_user_and_image_parts(server, prompts):
    with backend(server, prompts) as llm:
        answer = llm.run("rewrite", text="stir", images=[PNG, JPEG, GIF], params={"style": "calm"})
    assert answer == "ECHO:Rewrite: stir|images=3"
    (body,) = server.bodies
    assert body["model"] == "fake-vl" and body["temperature"] == 0 and body["max_tokens"] == 1024
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You rewrite steps in a calm voice."}
    assert user["role"] == "user"
    assert user["content"][0] == {"type": "text", "text": "Rewrite: stir"}
    urls = [p["image_url"]["url"] for p in user["content"][1:]]
    assert [u.split(";")[0] for u in urls] == ["data:image/png", "data:image/jpeg", "data:image/gif"]
    assert all(";base64," in u for u in urls)
    assert server.headers_seen[0]["Authorization"] == "Bearer sk-test"


def test_text_only_message_and_param_overrides(server, prompts):
    with backend(server, prompts) as llm:
        assert (
            llm.run("caption", params={"temperature": 0.7, "max_tokens": 12})
            == "ECHO:Caption this image.|images=0"
        )
    (body,) = server.bodies
    assert body["messages"] == [{"role": "user", "content": "Caption this image."}]
    assert (body["temperature"], body["max_tokens"]) == (0.7, 12)


@pytest.mark.parametrize("status", [503, 429])
def test_retries_transient_errors_then_succeeds(server, prompts, status):
    server.plan.extend([status, status])
    with backend(server, prompts) as llm:
        assert llm.run("caption") == "ECHO:Caption this image.|images=0"
    assert server.calls == 3
    assert llm.stats == {"requests": 1, "cache_hits": 0, "retries": 2, "failures": 0}


def test_gives_up_after_max_retries(server, prompts):
    server.plan.extend([503] * 5)
    with (
        backend(server, prompts, max_retries=2) as llm,
        pytest.raises(LLMError, match="3 attempts.*overloaded") as err,
    ):
        llm.run("caption")
    assert err.value.status == 503 and server.calls == 3
    assert llm.stats["failures"] == 1


def test_client_error_is_not_retried_and_carries_server_message(server, prompts):
    server.plan.append(400)
    with backend(server, prompts) as llm, pytest.raises(LLMError, match="HTTP 400: prompt too long") as err:
        llm.run("caption")
    assert err.value.status == 400
    assert server.calls == 1 and llm.stats["retries"] == 0


def test_timeout_then_retry(server, prompts):
    server.plan.append("hang")
    start = time.monotonic()
    with backend(server, prompts, timeout=0.3) as llm:
        assert llm.run("caption") == "ECHO:Caption this image.|images=0"
    assert server.calls == 2 and llm.stats["retries"] == 1
    assert time.monotonic() - start < 1.5


def test_connection_refused_is_retried_then_raises(prompts):
    llm = OpenAICompatibleBackend("http://127.0.0.1:9/v1", "m", prompts=prompts, max_retries=1, backoff=0.01)
    with llm, pytest.raises(LLMError, match="2 attempts.*ConnectError"):
        llm.run("caption")
    assert llm.stats["retries"] == 1


def test_cache_hit_skips_http(server, prompts, tmp_path):
    cache = tmp_path / "cache"
    with backend(server, prompts, cache_dir=cache) as llm:
        first = llm.run("rewrite", text="boil", images=[PNG], params={"style": "x"})
        second = llm.run("rewrite", text="boil", images=[PNG], params={"style": "x"})
        llm.run("rewrite", text="boil", images=[PNG], params={"style": "x", "temperature": 0.5})
    assert first == second and server.calls == 2
    assert llm.stats["cache_hits"] == 1 and llm.stats["requests"] == 3
    assert len(list(cache.glob("*.json"))) == 2 and not list(cache.glob("*.tmp"))
    with backend(server, prompts, cache_dir=cache) as fresh:  # survives a restart
        assert fresh.run("rewrite", text="boil", images=[PNG], params={"style": "x"}) == first
    assert server.calls == 2


def test_run_many_keeps_order_and_bounds_concurrency(server, prompts):
    server.delay = 0.05
    requests = [Request("rewrite", text=f"step {i}", params={"style": "s"}) for i in range(12)]
    with backend(server, prompts, max_concurrency=3) as llm:
        answers = llm.run_many(requests)
    assert answers == [f"ECHO:Rewrite: step {i}|images=0" for i in range(12)]
    assert server.max_inflight == 3  # actually parallel, never above the bound


def test_jitter_is_deterministic_under_a_seed(server, prompts):
    a, b = backend(server, prompts, seed=7), backend(server, prompts, seed=7)
    assert [a.chat._delay(i) for i in range(4)] == [b.chat._delay(i) for i in range(4)]
    assert all(0.005 * 2**i <= a.chat._delay(i) <= 0.01 * 2**i for i in range(4))
    a.close(), b.close()


def test_offline_backend_dispatches_and_rejects_unknown_tasks():
    seen = []

    def caption(*, text, images, params):
        seen.append((text, images, params))
        return f"a picture ({len(images)} images, {params.get('lang', 'en')})"

    llm = OfflineBackend({"caption": caption, "rewrite": lambda *, text, images, params: text.upper()})
    assert llm.run("caption", images=[PNG]) == "a picture (1 images, en)"
    assert seen == [(None, (PNG,), {})]
    assert llm.run_many([Request("rewrite", "a"), Request("caption", params={"lang": "de"})]) == [
        "A",
        "a picture (0 images, de)",
    ]
    with pytest.raises(
        LLMError, match=r"no handler for task 'dialogise'; known tasks: \['caption', 'rewrite'\]"
    ):
        llm.run("dialogise", text="x")


def test_make_backend(server, prompts, monkeypatch):
    assert isinstance(make_backend("offline", handlers={}), OfflineBackend)
    monkeypatch.delenv("DUOGEN_LLM_MODEL", raising=False)
    with pytest.raises(ValueError, match="DUOGEN_LLM_MODEL"):
        make_backend(server.base_url, prompts)
    monkeypatch.setenv("DUOGEN_LLM_MODEL", "fake-vl")
    monkeypatch.setenv("DUOGEN_LLM_API_KEY", "sk-env")
    with make_backend(server.base_url, prompts, timeout=2.0) as llm:
        assert llm.name == "openai:fake-vl"
        assert llm.run("caption") == "ECHO:Caption this image.|images=0"
    assert server.headers_seen[0]["Authorization"] == "Bearer sk-env"
    with pytest.raises(ValueError, match="unknown LLM backend"):
        make_backend("grpc://x", prompts)
