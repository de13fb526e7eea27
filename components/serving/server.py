"""The predictor server: `kserve.ModelServer` with the OpenAI routes, the chat page and the safety layer.

KServe's server gives liveness (`/`), readiness (`/v2/health/ready`, `/v1/models/NAME`), V1/V2 predict and
`/metrics`; this module adds, on the same FastAPI app, `/openai/v1/...` (openai_routes.py), the chat page at
`/ui/`, and one ASGI middleware for what every request needs: a request id (taken from `x-request-id` or
made), optional bearer-token auth, a body-size cap, per-route metrics and one JSON log line. Error
handlers turn every failure into a 4xx with a reason, or a 500 that names only the request id: no stack
trace reaches a client. The pair loads in a background thread after the port opens, so liveness answers
while a large model is still loading and readiness turns true once it is loaded.
"""

from __future__ import annotations

import asyncio
import atexit
import hmac
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from duogen.model.errors import DuoGenInputError

from . import metrics
from .engine import QueueFull, RequestTimeout
from .openai_output import OPEN_RESPONSES, OPENAI
from .openai_routes import NotFound, UnknownModel, Unsupported, openai_router, validation_error_response
from .predictor import DuoGenPredictor, PredictorSettings
from .response_store import ResponseStore
from .responses_routes import responses_router

_argv, sys.argv = sys.argv, sys.argv[:1]  # kserve parses sys.argv when imported
try:
    import kserve
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.errors import InvalidInput, ModelNotReady
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer
finally:
    sys.argv = _argv

UI_DIR = Path(__file__).parent / "ui"
OPEN_PATHS = ("/", "/metrics", "/v2/health/live", "/v2/health/ready", "/v2")  # probes and scrapes
log = logging.getLogger("duogen.serving")


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    auth_token: str | None = None  # bearer token; None: no auth
    max_body_bytes: int = 32 * 1024 * 1024
    predictor: PredictorSettings = field(default_factory=PredictorSettings)
    # where responses are kept for previous_response_id (a folder or s3:// prefix the replicas share);
    # None: a private temporary folder (one process), "none": nothing is kept
    response_store: str | None = None
    response_ttl_s: float = 24 * 3600


def response_store(settings: ServeSettings) -> ResponseStore | None:
    if settings.response_store == "none":
        return None
    root = settings.response_store
    if not root:  # this process's own: gone when it stops
        root = tempfile.mkdtemp(prefix="duogen-responses-")
        atexit.register(shutil.rmtree, root, True)
    return ResponseStore(root, settings.response_ttl_s)


def read_token(token_file: str | None) -> str | None:
    """The bearer token from a file (a mounted Kubernetes Secret) or `DUOGEN_AUTH_TOKEN`; None: no auth."""
    if token_file:
        token = Path(token_file).read_text().strip()
        if not token:
            raise DuoGenInputError(f"auth token file {token_file} is empty")
        return token
    return os.environ.get("DUOGEN_AUTH_TOKEN") or None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry)


def _configure_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _error(
    status: int, message: str, kind: str, code: str | None = None, headers=None, param: str | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(status_code=status, content=body, headers=headers)


class ServingMiddleware:
    """Request id, auth, body cap, metrics and the JSON access log, as one pure ASGI middleware."""

    def __init__(self, app, settings: ServeSettings, model_name: str) -> None:
        self.app, self.settings = app, settings
        self.open_paths = (*OPEN_PATHS, f"/v1/models/{model_name}", f"/v2/models/{model_name}/ready")

    def _open(self, path: str) -> bool:
        return path in self.open_paths or path == "/ui" or path.startswith("/ui/")

    def _authorised(self, scope) -> bool:
        token = self.settings.auth_token
        if token is None or self._open(scope["path"]):
            return True
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start, status = time.perf_counter(), 500
        cap = self.settings.max_body_bytes

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        too_large = _error(
            413,
            f"request body is larger than the limit of {cap} bytes",
            "invalid_request_error",
            "body_too_large",
        )
        try:
            if not self._authorised(scope):
                await _error(
                    401,
                    "missing or wrong bearer token",
                    "authentication_error",
                    "invalid_api_key",
                    {"WWW-Authenticate": "Bearer"},
                )(scope, receive, send_with_id)
            elif int(headers.get(b"content-length", b"0") or 0) > cap:
                await too_large(scope, receive, send_with_id)
            elif (body := await _read_body(receive, cap)) is None:
                await too_large(scope, receive, send_with_id)
            else:
                await self.app(scope, _replay(body, receive), send_with_id)
        except ValueError:  # a Content-Length that is not a number
            await _error(400, "bad Content-Length header", "invalid_request_error")(
                scope, receive, send_with_id
            )
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or ("/ui" if scope["path"].startswith("/ui") else "other")
            seconds = time.perf_counter() - start
            metrics.REQUESTS.labels(name, str(status)).inc()
            metrics.LATENCY.labels(name).observe(seconds)
            log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(seconds * 1000, 1),
                    }
                },
            )


