"""The Open Responses compliance suite itself (tests/openresponses_compliance: the specification project's
own TypeScript runner and tests, its zod schemas generated from the specification, run with Node and tsx)
against a real `duogen serve` on its `/openresponses/v1` routes; the suite's JSON summary is printed.

The suite checks the protocol, and also that each answer ends by itself (status `completed`). The random
tiny pair rambles until its token cap (`incomplete`: right, but not what the suite asks), so the served pair
is the tiny one after a few Stage-1 steps of the product's Trainer on short generic exchanges (a spec with a
generated example source): a model that ends its turn, as any chat model does. Tool calling, the function-
call round trip and file input are refused by design (no function calling, no files): they must fail by a
400 `invalid_request_error` naming the field, and by nothing else."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from serving_server import predictor_server  # noqa: E402

DUOGEN = str(Path(sys.executable).parent / "duogen")
SUITE = Path(__file__).parent / "openresponses_compliance"
TSX = SUITE / "node_modules" / ".bin" / "tsx"
MUST_PASS = {
    "basic-response",
    "streaming-response",
    "system-prompt",
    "multi-turn",
    "previous-response-id",
    "image-input",
}
REFUSED = {
    "tool-calling": "tools[0]",
    "function-call-roundtrip": "tools[0]",
    "file-input": "input[0].content[1]",
}
PROMPTS = [
    "Hi.", "What is the weather like?", "Tell me a joke.", "How are you today?", "Name a colour.",
    "What time is it?", "Describe a cat.", "Give me a number.", "Where is Paris?", "Why is the sky blue?",
    "Write a word.", "Help me please.",
]  # fmt: skip


@pytest.fixture(scope="module")
def terse_pair(tmp_path_factory) -> Path:
    from duogen.components.training import stages
    from duogen.components.training.config import TrainConfig
    from duogen.components.training.loop import Trainer
    from duogen.model.chat import TextPart, Turn

    def exchanges(pair):
        def example(position: int):
            prompt = PROMPTS[position % len(PROMPTS)]
            return pair.mllm.encode(
                [Turn("user", [TextPart(prompt)]), Turn("assistant", [TextPart("Hello there.")])]
            )

        return example

    spec = dataclasses.replace(stages.get("stage1"), name="terse", examples=exchanges)
    out = tmp_path_factory.mktemp("terse")
    cfg = TrainConfig(stage="stage1", model="tiny", out=str(out), steps=30, batch_size=4, lr=3e-3,
                      warmup_steps=2, ckpt_every=1000, log_every=1000)  # fmt: skip
    result = Trainer(cfg, progress=False, spec=spec).train()
    assert result.status == "finished"
    return Path(result.model_dir)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed (the suite is TypeScript)")
def test_the_open_responses_compliance_suite_passes_what_the_model_does(terse_pair, tmp_path):
    assert TSX.exists(), f"run `bash scripts/install.sh dev` (npm ci in {SUITE}) first"
    with predictor_server([DUOGEN, "serve", "--model", str(terse_pair)], tmp_path / "server.log") as server:
        run = subprocess.run(
            [str(TSX), "bin/compliance-test.ts", "--base-url", f"{server.url}/openresponses/v1",
             "--api-key", "unused", "--model", "duogen", "--json"],
            cwd=SUITE, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    report = json.loads(run.stdout)
    print(json.dumps(report["summary"]))
    results = {r["id"]: r for r in report["results"]}
    for test in MUST_PASS:
        assert results[test]["status"] == "passed", (test, results[test].get("errors"))
    for test, param in REFUSED.items():
        (error,) = results[test]["errors"]
        assert error.startswith("HTTP 400: "), (test, error)
        body = json.loads(error.removeprefix("HTTP 400: "))["error"]
        assert body["type"] == "invalid_request_error" and body["param"] == param, (test, body)
    assert report["summary"]["passed"] == len(MUST_PASS) and report["summary"]["failed"] == len(REFUSED)
