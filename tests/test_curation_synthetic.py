"""The synthetic stage: prompt pool -> deduplicated, split instructions -> interleaved answers -> shards."""

import base64
import io
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from duogen.components.curation.executor import StageContext, WorkUnit, plan, run_stage
from duogen.components.curation.shards import read_manifest, read_shard
from duogen.components.curation.synthetic import (
    Instruction,
    OpenAICompatibleImageGenerator,
    PoolError,
    ToyOracleGenerator,
    expand_backend,
    expand_pool,
    jaccard,
    load_pool,
    plan_instructions,
    png,
    shingles,
    split_of,
    synthetic_stage,
    task_from_request,
)
from duogen.components.toyworld.checker import compare, find_shapes
from duogen.components.toyworld.serialize import task_from_json

sys.path.insert(0, str(Path(__file__).parent))
from http_stub import JSONHandler, chat_reply, serve  # noqa: E402

PER_SEED = 6


@pytest.fixture(scope="module")
def pool():
    return load_pool()


@pytest.fixture(scope="module")
def expanded(pool):
    counters = Counter()
    return expand_pool(pool, expand_backend(), PER_SEED, seed=3, counters=counters), counters


def write(tmp_path, data):
    path = tmp_path / "pool.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_pool_file_is_hierarchical_and_valid(pool):
    names = [d.name for d in pool.domains]
    assert "shapes on a canvas" in names and {"cooking", "gardening", "DIY"} <= set(names)
    toy = next(d for d in pool.domains if d.toyworld)
    assert {s.name for s in toy.subcategories} == {
        "moving", "recolouring", "adding", "removing", "resizing", "swapping", "mixed multi-step"
    }  # fmt: skip
    assert all(s.seeds for d in pool.domains for s in d.subcategories)


@pytest.mark.parametrize(
    "data, message",
    [
        ("{not json", r"not valid JSON \(line 1"),
        ({"domain": []}, r"non-empty list 'domains'"),
        ({"domains": [{"subcategories": []}]}, r"domains\[0\] needs a non-empty string 'name'"),
        ({"domains": [{"name": "a", "subcategories": [{"name": "b", "seeds": []}]}]}, r"\('b'\) needs"),
        ({"domains": [{"name": "a", "subcategories": [{"name": "b", "seeds": ["ok", 3]}]}]}, r"seeds\[1\]"),
        (
            {"domains": [{"name": "a", "subcategories": [{"name": "b", "seeds": ["q"]}]}] * 2},
            r"domain 'a' appears twice",
        ),
        (
            {"domains": [{"name": "t", "toyworld": True, "subcategories": [
                {"name": "b", "seeds": ["q"], "actions": ["fly"]}]}]},
            r"'actions' must be a list of",
        ),
    ],
)  # fmt: skip
def test_pool_validation_errors_name_the_problem(tmp_path, data, message):
    with pytest.raises(PoolError, match=message):
        load_pool(write(tmp_path, data))


def test_missing_pool_file_is_a_clear_error(tmp_path):
    with pytest.raises(PoolError, match="cannot read the prompt pool"):
        load_pool(tmp_path / "nope.json")


def test_expansion_is_deterministic_distinct_and_split(pool, expanded):
    instructions, counters = expanded
    again = expand_pool(pool, expand_backend(), PER_SEED, seed=3)
    assert [i.to_dict() for i in again] == [i.to_dict() for i in instructions]
    other = expand_pool(pool, expand_backend(), PER_SEED, seed=4)
    assert [i.text for i in other] != [i.text for i in instructions]

    n_seeds = len(pool.seeds())
    dropped = counters["instructions_dropped:near_duplicate"]
    assert counters["instructions_generated"] == PER_SEED * n_seeds
    assert len(instructions) == PER_SEED * n_seeds - dropped >= 0.8 * PER_SEED * n_seeds
    grams = [shingles(i.text) for i in instructions]
    worst = max(jaccard(a, b) for k, a in enumerate(grams) for b in grams[k + 1 :])
    assert worst < 0.8
    # every subcategory of every domain is represented
    assert {(i.domain, i.subcategory) for i in instructions} == {
        (d.name, s.name) for d in pool.domains for s in d.subcategories
    }
    evals = [i for i in instructions if i.split == "eval"]
    assert 0.05 <= len(evals) / len(instructions) <= 0.15
    assert all(i.split == split_of(i.text, 0.1) for i in instructions)
    assert split_of("How do I   MOVE the red circle up?") == split_of("how do i move the red circle up")