async def _read_body(receive, cap: int) -> bytes | None:
    """The whole request body, or None past `cap` bytes (chunked bodies declare no length up front)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > cap:
            return None
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """A `receive` that hands the app the buffered body once, then the client's own messages (disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install(app: FastAPI, predictor: DuoGenPredictor, settings: ServeSettings) -> None:
    """Add the routes, the chat page, the middleware and the error handlers to KServe's app.

    KServe's model-repository extension (`/v2/repository/...`: load and unload by name) is removed: this
    server holds one pair, which the InferenceService places, and no client may unload it.
    """
    app.router.routes[:] = [
        r for r in app.router.routes if not getattr(r, "path", "").startswith("/v2/repository")
    ]
    store = response_store(settings)
    app.include_router(openai_router(predictor))
    app.include_router(responses_router(predictor, store, "/openai/v1", OPENAI))
    app.include_router(responses_router(predictor, store, "/openresponses/v1", OPEN_RESPONSES))
    app.mount("/ui/", StaticFiles(directory=UI_DIR, html=True), name="ui")
    app.add_api_route("/ui", lambda: RedirectResponse("/ui/"), include_in_schema=False)
    app.add_middleware(ServingMiddleware, settings=settings, model_name=predictor.name)
    metrics.QUEUE_DEPTH.set_function(lambda: predictor.engine.queued if predictor.engine else 0)
    metrics.RUNNING.set_function(lambda: predictor.engine.running if predictor.engine else 0)

    def openai_path(request: Request) -> bool:
        return request.url.path.startswith(("/openai/", "/openresponses/"))

    async def input_error(request: Request, err: Exception):
        if openai_path(request):
            return _error(400, str(err), "invalid_request_error", "invalid_value")
        return JSONResponse(status_code=400, content={"error": str(err)})

    async def validation(request: Request, err: RequestValidationError):
        if openai_path(request):
            return validation_error_response(err)
        return JSONResponse(status_code=422, content={"error": str(err.errors()[:5])})

    async def busy(request: Request, err: QueueFull):
        return _error(429, str(err), "rate_limit_error", "queue_full", {"Retry-After": str(err.retry_after)})

    async def timeout(request: Request, err: RequestTimeout):
        return _error(504, str(err), "timeout", "timeout")

    async def unknown_model(request: Request, err: UnknownModel):
        return _error(404, str(err), "invalid_request_error", "model_not_found", param="model")

    async def unsupported_field(request: Request, err: Unsupported):
        return _error(400, str(err), "invalid_request_error", "unsupported_parameter", param=err.param)

    async def not_found(request: Request, err: NotFound):
        return _error(404, str(err), "not_found", "not_found", param=err.param)

    async def not_ready(request: Request, err: ModelNotReady):
        return _error(503, str(err), "server_error", "model_not_ready", {"Retry-After": "5"})

    async def unsupported(request: Request, err: NotImplementedError):
        # KServe answers 501 for what its protocol has but this model has not (model versions, explain):
        # the request asks for something this server does not offer, which is the client's to change
        return _error(400, f"not supported by this server: {err}", "invalid_request_error", "unsupported")

    async def http_error(request: Request, err: StarletteHTTPException):
        if openai_path(request):  # unknown path or method under /openai/v1: an OpenAI-style error
            return _error(err.status_code, str(err.detail), "invalid_request_error", None, err.headers)
        return await http_exception_handler(request, err)

    async def internal(request: Request, err: Exception):
        rid = getattr(request.state, "request_id", "?")
        log.error("unhandled error", exc_info=err, extra={"fields": {"request_id": rid}})
        return _error(500, f"internal server error (request id {rid})", "server_error")

    app.add_exception_handler(DuoGenInputError, input_error)
    app.add_exception_handler(InvalidInput, input_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(QueueFull, busy)
    app.add_exception_handler(RequestTimeout, timeout)
    app.add_exception_handler(UnknownModel, unknown_model)
    app.add_exception_handler(Unsupported, unsupported_field)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(ModelNotReady, not_ready)
    app.add_exception_handler(NotImplementedError, unsupported)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal)


