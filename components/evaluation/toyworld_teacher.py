"""Teacher-forced toy-world evaluation: the pair's decisions and pictures on the reference history.

- `bov_f1`: at every assistant position of a reference dialogue (each token in the Stage-1 loss) the
  greedy next token (structure tokens banned, as in generation) is "BOV" or not; F1 of the BOV class.
- IT-Co / I-Co of each assistant picture drawn on the reference history (earlier reference images as
  condition frames, the MLLM's hidden states of the reference text up to the picture's `<BOV>`, CFG as in
  generation), judged with `toyworld_judge.judge_step` (`instruction_following`, `consistency`).
"""

from __future__ import annotations

import torch

from duogen.components.toyworld import find_shapes
from duogen.components.toyworld.world import WorldConfig
from duogen.components.training.data import to_conversation
from duogen.model.chat import IGNORE_INDEX, ImagePart
from duogen.model.connector import stack_layers
from duogen.model.flow import sample_latent
from duogen.model.generate import NOT_GENERATED
from duogen.model.pair import DuoGenPair

from .toyworld_judge import judge_step


@torch.no_grad()
def bov_counts(pair: DuoGenPair, enc) -> tuple[int, int, int, int, int]:
    """(tp, fp, fn, correct, positions) of teacher-forced next-token decisions at assistant positions."""
    mllm = pair.mllm
    logits = mllm.forward_logits(enc).float()  # row t predicts token t + 1
    banned = [mllm.tokenizer.convert_tokens_to_ids(t) for t in NOT_GENERATED]
    logits[:, banned] = float("-inf")
    positions = (enc.labels != IGNORE_INDEX).nonzero().flatten()
    positions = positions[positions > 0]
    predicted = logits[positions - 1].argmax(-1)
    truth = enc.input_ids[positions]
    bov = mllm.bov_token_id
    p, r = predicted == bov, truth == bov
    return (
        int((p & r).sum()),
        int((p & ~r).sum()),
        int((~p & r).sum()),
        int((predicted == truth).sum()),
        len(positions),
    )


@torch.no_grad()
def draw_steps(pair: DuoGenPair, enc, images, generator: torch.Generator):
    """Each assistant picture drawn teacher-forced on the reference history, in order."""
    cfg = pair.config
    layers = pair.mllm.layer_hidden_states(enc)
    stream = stack_layers(layers, eps=cfg.connector.norm_eps)
    latents = [pair.vae.encode_image(im, pair.pixel_multiple) for im in images]
    keep = cfg.dit.max_frames - 1
    drawn = []
    for k, (start, _) in enumerate(enc.image_spans):
        bov = start - 2
        if bov not in enc.bov_positions:
            continue  # a user image
        text, negative = pair.text_streams(enc, bov, stream)
        conditions = latents[max(0, k - keep) : k]
        h, w = latents[k].shape[-2:]
        latent = sample_latent(pair.dit, conditions, (h, w), text, negative, cfg.flow, generator)
        drawn.append(pair.vae.decode_image(latent))
    return drawn


def evaluate_teacher_forced(pair: DuoGenPair, dialogues, seed: int = 0) -> dict:
    """`dialogues`: (sample, images, task) of reference dialogues whose toy task is known."""
    tp = fp = fn = correct = total = 0
    followed, strict, consistency = [], [], []
    world = WorldConfig()
    generator = torch.Generator().manual_seed(seed)
    for sample, images, task in dialogues:
        turns = to_conversation(sample, images)
        enc = pair.mllm.encode(turns)
        counts = bov_counts(pair, enc)
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
        correct, total = correct + counts[3], total + counts[4]
        pictures = [p.image for t in turns for p in t.parts if isinstance(p, ImagePart)]
        drawn = draw_steps(pair, enc, pictures, generator)
        if len(drawn) != len(task.actions):
            raise ValueError(f"{sample.id}: {len(drawn)} assistant pictures for {len(task.actions)} steps")
        for k, picture in enumerate(drawn):
            ok, strict_ok, kept = judge_step(
                task.scenes[k], task.scenes[k + 1], task.actions[k], find_shapes(picture, world), world
            )
            followed.append(ok)
            strict.append(strict_ok)
            consistency.append(kept)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "bov_f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "bov_precision": round(precision, 4),
        "bov_recall": round(recall, 4),
        "assistant_token_accuracy": round(correct / total, 4),
        "instruction_following": round(sum(followed) / len(followed), 4),
        "instruction_following_strict": round(sum(strict) / len(strict), 4),
        "consistency": round(sum(consistency) / len(consistency), 4),
        "held_out_dialogues": len(dialogues),
        "held_out_steps": len(followed),
    }
