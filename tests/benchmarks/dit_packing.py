"""DiT packing benchmark: prints one JSON line.

- max_abs_diff_vs_diffusers: our packed DiT vs diffusers' CosmosTransformer3DModel, same weights, one uniform
  sample (tiny preset; target <= 1e-4).
- packed vs padded: a pack of mixed-size images (latent grids 64x64, 48x96, 96x48, 32x32, i.e. images of
  512x512, 384x768, 768x384, 256x256) against the same images each padded to the largest height and width
  (padding-mask channel set), forward + backward; tokens/s counts real tokens only (target >= 1.3).
- ours vs diffusers: a uniform batch (4 samples x 2 frames of 32x32 latents), forward + backward, same config
  and weights (target >= 1.0).
All baselines are measured in this run, on this machine.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from duogen.model.diffusers_compat import dense_forward, diffusers_cosmos
from duogen.model.dit import DuoGenDiT
from duogen.model.packing import Frame, pack_samples, unpack
from duogen.model.presets import tiny

REPEATS = 5


def timed(fn) -> float:
    fn()  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fwd_bwd(model, pack):
    def run():
        model.zero_grad(set_to_none=True)
        model(pack).float().pow(2).mean().backward()

    return run


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = tiny().dit
    ref = diffusers_cosmos(cfg, seed=0)
    ours = DuoGenDiT(cfg)
    ours.load_diffusers_state_dict(ref.state_dict())
    text_dim = cfg.crossattn_proj_in_channels

    # 1. equivalence on one uniform sample
    frames = [Frame(torch.randn(16, 16, 16), s, c) for s, c in ((1e-4, True), (1e-4, True), (0.6, False))]
    text = torch.randn(12, text_dim)
    with torch.no_grad():
        expected = dense_forward(ref.eval(), frames, text)
        pack = pack_samples([frames], [text], cfg.patch_size)
        got = torch.stack(unpack(ours.eval()(pack), pack, cfg.out_channels)[0], dim=1)
    max_diff = (got - expected).abs().max().item()

    # 2. packed vs padded, mixed sizes
    sizes = [(64, 64), (48, 96), (96, 48), (32, 32)]
    texts = [torch.randn(n, text_dim) for n in (20, 14, 30, 9)]
    latents = [torch.randn(16, h, w) for h, w in sizes]
    packed = pack_samples([[Frame(x, 0.5)] for x in latents], texts, cfg.patch_size)
    big_h, big_w = max(h for h, _ in sizes), max(w for _, w in sizes)
    padded_frames = []
    for x in latents:
        canvas, mask = torch.zeros(16, big_h, big_w), torch.ones(big_h, big_w)
        canvas[:, : x.shape[1], : x.shape[2]] = x
        mask[: x.shape[1], : x.shape[2]] = 0
        padded_frames.append([Frame(canvas, 0.5, padding_mask=mask)])
    padded = pack_samples(padded_frames, texts, cfg.patch_size)
    real_tokens = sum(packed.sample_tokens)
    ours.train()
    t_packed = timed(fwd_bwd(ours, packed))
    t_padded = timed(fwd_bwd(ours, padded))

    # 3. ours vs diffusers, uniform batch
    batch, nframes, hw = 4, 2, 32
    dense = torch.randn(batch, 16, nframes, hw, hw)
    sig = torch.rand(batch, 1, nframes, 1, 1)
    cond = torch.zeros(batch, 1, nframes, hw, hw)
    cond[:, :, 0] = 1
    utext = torch.randn(batch, 16, text_dim)
    upack = pack_samples(
        [
            [Frame(dense[b, :, t], sig[b, 0, t, 0, 0], bool(t == 0)) for t in range(nframes)]
            for b in range(batch)
        ],
        list(utext),
        cfg.patch_size,
    )
    ref.train()

    def ref_run():
        ref.zero_grad(set_to_none=True)
        out = ref(
            hidden_states=dense, timestep=sig, encoder_hidden_states=utext, condition_mask=cond,
            padding_mask=dense.new_zeros(1, 1, hw, hw), return_dict=False,
        )[0]  # fmt: skip
        out.float().pow(2).mean().backward()

    uniform_tokens = batch * nframes * (hw // 2) ** 2
    t_ref = timed(ref_run)
    t_ours = timed(fwd_bwd(ours, upack))

    print(
        json.dumps(
            {
                "benchmark": "dit_packing",
                "preset": "tiny",
                "max_abs_diff_vs_diffusers": max_diff,
                "packed_tokens": real_tokens,
                "padded_tokens": sum(padded.sample_tokens),
                "packed_tokens_per_s": round(real_tokens / t_packed, 1),
                "padded_tokens_per_s": round(real_tokens / t_padded, 1),
                "packed_vs_padded": round(t_padded / t_packed, 3),
                "uniform_tokens": uniform_tokens,
                "diffusers_tokens_per_s": round(uniform_tokens / t_ref, 1),
                "ours_tokens_per_s": round(uniform_tokens / t_ours, 1),
                "ours_vs_diffusers": round(t_ref / t_ours, 3),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