class ModelsReadyDataPlane(DataPlane):
    """Server readiness (`/v2/health/ready`) that waits for the models: KServe's answers True at once,
    but a pod must not receive traffic while its pair is still loading."""

    async def ready(self) -> bool:
        models = list(self.model_registry.get_models().values())
        return bool(models) and all([await m.healthy() for m in models]) and await super().ready()

    async def model_metadata(self, model_name: str) -> dict:
        """KServe's V2 model metadata, with `versions`: the registry version being served (an alias's)."""
        meta = await super().model_metadata(model_name)
        version = getattr(self.get_model_from_registry(model_name), "version", None)
        return {**meta, "versions": [version]} if version else meta


class FixedModels(ModelRepositoryExtension):
    """KServe's repository extension (`/v2/repository/models/NAME/load|unload`) for a server that holds one
    pair, placed by the InferenceService: no client may load another model or unload this one."""

    async def load(self, model_name: str) -> None:
        raise InvalidInput(f"this server serves one fixed pair; loading {model_name!r} is not offered")

    async def unload(self, model_name: str) -> None:
        raise InvalidInput(f"this server serves one fixed pair; unloading {model_name!r} is not offered")


class _RESTServer(RESTServer):
    """KServe's REST server on a chosen host (KServe binds 0.0.0.0), with DuoGen's additions installed
    after KServe's own, so DuoGen's error handlers are the ones in force."""

    def __init__(self, *args, host: str, customize, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = host
        self._customize = customize

    def create_application(self):
        super().create_application()
        from kserve.model_server import app

        self._customize(app)


class DuoGenModelServer(kserve.ModelServer):
    def __init__(self, settings: ServeSettings) -> None:
        super().__init__(http_port=settings.port, enable_grpc=False, workers=1, enable_docs_url=False)
        self.settings = settings
        self.dataplane = ModelsReadyDataPlane(model_registry=self.registered_models)
        self.model_repository_extension = FixedModels(model_registry=self.registered_models)

    def start(self, models: list[DuoGenPredictor]) -> None:
        """Serve at once; each model loads in the background and turns ready when loaded."""
        for model in models:
            self.register_model(model)
            if not model.ready:
                threading.Thread(target=_load, args=(model,), name="load-model", daemon=True).start()
        predictor = models[0]
        self._rest_server = _RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            grace_period=5,
            host=self.settings.host,
            customize=lambda app: install(app, predictor, self.settings),
        )
        self.servers.append(self._rest_server.start())
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def _load(model: DuoGenPredictor, first_retry_s: float = 2.0, most_s: float = 60.0) -> None:
    """Load until it works (the registry or the store may come up after the pod), then follow the alias."""
    delay = first_retry_s
    while not model.ready:
        try:
            started = time.perf_counter()
            model.load()
            seconds = round(time.perf_counter() - started, 2)
            fields = {"model": model.name, "version": model.version, "seconds": seconds}
            log.info("model loaded", extra={"fields": fields})
        except Exception as err:  # noqa: BLE001 - the server keeps answering liveness; readiness stays false
            fields = {"model": model.name, "error": str(err), "retry_in_s": delay}
            log.error("model failed to load", extra={"fields": fields})
            time.sleep(delay)
            delay = min(2 * delay, most_s)
    interval = model.settings.reload_interval
    while interval > 0 and model.version is not None:
        time.sleep(interval)
        try:
            if model.reload_if_moved():
                log.info("alias moved: serving the new version", extra={"fields": {"version": model.version}})
        except Exception as err:  # noqa: BLE001 - keep serving the loaded version; try again next time
            log.error("reload failed", extra={"fields": {"model": model.name, "error": str(err)}})


def serve(settings: ServeSettings) -> None:
    """Start the server and block until it is stopped (SIGTERM / SIGINT)."""
    _configure_logging()
    predictor = DuoGenPredictor(settings.predictor)
    DuoGenModelServer(settings).start([predictor])
