"""The generation engine in-process: cross-request batching gives each request the picture it would get
alone, a full queue refuses at once, a deadline stops the work, and a cancelled request stops drawing."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

from duogen.components.serving.batching import Cancelled, DiTBatcher, Ticket
from duogen.components.serving.engine import EngineSettings, GenerationEngine, QueueFull, RequestTimeout
from duogen.components.serving.predictor import collect
from duogen.model.generate import GenerationOptions
from duogen.model.pair import DuoGenPair
from duogen.model.presets import get_preset


@pytest.fixture(scope="module")
def pair() -> DuoGenPair:
    return DuoGenPair.build(get_preset("tiny"), seed=0)


def requests() -> list[tuple[list, GenerationOptions]]:
    """Different prompts, sizes and seeds: the pack must keep samples of different shapes apart."""
    sizes = [(64, 64), (48, 32), (32, 64), (64, 48)]
    return [
        (
            [{"role": "user", "content": f"draw picture {i}"}],
            GenerationOptions(
                max_new_tokens=3, max_images=2, force_bov=True, force_bov_every=1, image_size=size, seed=i
            ),
        )
        for i, size in enumerate(sizes)
    ]


async def _answers(engine: GenerationEngine) -> list[dict]:
    return await asyncio.gather(*(collect(engine.stream(c, o)) for c, o in requests()))


def _pixels(answer: dict) -> list[np.ndarray]:
    return [np.asarray(p, dtype=np.int16) for p in answer.parts if not isinstance(p, str)]


def test_batched_requests_get_the_pictures_they_would_get_alone(pair):
    batched = GenerationEngine(pair, EngineSettings(max_running=4, batching=True, max_wait_s=0.05))
    alone = GenerationEngine(pair, EngineSettings(max_running=4, batching=False))
    try:
        together = asyncio.run(_answers(batched))
        separate = asyncio.run(_answers(alone))
    finally:
        batched.close()
        alone.close()
    # batching really happened: fewer DiT forwards than request steps
    assert batched.batcher.forwards < batched.batcher.steps
    assert alone.batcher.forwards == alone.batcher.steps
    for a, b in zip(together, separate, strict=True):
        pa, pb = _pixels(a), _pixels(b)
        assert len(pa) == len(pb) == 2
        for x, y in zip(pa, pb, strict=True):
            assert x.shape == y.shape
            assert np.abs(x - y).max() <= 2  # float summation order differs between pack shapes
        assert a.finished.reason == b.finished.reason
        texts = [[p for p in answer.parts if isinstance(p, str)] for answer in (a, b)]
        assert texts[0] == texts[1]  # concurrent MLLM decoding in threads writes what it writes alone


def test_a_full_queue_refuses_at_once(pair):
    engine = GenerationEngine(pair, EngineSettings(max_running=1, max_queued=1))

    async def run():
        options = GenerationOptions(max_new_tokens=200, max_images=0)
        conversation = [{"role": "user", "content": "hi"}]
        first = engine.stream(conversation, options)
        second = engine.stream(conversation, options)  # waits in the queue
        with pytest.raises(QueueFull) as refused:
            engine.stream(conversation, options)
        assert refused.value.retry_after >= 1
        await first.aclose()
        await second.aclose()
        third = engine.stream(conversation, GenerationOptions(max_new_tokens=2, max_images=0))
        return await collect(third)  # admitted again once the others left

    try:
        assert asyncio.run(run()).finished.usage.new_tokens == 2
    finally:
        engine.close()


def test_a_request_past_its_deadline_stops(pair):
    engine = GenerationEngine(pair, EngineSettings(timeout_s=0.3))
    options = GenerationOptions(max_new_tokens=100_000, max_images=0)
    try:
        with pytest.raises(RequestTimeout, match="timeout"):
            asyncio.run(collect(engine.stream([{"role": "user", "content": "hi"}], options)))
    finally:
        engine.close()


def test_a_cancelled_request_stops_at_its_next_denoising_step(pair):
    batcher = DiTBatcher(pair.dit, max_batch=4, max_wait_s=0.0)
    ticket = Ticket("r1")
    frames_seen = []
    from duogen.model.flow import sample_latent

    def forward(samples, texts):
        frames_seen.append(len(samples))
        if len(frames_seen) == 2:
            ticket.cancel()
        return batcher.forward(samples, texts, ticket)

    text = torch.randn(5, pair.config.connector.in_channels)
    try:
        with pytest.raises(Cancelled):
            sample_latent(
                pair.dit, [], (8, 8), text, None, pair.config.flow, torch.Generator().manual_seed(0), forward
            )
        assert len(frames_seen) == 2  # of the flow's 8 steps
        assert batcher.steps == 1
    finally:
        batcher.close()


def test_the_batcher_waits_for_every_drawing_request(pair):
    batcher = DiTBatcher(pair.dit, max_batch=8, max_wait_s=5.0)
    # projected, as sample_latent hands texts to the batcher
    text = pair.dit.project_text(torch.randn(5, pair.config.connector.in_channels))
    from duogen.model.packing import Frame

    samples = [[Frame(torch.randn(16, 8, 8), 0.5, False)]]
    results = []

    def request(i):
        results.append(batcher.forward(samples, [text], Ticket(str(i))))

    for _ in range(3):  # three requests are inside their denoising loops
        batcher.enter()
    threads = [threading.Thread(target=request, args=(i,)) for i in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert len(results) == 3
        assert batcher.forwards == 1 and batcher.steps == 3  # one forward served all three
    finally:
        for _ in range(3):
            batcher.leave()
        batcher.close()