def test_near_duplicates_are_dropped_across_subcategories(pool):
    # many requests per seed: single-step toy requests repeat, and they are dropped pool-wide
    counters = Counter()
    instructions = expand_pool(pool, expand_backend(), 20, seed=0, counters=counters)
    assert counters["instructions_dropped:near_duplicate"] > 0
    texts = [" ".join(i.text.lower().split()) for i in instructions]
    assert len(set(texts)) == len(texts)


def test_offline_toy_requests_carry_their_task(expanded):
    toy = [i for i in expanded[0] if i.domain == "shapes on a canvas"]
    kinds = {"moving": "Move", "recolouring": "Recolour", "adding": "Add", "removing": "Remove",
             "resizing": "Resize", "swapping": "Swap"}  # fmt: skip
    for ins in toy:
        task = task_from_json(ins.task)
        if ins.subcategory in kinds:
            assert {type(a).__name__ for a in task.actions} == {kinds[ins.subcategory]}
        for sentence in task.instructions():
            assert sentence[1:].rstrip(".").lower() in ins.text.lower()
    assert all(i.task is None for i in expanded[0] if i.domain != "shapes on a canvas")


def _image(data):
    return Image.open(io.BytesIO(data)).convert("RGB")


def _check_answer(ins, task):
    pieces = ToyOracleGenerator().answer(ins)
    assert pieces is not None
    texts = [p.text for p in pieces if p.type == "text"]
    images = [p.image for p in pieces if p.type == "image"]
    assert texts == [f"Step {k + 1}: {s}" for k, s in enumerate(task.instructions())]
    assert [p.type for p in pieces] == ["text", "bov", "image"] * len(task.actions)
    for data, scene in zip(images, task.scenes[1:], strict=True):
        result = compare(scene, find_shapes(_image(data)))
        assert result["score"] == 1.0 and result["precision"] == 1.0


