"""Free-running evaluation on the toy world: the pair answers held-out tasks by itself and the judge scores
each answer (`toyworld_judge`). A task's request is what a user would type, in one of four forms:

- `default`: "How do I <step 1>, then <step 2>?" followed by the picture of the starting scene (the form the
  main job's gates are measured on);
- `picture-first`: the same text with the picture before it (clients send both orders);
- `wordings`: the same steps asked in framings and joins the training data never uses (`HELD_OUT_WORDINGS`);
- `three-step`: a three-step task in the default form.

Held-out tasks come from `random_task` seeds from 10,000 on, which no data-engine stage draws from.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from duogen.components.toyworld import Task, WorldConfig, random_task, render
from duogen.model.generate import GenerationOptions, generate_answer

from .toyworld_judge import judge_answer, summarise

HELD_OUT_SEED = 10_000


def held_out_tasks(n: int, steps: int = 2, seed: int = 0) -> list[Task]:
    return [random_task(HELD_OUT_SEED + seed + i, steps=steps) for i in range(n)]


FORMS = ("default", "picture-first", "wordings", "three-step")
# Framings and joins for the `wordings` form: everyday, and disjoint from the data engine's own
# (`synthetic_pool.REQUEST_WORDINGS` / `STEP_JOINS`; a test checks), so this form measures what the MLLM
# makes of a request it was not trained to expect.
HELD_OUT_WORDINGS = (
    "What should I do to {0}?",
    "Tell me how to {0}.",
    "I need to {0}. What are the steps?",
    "Could you explain how I can {0}?",
    "Teach me to {0}.",
    "Guide me: {0}.",
)
HELD_OUT_JOINS = (", subsequently ", ", once that is done, ", " and later ", ", and lastly ")


def task_request(
    task: Task, cfg: WorldConfig | None = None, form: str = "default", key: int = 0
) -> list[dict]:
    """The user's turn for a task in a form (see the module's docstring); `key` picks the wording."""
    if form not in FORMS:
        raise ValueError(f"unknown request form {form!r}; choose one of {', '.join(FORMS)}")
    clauses = [s[0].lower() + s[1:].rstrip(".") for s in task.instructions(cfg)]
    if form == "wordings":
        rng = random.Random(f"wordings:{key}")
        body = clauses[0] + "".join(rng.choice(HELD_OUT_JOINS) + c for c in clauses[1:])
        prompt = rng.choice(HELD_OUT_WORDINGS).format(body)
    else:
        prompt = "How do I " + ", then ".join(clauses) + "?"
    text = {"type": "text", "text": prompt}
    picture = {"type": "image", "image": render(task.scenes[0], cfg)}
    return [{"role": "user", "content": [picture, text] if form == "picture-first" else [text, picture]}]


@dataclass
class ToyEvalConfig:
    tasks: int = 20
    steps: int = 2
    seed: int = 0
    max_new_tokens: int = 160
    form: str = "default"

    def options(self, steps: int) -> GenerationOptions:
        return GenerationOptions(max_new_tokens=self.max_new_tokens, max_images=steps + 2, seed=self.seed)


def evaluate_free_running(pair, cfg: ToyEvalConfig, progress=None) -> dict:
    """Judge the pair's own answers to `cfg.tasks` held-out tasks: per-task records and the summary."""
    steps = 3 if cfg.form == "three-step" else cfg.steps
    records = []
    for i, task in enumerate(held_out_tasks(cfg.tasks, steps, cfg.seed)):
        conversation = task_request(task, form=cfg.form, key=cfg.seed + i)
        answer = generate_answer(pair, conversation, cfg.options(len(task.actions)))
        parts = answer.parts
        record = judge_answer(task, parts)
        record.update(
            task=i,
            form=cfg.form,
            request=next(c["text"] for c in conversation[0]["content"] if c["type"] == "text"),
            answer="".join(p if isinstance(p, str) else "[picture]" for p in parts),
            finish_reason=answer.finished.reason,
            parts=parts,
        )
        records.append(record)
        if progress is not None:
            progress(record)
    return {"summary": summarise(records), "records": records}


def evaluate_forms(pair, cfg: ToyEvalConfig, forms=FORMS) -> dict:
    """`evaluate_free_running` in each form (`cfg.form` ignored): form -> its summary."""
    return {
        form: evaluate_free_running(pair, dataclasses.replace(cfg, form=form))["summary"] for form in forms
    }
