"""The DiT alone on single-step toy-world edits: drawn as generation draws them, read back by the toy judge.

The pair's teacher-forced evaluation judges the DiT behind an MLLM; this one takes the MLLM out of the
question (each edit carries its own text stream) and says whether the DiT carries out a step: the learning
curve of `duogen pretrain dit` and `tests/benchmarks/dit_edit_learning.py`.
"""

from __future__ import annotations

import collections
import dataclasses

import torch

from duogen.components.toyworld import WorldConfig, find_shapes
from duogen.components.training.pretrain_data import Edit
from duogen.model.flow import sample_latent, source_of, to_velocity
from duogen.model.packing import Frame, pack_samples, unpack
from duogen.model.pair import DuoGenPair

from .toyworld_judge import judge_step


@torch.no_grad()
def judge_edits(
    pair: DuoGenPair,
    edits: list[Edit],
    world: WorldConfig | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
) -> dict:
    """`instruction_following` (and per action kind) and `consistency` as `toyworld_learning.py` judges a
    step, drawn with the pair's flow settings (`guidance_scale` overrides its CFG; 1 = none), and
    `edit_error_vs_copy`: the one-step picture at sigma 1 (where sampling starts), squared error against the
    truth over the latent positions the edit changes, over the same error of copying the previous picture
    (1: nothing learned beyond copying; 0: exact)."""
    world = world or WorldConfig()
    dit, flow = pair.dit, pair.config.flow
    if guidance_scale is not None:
        flow = dataclasses.replace(flow, guidance_scale=guidance_scale)
    was_training = dit.training
    dit.eval()
    generator = torch.Generator().manual_seed(seed)
    followed, seen, kept = collections.Counter(), collections.Counter(), []
    err_model = err_copy = 0.0
    device = next(dit.parameters()).device  # edits are made on the CPU (untested on a GPU)
    for edit in edits:
        edit = dataclasses.replace(
            edit, **{k: getattr(edit, k).to(device) for k in ("before", "after", "text", "negative")}
        )
        shape = tuple(edit.after.shape[-2:])
        latent = sample_latent(dit, [edit.before], shape, edit.text, edit.negative, flow, generator)
        found = find_shapes(pair.vae.decode_image(latent), world)
        task = edit.task
        ok, _, consistency = judge_step(task.scenes[0], task.scenes[1], task.actions[0], found, world)
        kind = type(task.actions[0]).__name__.lower()
        seen[kind] += 1
        followed[kind] += ok
        kept.append(consistency)
        noise = torch.randn(edit.after.shape, generator=generator).to(device)
        start = source_of(noise, edit.before, flow)
        frames = [Frame(edit.before, flow.condition_sigma, True), Frame(start, 1.0, False)]
        pack = pack_samples([frames], [edit.text], dit.config.patch_size, max_frames=dit.config.max_frames)
        out = unpack(dit(pack), pack, dit.config.out_channels)[0][-1]
        x0 = start - to_velocity(out, start, 1.0, flow, edit.before)  # x_sigma = x0 + sigma * velocity
        changed = (edit.after - edit.before).abs().amax(0) > 1e-3
        err_model += float(((x0 - edit.after)[:, changed] ** 2).sum())
        err_copy += float(((edit.before - edit.after)[:, changed] ** 2).sum())
    dit.train(was_training)
    total = sum(seen.values())
    return {
        "instruction_following": round(sum(followed.values()) / total, 4),
        "following_by_action": {k: round(followed[k] / seen[k], 3) for k in sorted(seen)},
        "consistency": round(sum(kept) / len(kept), 4),
        "edit_error_vs_copy": round(err_model / max(err_copy, 1e-12), 4),
        "eval_edits": total,
        "guidance_scale": flow.guidance_scale,
    }
