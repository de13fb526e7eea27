"""The serving figure of `duogen doctor gpu`: decode tokens/s and images/s with 1, 8 and 32 concurrent
requests through the generation engine (its scheduler batches their MLLM and DiT forwards), in-process.

On a GPU it runs the production pair in bf16; that path is untested here (no GPU in CI): the same code runs
on CPU with the tiny preset in `tests/test_serving_engine.py`.
"""

from __future__ import annotations

import asyncio
import time

import torch

from duogen.model.generate import GenerationOptions
from duogen.model.pair import DuoGenPair

from .engine import EngineSettings, GenerationEngine
from .predictor import collect

PROMPT = [{"role": "user", "content": "Explain the next step in detail."}]


def measure_serving(
    pair: DuoGenPair,
    clients: tuple[int, ...] = (1, 8, 32),
    text_tokens: int = 64,
    image_size: int = 256,
    steps: int = 20,
    log=lambda message: None,
) -> dict:
    """Per client count: output tokens/s of text-only requests (`text_tokens` each, no picture) and images/s
    of picture requests (one `image_size` picture at `steps` steps each), all running at once."""
    text = GenerationOptions(max_new_tokens=text_tokens, min_new_tokens=text_tokens, max_images=0)
    picture = GenerationOptions(
        max_new_tokens=1, max_images=1, force_bov=True, image_size=(image_size, image_size),
        num_inference_steps=steps,
    )  # fmt: skip
    result: dict = {"text_tokens": text_tokens, "image_size": image_size, "steps": steps}
    for n in clients:
        engine = GenerationEngine(pair, EngineSettings(max_running=n, max_queued=n, timeout_s=3600))
        try:
            log(f"serving: {n} concurrent requests")
            _run(engine, 1, text)  # warm-up
            s = engine.scheduler
            steps, forwards = s.decode_steps, s.decode_forwards
            tokens, seconds = _run(engine, n, text)
            result[f"decode_tokens_per_s_{n}"] = round(tokens / seconds, 1)
            # requests per decode forward in the timed run (the warm-up's lone steps left out)
            result[f"decode_batch_{n}"] = round((s.decode_steps - steps) / (s.decode_forwards - forwards), 2)
            images, seconds = _run(engine, n, picture, images=True)
            result[f"images_per_s_{n}"] = round(images / seconds, 3)
        finally:
            engine.close()
    return result


def run_serving_check(quick: bool = False, log=lambda message: None) -> dict:
    """`measure_serving` with the production pair (random weights, bf16) on this node's GPU."""
    from duogen.model.presets import production

    torch.cuda.empty_cache()
    pair = DuoGenPair.build(production(), device=torch.device("cuda"), dtype=torch.bfloat16)
    return measure_serving(pair, text_tokens=16 if quick else 64, steps=4 if quick else 20, log=log)


def _run(engine: GenerationEngine, n: int, options: GenerationOptions, images: bool = False):
    """Run `n` requests at once; (output tokens or images, seconds)."""

    async def all_at_once():
        return await asyncio.gather(*(collect(engine.stream(PROMPT, options)) for _ in range(n)))

    start = time.perf_counter()
    answers = asyncio.run(all_at_once())
    seconds = time.perf_counter() - start
    usage = [a.finished.usage for a in answers]
    return sum(u.images if images else u.new_tokens for u in usage), seconds
