"""The predictor KServe runs: a `kserve.Model` that loads the pair and generates; it knows nothing of HTTP.

`load()` fetches the pair (local folder, `/mnt/models`, `s3://`, `models:/NAME@ALIAS`), places it on the
device in the chosen dtype and starts the generation engine; `ready` is true only after that. Serving an
alias, `reload_if_moved()` loads the version the alias points at now beside the running one and swaps it in
between requests (the old engine finishes what it admitted), so promoting a version rolls it out. `stream()`
yields one request's events (text deltas, image started/done, finished); the V1/V2 `predict` runs the same
path and returns the whole answer. The OpenAI routes (`openai_routes.py`) are protocol code on top of
`stream()`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import torch
from pydantic import ValidationError

from duogen.model.errors import DuoGenInputError
from duogen.model.generate import Answer, GenerationOptions
from duogen.model.images import png_base64
from duogen.model.pair import DuoGenPair
from duogen.platform.model_store import alias_version, local_pair_dir

from .engine import EngineSettings, GenerationEngine
from .inputs import ImageLimits, decode_base64
from .schemas import Controls

_argv, sys.argv = sys.argv, sys.argv[:1]  # kserve parses sys.argv when imported; keep ours out of it
try:
    import kserve
    from kserve.errors import InvalidInput, ModelNotReady
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
finally:
    sys.argv = _argv

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class PredictorSettings:
    model: str = "/mnt/models"  # folder, s3:// URL or MLflow model URI
    name: str = "duogen"
    device: str = "cpu"
    dtype: str = "float32"
    max_new_tokens: int = 1024  # the most a request may ask for
    default_new_tokens: int = 256
    max_image_side: int = 512  # drawn pictures, per side
    reload_interval: float = 0.0  # seconds between checks of a `models:/NAME@ALIAS`'s version (0: never)
    engine: EngineSettings = field(default_factory=EngineSettings)
    limits: ImageLimits = field(default_factory=ImageLimits)


class DuoGenPredictor(kserve.Model):
    def __init__(self, settings: PredictorSettings, pair: DuoGenPair | None = None) -> None:
        super().__init__(settings.name)
        self.settings = settings
        self.pair = pair
        self.engine: GenerationEngine | None = None
        self.version: str | None = None  # the registry version being served (an alias's model only)

    def load(self) -> bool:
        s = self.settings
        if s.dtype not in DTYPES:
            raise DuoGenInputError(f"unknown dtype {s.dtype!r}; choose one of {sorted(DTYPES)}")
        if self.pair is None:
            self.version = alias_version(s.model)
            self.pair = self._fetch(self.version)
        self.engine = GenerationEngine(self.pair, s.engine)
        self.ready = True
        return self.ready

    def _fetch(self, version: str | None) -> DuoGenPair:
        """The pair of the alias's `version` (pinned: the alias may move meanwhile), or of the URI."""
        s = self.settings
        uri = s.model
        if version is not None:
            uri = "models:/" + s.model.removeprefix("models:/").partition("@")[0] + "/" + version
        return DuoGenPair.from_pretrained(local_pair_dir(uri), device=s.device, dtype=DTYPES[s.dtype])

    def reload_if_moved(self, drain_s: float | None = None) -> bool:
        """Serve the version the alias points at now, if it moved; True when it swapped one in."""
        now = alias_version(self.settings.model)
        if now is None or now == self.version or not self.ready:
            return False
        pair = self._fetch(now)
        engine, old = GenerationEngine(pair, self.settings.engine), self.engine
        self.pair, self.engine, self.version = pair, engine, now
        deadline = time.monotonic() + (self.settings.engine.timeout_s if drain_s is None else drain_s)
        while old is not None and old.in_flight and time.monotonic() < deadline:
            time.sleep(0.2)  # requests admitted before the swap finish on the old pair
        if old is not None:
            old.close()
        return True

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.ready = False

    # --- generation --------------------------------------------------------------------------------------

    def options(
        self, controls: Controls, max_new_tokens: int | None, force_bov: bool = False, stop=()
    ) -> GenerationOptions:
        """Validated generation options: numbers beyond this server's caps are a `DuoGenInputError`."""
        if self.pair is None:  # sizes are checked against the pair's pixel multiple
            raise ModelNotReady(self.name)
        s = self.settings
        tokens = s.default_new_tokens if max_new_tokens is None else max_new_tokens
        if not 1 <= tokens <= s.max_new_tokens:
            raise DuoGenInputError(
                f"max output tokens must be between 1 and {s.max_new_tokens}, got {tokens}"
            )
        size = self.image_size(controls.size)
        return GenerationOptions(
            max_new_tokens=tokens,
            min_new_tokens=min(controls.min_tokens or 0, tokens),
            max_images=4 if controls.max_images is None else controls.max_images,
            temperature=controls.temperature or 0.0,
            top_p=1.0 if controls.top_p is None else controls.top_p,
            seed=controls.seed or 0,
            stop=tuple(stop),
            force_bov=force_bov,
            image_size=size or (64, 64),
            guidance_scale=controls.guidance_scale,
            num_inference_steps=controls.steps,
        )

    def image_size(self, size: str | None) -> tuple[int, int] | None:
        if size is None:
            return None
        w, h = (int(v) for v in size.split("x"))
        multiple, top = self.pair.pixel_multiple, self.settings.max_image_side
        if w % multiple or h % multiple or not (multiple <= w <= top and multiple <= h <= top):
            raise DuoGenInputError(
                f"size {size}: each side must be a multiple of {multiple} between {multiple} and {top}"
            )
        return w, h

    def stream(
        self, conversation, options: GenerationOptions, request_id: str | None = None
    ) -> AsyncIterator:
        """Admit one request (`QueueFull` when the queue is full) and return the iterator of its events."""
        if not self.ready or self.engine is None:
            raise ModelNotReady(self.name)
        return self.engine.stream(conversation, options, request_id)

    async def answer(self, conversation, options: GenerationOptions, request_id: str | None = None) -> Answer:
        return await collect(self.stream(conversation, options, request_id))

    # --- KServe V1 / V2 -----------------------------------------------------------------------------------

    async def predict(self, payload, headers=None):
        try:
            if isinstance(payload, InferRequest):
                return await self._predict_v2(payload, headers)
            return await self._predict_v1(payload, headers)
        except (DuoGenInputError, ValidationError) as err:
            raise InvalidInput(str(err)) from None

    def _conversation(self, prompt, images: list[str]) -> list:
        if not isinstance(prompt, str) or not prompt:
            raise DuoGenInputError("'prompt' must be a non-empty string")
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise DuoGenInputError("'images' must be a list of base64 strings")
        if len(images) > self.settings.limits.max_images:
            raise DuoGenInputError(
                f"{len(images)} images, more than the limit of {self.settings.limits.max_images}"
            )
        content = [{"type": "text", "text": prompt}]
        content += [
            {"type": "image", "image": decode_base64(b, self.settings.limits, f"images[{i}]")}
            for i, b in enumerate(images)
        ]
        return [{"role": "user", "content": content}]

    async def _predict_v1(self, payload, headers) -> dict:
        if isinstance(payload, bytes | str):  # a JSON body sent without a JSON content type (curl -d)
            try:
                payload = json.loads(payload)
            except ValueError:
                raise DuoGenInputError("the request body is not JSON") from None
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if (
            not isinstance(instances, list)
            or not instances
            or not all(isinstance(i, dict) for i in instances)
        ):
            raise DuoGenInputError('expected {"instances": [{"prompt": "...", "images": [base64, ...]}]}')
        predictions = []
        for instance in instances:
            controls = Controls.model_validate(instance)
            options = self.options(controls, controls.max_new_tokens, controls.force_image)
            conversation = self._conversation(instance.get("prompt"), instance.get("images", []))
            result = await self.answer(conversation, options, (headers or {}).get("x-request-id"))
            predictions.append(
                {
                    "parts": [
                        {"type": "text", "text": p}
                        if isinstance(p, str)
                        else {"type": "image", "png": png_base64(p)}
                        for p in result.parts
                    ],
                    "finish_reason": result.finished.reason,
                }
            )
        return {"predictions": predictions}

    async def _predict_v2(self, request: InferRequest, headers) -> InferResponse:
        prompt = request.get_input_by_name("prompt")
        if prompt is None:
            raise DuoGenInputError("V2 request needs a BYTES input named 'prompt'")
        images = request.get_input_by_name("images")
        params = dict(request.parameters or {})
        text = _first_string(prompt.data)
        encoded = [_string(v) for v in images.data] if images is not None else []
        controls = Controls.model_validate(params)
        options = self.options(controls, controls.max_new_tokens, controls.force_image)
        result = await self.answer(
            self._conversation(text, encoded), options, (headers or {}).get("x-request-id")
        )
        texts = result.text
        pngs = [png_base64(p) for p in result.images]
        outputs = [
            InferOutput("text", [1], "BYTES", [texts]),
            InferOutput("images", [len(pngs)], "BYTES", pngs),
            InferOutput("finish_reason", [1], "BYTES", [result.finished.reason]),
        ]
        return InferResponse(request.id or "", self.name, outputs)


async def collect(events: AsyncIterator) -> Answer:
    """A whole answer from its events."""
    answer = Answer()
    async for event in events:
        answer.add(event)
    return answer


def _string(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if not isinstance(value, str):
        raise DuoGenInputError(f"expected a string element, got {type(value).__name__}")
    return value


def _first_string(data) -> str:
    if not isinstance(data, list) or len(data) != 1:
        raise DuoGenInputError("'prompt' must hold exactly one string")
    return _string(data[0])
