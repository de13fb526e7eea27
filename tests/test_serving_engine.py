"""The generation engine in-process: cross-request batching (the MLLM's forwards and the DiT's steps) gives
each request the text and pictures it would get alone, a full queue refuses at once, a deadline stops the
work, and a cancelled request stops drawing."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from duogen.components.serving.batching import Cancelled, Scheduler, Ticket
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
    alone = GenerationEngine(pair, EngineSettings(max_running=4, batching=False, decode_batching=False))
    try:
        together = asyncio.run(_answers(batched))
        separate = asyncio.run(_answers(alone))
    finally:
        batched.close()
        alone.close()
    # batching really happened: fewer DiT forwards than request steps
    assert batched.scheduler.dit_forwards < batched.scheduler.dit_steps
    assert alone.scheduler.dit_forwards == alone.scheduler.dit_steps
    assert alone.scheduler.mllm_calls == 0  # each worker ran its own MLLM forwards
    for a, b in zip(together, separate, strict=True):
        pa, pb = _pixels(a), _pixels(b)
        assert len(pa) == len(pb) == 2
        for x, y in zip(pa, pb, strict=True):
            assert x.shape == y.shape
            assert np.abs(x - y).max() <= 2  # float summation order differs between pack shapes
        assert a.finished.reason == b.finished.reason
        texts = [[p for p in answer.parts if isinstance(p, str)] for answer in (a, b)]
        assert texts[0] == texts[1]


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
    scheduler = Scheduler(pair.dit, dit_batch=4, max_wait_s=0.0)
    ticket = Ticket("r1")
    member = scheduler.join(ticket)
    frames_seen = []
    from duogen.model.flow import sample_latent

    def forward(samples, texts):
        frames_seen.append(len(samples))
        if len(frames_seen) == 2:
            ticket.cancel()
        return member.dit_forward(samples, texts)

    text = torch.randn(5, pair.config.connector.in_channels)
    try:
        with pytest.raises(Cancelled):
            sample_latent(
                pair.dit, [], (8, 8), text, None, pair.config.flow, torch.Generator().manual_seed(0), forward
            )
        assert len(frames_seen) == 2  # of the flow's 8 steps
        assert scheduler.dit_steps == 1
    finally:
        member.leave()
        scheduler.close()


def test_a_lane_waits_for_every_request_in_it(pair):
    """Three requests drawing: once each is in the DiT lane, one forward serves all three's next step,
    although their calls arrive apart."""
    scheduler = Scheduler(pair.dit, dit_batch=8, max_wait_s=5.0)
    # projected, as sample_latent hands texts to the scheduler
    text = pair.dit.project_text(torch.randn(5, pair.config.connector.in_channels))
    from duogen.model.packing import Frame

    samples = [[Frame(torch.randn(16, 8, 8), 0.5, False)]]
    members = [scheduler.join(Ticket(str(i))) for i in range(3)]
    first_round = threading.Barrier(3)
    results = []

    def request(i):
        members[i].dit_forward(samples, [text])  # joins the lane
        first_round.wait()
        before = scheduler.dit_forwards
        if i:
            time.sleep(0.2 * i)  # the others' calls come later; the lane waits for them
        results.append((before, members[i].dit_forward(samples, [text])))

    threads = [threading.Thread(target=request, args=(i,)) for i in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert len(results) == 3
        before = results[0][0]
        assert scheduler.dit_forwards == before + 1 and scheduler.dit_steps == 6  # one forward, 3 steps
    finally:
        for m in members:
            m.leave()
        scheduler.close()


def _text_requests() -> list[tuple[list, GenerationOptions]]:
    """Writing requests of different prompt lengths, answer lengths and image counts (none, one given,
    one given and one drawn, two drawn)."""
    red, blue = Image.new("RGB", (64, 64), "red"), Image.new("RGB", (32, 64), "blue")

    def user(text, *images):
        return [{"role": "user", "content": [*({"type": "image", "image": im} for im in images),
                                             {"type": "text", "text": text}]}]  # fmt: skip

    return [
        (user("why"), GenerationOptions(max_new_tokens=24, max_images=0)),
        (user("tell me what comes next " * 6, red), GenerationOptions(max_new_tokens=40, max_images=0)),
        (user("and then", blue), GenerationOptions(max_new_tokens=30, max_images=1, force_bov_every=9)),
        (user("show two steps " * 3), GenerationOptions(max_new_tokens=18, max_images=2, force_bov_every=5)),
    ]


def test_batched_decoding_writes_what_each_request_writes_alone(pair):
    """Requests decode together (one MLLM forward per tick for all writers) and each one's text and
    pictures equal its answer alone; a fifth request cancelled mid-way leaves the others unchanged."""
    batched = GenerationEngine(pair, EngineSettings(max_running=8, max_wait_s=0.05))
    alone = GenerationEngine(pair, EngineSettings(max_running=1, batching=False, decode_batching=False))

    async def cancelled_midway(engine):
        events = engine.stream(*_text_requests()[1])
        seen = 0
        async for _event in events:
            seen += 1
            if seen == 5:
                break
        await events.aclose()
        return seen

    async def together():
        return await asyncio.gather(
            *(collect(batched.stream(c, o)) for c, o in _text_requests()), cancelled_midway(batched)
        )

    async def one_by_one():
        return [await collect(alone.stream(c, o)) for c, o in _text_requests()]

    try:
        *answers, seen = asyncio.run(together())
        references = asyncio.run(one_by_one())
        assert seen == 5
        s = batched.scheduler
        assert s.decode_forwards < s.decode_steps  # writers shared forwards
        assert s.dit_steps > 0 and s.mllm_forwards < s.mllm_calls
        for a, b in zip(answers, references, strict=True):
            assert a.text == b.text and a.finished.reason == b.finished.reason
            assert a.finished.usage.new_tokens == b.finished.usage.new_tokens > 0
            pa, pb = _pixels(a), _pixels(b)
            assert len(pa) == len(pb) == a.finished.usage.images
            for x, y in zip(pa, pb, strict=True):
                assert x.shape == y.shape and np.abs(x - y).max() <= 2
        assert [len(_pixels(a)) for a in answers] == [0, 0, 1, 2]
        assert batched.running == 0 and batched.in_flight == 0  # the cancelled one left too
    finally:
        batched.close()
        alone.close()


def test_the_doctor_serving_figure_measures_batched_requests(pair):
    """`duogen doctor gpu`'s serving figure, on CPU with the tiny pair: tokens/s and images/s per client
    count, and the decode forwards of 4 concurrent requests really served several requests each."""
    from duogen.components.serving.load_check import measure_serving

    figure = measure_serving(pair, clients=(1, 4), text_tokens=8, image_size=32, steps=2)
    assert figure["decode_batch_1"] == 1.0 and figure["decode_batch_4"] > 2
    for n in (1, 4):
        assert figure[f"decode_tokens_per_s_{n}"] > 0 and figure[f"images_per_s_{n}"] > 0


def test_prompts_and_image_blocks_batch_with_chunks_of_similar_length():
    """Decode steps go together; longer chunks are grouped so that padding stays within half the tokens."""
    from duogen.components.serving.batching import _Call, _groups

    def call(new_tokens):
        return _Call((_Fed(10), range(10 + new_tokens)), Ticket())

    calls = [call(n) for n in (30, 1, 100, 5, 1, 32)]
    assert [[len(c.args[1]) - 10 for c in g] for g in _groups(calls)] == [[1, 1], [5], [30, 32], [100]]


class _Fed:
    """Stands for a session that has run `n` tokens (all `_groups` asks of it)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def test_an_uncached_request_runs_beside_batched_ones(pair):
    """The reference loop (`use_cache=False`, the whole sequence every token) cannot share a padded cache:
    it runs its own forwards while a cached request decodes through the scheduler, and both write what
    they write alone."""
    engine = GenerationEngine(pair, EngineSettings(max_running=4, max_wait_s=0.05))
    conversation = [{"role": "user", "content": "why"}]
    cached = GenerationOptions(max_new_tokens=12, max_images=0)
    uncached = dataclasses.replace(cached, use_cache=False)

    async def both():
        return await asyncio.gather(*(collect(engine.stream(conversation, o)) for o in (cached, uncached)))

    try:
        a, b = asyncio.run(both())
        assert a.text == b.text and a.finished.usage.new_tokens == 12
        assert engine.scheduler.decode_steps == 12  # only the cached request's steps went through it
    finally:
        engine.close()
