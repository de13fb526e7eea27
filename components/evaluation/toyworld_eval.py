"""Free-running evaluation on the toy world: the pair answers held-out tasks by itself and the judge scores
each answer (`toyworld_judge`). A task's request is what a user would type: "How do I <step 1>, then
<step 2>?" followed by the picture of the starting scene (the order the main job and the training data use).

Held-out tasks come from `random_task` seeds from 10,000 on, which no data-engine stage draws from.
"""

from __future__ import annotations

from dataclasses import dataclass

from duogen.components.toyworld import Task, WorldConfig, random_task, render
from duogen.model.generate import Answer, GenerationOptions, generate

from .toyworld_judge import judge_answer, summarise

HELD_OUT_SEED = 10_000


def held_out_tasks(n: int, steps: int = 2, seed: int = 0) -> list[Task]:
    return [random_task(HELD_OUT_SEED + seed + i, steps=steps) for i in range(n)]


def task_request(task: Task, cfg: WorldConfig | None = None) -> list[dict]:
    """The user's turn for a task: the request text, then the starting scene."""
    steps = task.instructions(cfg)
    prompt = "How do I " + ", then ".join(s[0].lower() + s[1:].rstrip(".") for s in steps) + "?"
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": prompt},
                {"type": "image", "image": render(task.scenes[0], cfg)},
            ],
        }
    ]


@dataclass
class ToyEvalConfig:
    tasks: int = 20
    steps: int = 2
    seed: int = 0
    max_new_tokens: int = 160

    def options(self, steps: int) -> GenerationOptions:
        return GenerationOptions(max_new_tokens=self.max_new_tokens, max_images=steps + 2, seed=self.seed)


def evaluate_free_running(pair, cfg: ToyEvalConfig, progress=None) -> dict:
    """Judge the pair's own answers to `cfg.tasks` held-out tasks: per-task records and the summary."""
    records = []
    for i, task in enumerate(held_out_tasks(cfg.tasks, cfg.steps, cfg.seed)):
        conversation = task_request(task)
        answer = Answer()
        for event in generate(pair, conversation, cfg.options(len(task.actions))):
            answer.add(event)
        parts = answer.parts
        record = judge_answer(task, parts)
        record.update(
            task=i,
            request=conversation[0]["content"][0]["text"],
            answer="".join(p if isinstance(p, str) else "[picture]" for p in parts),
            finish_reason=answer.finished.reason,
            parts=parts,
        )
        records.append(record)
        if progress is not None:
            progress(record)
    return {"summary": summarise(records), "records": records}