def test_oracle_answers_match_the_tasks_scenes(expanded):
    toy = [i for i in expanded[0] if i.task is not None]
    for ins in toy[:: max(1, len(toy) // 25)]:
        _check_answer(ins, task_from_json(ins.task))


def test_oracle_parses_toy_requests_without_a_task():
    text = "How do I move the red circle to the right and then make it large?"
    task = task_from_request(text)
    assert task.instructions() == ["Move the red circle to the right.", "Make the red circle large."]
    ins = Instruction("shapes on a canvas", "mixed multi-step", text)
    _check_answer(ins, task)
    assert task_from_request(text) == task  # seeded by the text
    assert ToyOracleGenerator().answer(Instruction("cooking", "baking", "How do I bake bread?")) is None


class FakeImageServer:
    """An OpenAI-compatible chat endpoint that answers with interleaved text and image parts."""

    def __init__(self, mode="interleaved"):
        self.mode, self.bodies = mode, []
        outer = self
        scene_png = png(task_from_request("How do I remove the blue square?").scenes[1])
        url = "data:image/png;base64," + base64.b64encode(scene_png).decode()

        class Handler(JSONHandler):
            def do_POST(self):
                outer.bodies.append(self.json_body())
                if outer.mode == "error":
                    self.send_json(400, {"error": {"message": "bad model"}})
                    return
                parts = [{"type": "text", "text": "Step 1: Preheat the oven. <BOV>"}]
                if outer.mode == "interleaved":
                    parts += [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": "Step 2: Knead."},
                        {"type": "image_url", "image_url": {"url": url}},
                    ]
                self.send_json(200, chat_reply(parts))

        self.handler = Handler

    def __enter__(self):
        self.server, url = serve(self.handler)
        self.url = url + "/v1"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_http_generator_reads_interleaved_parts():
    with FakeImageServer() as server:
        gen = OpenAICompatibleImageGenerator(server.url, "fake-duogen")
        pieces = gen.answer(Instruction("cooking", "baking", "How do I bake bread?"))
        toy = Instruction("shapes on a canvas", "removing", "How do I remove the blue square?")
        assert gen.answer(toy) is not None
        gen.close()
    assert [p.type for p in pieces] == ["text", "bov", "image", "text", "bov", "image"]
    assert pieces[0].text == "Step 1: Preheat the oven." and pieces[3].text == "Step 2: Knead."
    assert _image(pieces[2].image).size == (64, 64)
    first, second = server.bodies
    assert first["model"] == "fake-duogen"
    assert first["messages"][0]["content"] == [{"type": "text", "text": "How do I bake bread?"}]
    # a toy request is sent with a picture of its initial scene
    assert second["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_http_generator_text_only_and_errors_are_skipped_and_counted():
    ins = Instruction("cooking", "baking", "How do I bake bread?").to_dict()
    cases = (("text", "instructions_dropped:unanswerable"), ("error", "instructions_dropped:generator_error"))
    for mode, key in cases:
        with FakeImageServer(mode) as server:
            ctx = StageContext(0, {"generator": server.url})
            assert synthetic_stage(WorkUnit(0, [ins]), ctx) == []
        assert ctx.counters[key] == 1


def test_http_generator_through_the_stage(tmp_path):
    ins = [Instruction("cooking", "baking", "How do I bake bread?", "eval").to_dict()]
    with FakeImageServer() as server:
        report = run_stage(synthetic_stage, plan(ins, 1), tmp_path, settings={"generator": server.url},
                           progress=False)  # fmt: skip
    assert report.counters["samples_kept"] == 1
    [(sample, images)] = list(read_shard(tmp_path / "shard-00000.tar"))
    assert sample.lineage.stages["generator"] == "openai-image:duogen"
    assert sample.lineage.input == "pool://cooking/baking" and len(images) == 2


def test_stage_through_the_executor_with_two_processes(tmp_path):
    counters = Counter()
    instructions = plan_instructions(per_seed=3, seed=1, eval_fraction=0.1, counters=counters)
    toy = [i for i in instructions if i["task"] is not None]
    report = run_stage(synthetic_stage, plan(instructions, 16), tmp_path, processes=2, progress=False)
    c = report.counters
    assert c["instructions_in"] == len(instructions)
    assert c["samples_kept"] == len(toy)
    assert c["instructions_dropped:unanswerable"] == len(instructions) - len(toy)
    samples = []
    for shard in sorted(tmp_path.glob("shard-*.tar")):
        assert read_manifest(shard)["samples"] == sum(1 for _ in read_shard(shard))
        samples += list(read_shard(shard))
    assert len(samples) == len(toy) and len({s.id for s, _ in samples}) == len(toy)
    splits = Counter(s.lineage.stages["split"] for s, _ in samples)
    assert set(splits) == {"train", "eval"} and c["samples_eval"] == splits["eval"]
    orders = Counter(tuple(p.type for p in s.turns[0].parts) for s, _ in samples)
    assert set(orders) == {("text", "image"), ("image", "text")}  # the user's picture on either side
    for sample, images in samples:
        assert sample.source == "synthetic"
        assert sample.lineage.stages["synthetic"] == "synthetic-1"
        assert sample.lineage.stages["generator"] == "toyworld-oracle"
        assert sample.lineage.input.startswith("pool://shapes%20on%20a%20canvas/")
        assert set(sample.lineage.hashes) == set(images) == set(sample.image_refs())
        user, assistant = sample.turns
        assert sorted(p.type for p in user.parts) == ["image", "text"]
        assert assistant.parts[0].text.startswith("Step 1: ")
    # a rerun finds every shard complete and redoes nothing
    again = run_stage(synthetic_stage, plan(instructions, 16), tmp_path, processes=2, progress=False)
    assert again.shards_skipped == again.shards
