"""The learning curves of `duogen pretrain`: what each pretrained part is judged on as it trains.

- MLLM: free-running answers to held-out toy tasks in every request form (`toyworld_eval.FORMS`), judged by
  the toy-world judge: T-Com and I-Com per form (the pictures are the preset's DiT's; IT-Co is not the
  MLLM's to win). Its tasks come from their own seed range (`CURVE_SEED`), never the main job's.
- DiT: single-step held-out edits (`dit_edits.judge_edits`, with the preset's CFG and without) and
  multi-step held-out dialogues drawn teacher-forced (`toyworld_teacher`): every picture of a 2-4 step
  conversation on the reference history, its earlier pictures as condition frames.
"""

from __future__ import annotations

from duogen.components.training.pretrain_data import DialogueData
from duogen.model.pair import DuoGenPair

from .dit_edits import judge_edits
from .toyworld_eval import FORMS, ToyEvalConfig, evaluate_forms
from .toyworld_teacher import evaluate_teacher_forced

CURVE_SEED = 5_000  # held_out_tasks(seed=5000): tasks 15,000 on; the main job's evaluation uses 10,000 on


def judge_mllm(pair: DuoGenPair, data: DialogueData, count: int, forms=FORMS) -> dict:
    """T-Com / I-Com per form over `count` held-out tasks each, and their means over the forms."""
    summaries = evaluate_forms(pair, ToyEvalConfig(tasks=count, seed=CURVE_SEED), forms)
    out: dict = {f"{m}_{form}": s[m]["mean"] for form, s in summaries.items() for m in ("t_com", "i_com")}
    for metric in ("t_com", "i_com"):
        out[metric] = round(sum(s[metric]["mean"] for s in summaries.values()) / len(summaries), 4)
    out["tasks_per_form"] = count
    return out


class DiTJudge:
    """`judge(pair, data)` for the DiT's curve; the held-out sets are made once (the text encoder is frozen,
    so their text streams do not change as the DiT trains)."""

    def __init__(self, count: int, dialogues: int | None = None, seed: int = 0) -> None:
        self.count, self.dialogues, self.seed = count, dialogues or max(1, count // 4), seed
        self._edits = self._dialogues = None

    def __call__(self, pair: DuoGenPair, data: DialogueData) -> dict:
        if self._edits is None:
            self._edits = data.held_out_edits(self.count)
            self._dialogues = data.held_out_dialogues(self.dialogues)
        plain = judge_edits(pair, self._edits, guidance_scale=0.0, seed=self.seed)
        out = {**judge_edits(pair, self._edits, seed=self.seed), "no_cfg": plain}
        multi = evaluate_teacher_forced(pair, self._dialogues, self.seed)
        out["dialogues"] = {k: multi[k] for k in ("instruction_following", "consistency", "held_out_steps")}
        return out
