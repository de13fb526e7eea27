"""Does a follow-up by `previous_response_id` draw as consistently as one that resends the conversation?

Against a real `duogen serve` (the toy preset: the shipped pretrained MLLM and DiT) on 127.0.0.1, for each of
`--tasks` held-out two-step toy tasks: turn 1 asks for the first step with the scene's picture; turn 2 asks
for the second step, once by `previous_response_id` (the server's stored conversation, its picture a
condition frame) and once resending turn 1's input and output items. The toy judge scores turn 2's picture
against the truth after the second step: `consistency` (the untouched shapes kept), `following` (the step
carried out), means over tasks for both ways, and `identical_pictures` (the share of tasks where both ways
drew the same PNG: greedy decoding and the same seed make the two requests the same computation).

    python tests/benchmarks/follow_up_consistency.py [--tasks 12]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from openai import OpenAI
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1]))
from serving_server import predictor_server  # noqa: E402

from duogen.components.evaluation.toyworld_eval import held_out_tasks  # noqa: E402
from duogen.components.evaluation.toyworld_judge import judge_step  # noqa: E402
from duogen.components.toyworld import render  # noqa: E402
from duogen.components.toyworld.checker import find_shapes  # noqa: E402
from duogen.components.toyworld.world import WorldConfig  # noqa: E402
from duogen.model.images import png_data_url  # noqa: E402

DUOGEN = str(Path(sys.executable).parent / "duogen")


def clause(sentence: str) -> str:
    return sentence[0].lower() + sentence[1:].rstrip(".")


def picture_of(response) -> Image.Image | None:
    calls = [o for o in response.output if o.type == "image_generation_call" and o.result]
    return Image.open(io.BytesIO(base64.b64decode(calls[-1].result))).convert("RGB") if calls else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=12)
    args = parser.parse_args()
    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    cfg = WorldConfig()
    folder = Path(tempfile.mkdtemp())
    DuoGenPair.build(get_preset("toy"), seed=0).save_pretrained(folder / "pair")
    scores = {"stored": [], "resent": []}
    identical = 0
    with predictor_server(
        [DUOGEN, "serve", "--model", str(folder / "pair")], folder / "server.log"
    ) as server:
        client = OpenAI(base_url=server.openai, api_key="unused", timeout=300, max_retries=0)
        options = {"model": "duogen", "max_output_tokens": 80, "extra_body": {"max_images": 2, "seed": 0}}
        for task in held_out_tasks(args.tasks, steps=2):
            first_step, second_step = task.instructions(cfg)
            turn1 = [{"role": "user", "content": [
                {"type": "input_text", "text": f"How do I {clause(first_step)}?"},
                {"type": "input_image", "image_url": png_data_url(render(task.scenes[0], cfg))},
            ]}]  # fmt: skip
            first = client.responses.create(input=turn1, **options)
            turn2 = [{"role": "user", "content": f"And then, how do I {clause(second_step)}?"}]
            stored = client.responses.create(previous_response_id=first.id, input=turn2, **options)
            earlier = [item.model_dump(exclude_none=True) for item in first.output]
            resent = client.responses.create(input=turn1 + earlier + turn2, **options)
            pictures = {"stored": picture_of(stored), "resent": picture_of(resent)}
            for way, picture in pictures.items():
                if picture is None:
                    scores[way].append((0.0, None))
                    continue
                found = find_shapes(picture, cfg)
                ok, _, kept = judge_step(task.scenes[1], task.scenes[2], task.actions[1], found, cfg)
                scores[way].append((float(ok), kept))
            same = pictures["stored"] is not None and pictures["resent"] is not None
            identical += same and np.array_equal(
                np.asarray(pictures["stored"]), np.asarray(pictures["resent"])
            )

    def summary(rows):
        kept = [k for _, k in rows if k is not None]
        return {
            "following": round(float(np.mean([f for f, _ in rows])), 4),
            "consistency": round(float(np.mean(kept)), 4) if kept else None,
            "pictures": len(kept),
        }

    print(json.dumps({
        "benchmark": "follow_up_consistency", "tasks": args.tasks,
        "stored": summary(scores["stored"]), "resent": summary(scores["resent"]),
        "identical_pictures": round(identical / args.tasks, 4),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
