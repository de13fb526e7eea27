"""Flow matching: loss on target frames only, CFG negative, seeded samplers, CFG interval."""

import dataclasses

import pytest
import torch

from duogen.model.dit import DuoGenDiT
from duogen.model.errors import DuoGenInputError
from duogen.model.flow import (
    TrainingExample,
    drop_last_text_chunk,
    flow_matching_loss,
    run_dit,
    sample_latent,
    sample_training_sigmas,
    source_of,
    to_velocity,
)
from duogen.model.packing import Frame, pack_samples, unpack
from duogen.model.presets import tiny


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = tiny()
    return cfg, DuoGenDiT(cfg.dit).eval()


def _examples(width):
    return [
        TrainingExample([torch.randn(16, 8, 8), torch.randn(16, 6, 10), torch.randn(16, 4, 4)], 1,
                        torch.randn(5, width)),
        TrainingExample([torch.randn(16, 4, 4)], 0, torch.randn(3, width)),
    ]  # fmt: skip


def test_sigmas_are_logit_normal_and_shifted():
    cfg = tiny().flow
    low = sample_training_sigmas(4000, dataclasses.replace(cfg, shift=1.0), torch.Generator().manual_seed(0))
    high = sample_training_sigmas(4000, dataclasses.replace(cfg, shift=3.0), torch.Generator().manual_seed(0))
    assert 0 < low.min() and low.max() < 1
    assert abs(low.median().item() - 0.5) < 0.03  # logit-normal(0, 1) is centred on 0.5
    assert high.median() > 0.7  # the shift pushes towards noise


def test_loss_covers_target_frames_only(setup):
    cfg, dit = setup
    examples = _examples(cfg.dit.crossattn_proj_in_channels)
    base = flow_matching_loss(dit, examples, cfg.flow, torch.Generator().manual_seed(1))

    class NoisyConditions(torch.nn.Module):
        """Wraps the DiT and scribbles over the output of every condition frame's tokens."""

        config = dit.config

        def forward(self, pack):
            out = dit(pack)
            cond = pack.tokens[:, 16 * 4].bool()  # first condition-mask feature of each token
            return torch.where(cond[:, None], torch.randn_like(out) * 100, out)

    scribbled = flow_matching_loss(NoisyConditions(), examples, cfg.flow, torch.Generator().manual_seed(1))
    torch.testing.assert_close(scribbled, base)
    assert base.item() > 0


def test_loss_trains_the_dit(setup):
    cfg, dit = setup
    model = DuoGenDiT(cfg.dit)
    model.load_state_dict(dit.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    examples = _examples(cfg.dit.crossattn_proj_in_channels)
    losses = []
    for _ in range(30):
        loss = flow_matching_loss(model, examples, cfg.flow, torch.Generator().manual_seed(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bad_target_index_is_named(setup):
    cfg, dit = setup
    ex = TrainingExample([torch.randn(16, 4, 4)], 3, torch.randn(2, cfg.dit.crossattn_proj_in_channels))
    with pytest.raises(DuoGenInputError, match="target index 3"):
        flow_matching_loss(dit, [ex], cfg.flow)


def test_negative_drops_exactly_the_last_text_chunk():
    text = torch.arange(12.0).view(6, 2)
    last = torch.tensor([False, False, False, True, True, False])
    neg = drop_last_text_chunk(text, last)
    assert neg.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [10.0, 11.0]]
    everything = drop_last_text_chunk(text, torch.ones(6, dtype=torch.bool))
    assert everything.shape == (1, 2) and everything.abs().sum() == 0
    with pytest.raises(DuoGenInputError, match="chunk mask covers 3 tokens"):
        drop_last_text_chunk(text, last[:3])


@pytest.mark.parametrize("sampler", ["euler", "unipc"])
def test_sampling_is_seeded_and_cfg_interval_gates_guidance(setup, sampler):
    cfg, dit = setup
    flow = dataclasses.replace(cfg.flow, sampler=sampler, num_inference_steps=4, guidance_scale=4.0)
    width = cfg.dit.crossattn_proj_in_channels
    cond, text, neg = [torch.randn(16, 8, 8)], torch.randn(5, width), torch.randn(2, width)

    def draw(f, negative):
        return sample_latent(dit, cond, (6, 10), text, negative, f, torch.Generator().manual_seed(7))

    a, b = draw(flow, neg), draw(flow, neg)
    assert a.shape == (16, 6, 10) and torch.equal(a, b)
    unguided = draw(flow, None)
    assert not torch.allclose(a, unguided)
    outside = draw(dataclasses.replace(flow, cfg_interval=(2.0, 3.0)), neg)  # no sigma falls in the interval
    torch.testing.assert_close(outside, unguided)


def test_unknown_sampler_is_refused(setup):
    cfg, dit = setup
    with pytest.raises(DuoGenInputError, match="unknown sampler"):
        flow = dataclasses.replace(cfg.flow, sampler="ddim")
        sample_latent(dit, [], (4, 4), torch.randn(2, cfg.dit.crossattn_proj_in_channels), None, flow)


@pytest.mark.parametrize("prediction", ["velocity", "sample", "residual"])
def test_each_prediction_maps_its_right_output_to_the_true_velocity(setup, prediction):
    cfg, _ = setup
    flow = dataclasses.replace(cfg.flow, prediction=prediction)
    x0, noise, base = torch.randn(3, 16, 6, 10).unbind(0)
    sigma = 0.7
    noisy = (1 - sigma) * x0 + sigma * noise
    right = {"velocity": noise - x0, "sample": x0, "residual": x0 - base}[prediction]
    torch.testing.assert_close(to_velocity(right, noisy, sigma, flow, base), noise - x0)
    if prediction == "residual":  # a predecessor of another size is no base: plain x0-prediction
        torch.testing.assert_close(to_velocity(x0, noisy, sigma, flow, base[:, :4]), noise - x0)
        torch.testing.assert_close(to_velocity(x0, noisy, sigma, flow, None), noise - x0)


def test_x0_predictions_divide_by_at_least_min_sigma(setup):
    cfg, _ = setup
    flow = dataclasses.replace(cfg.flow, prediction="sample", min_sigma=0.05)
    noisy, out = torch.ones(16, 2, 2), torch.zeros(16, 2, 2)
    assert to_velocity(out, noisy, 0.001, flow, min_sigma=flow.min_sigma).max().item() == pytest.approx(20.0)
    assert to_velocity(out, noisy, 0.001, flow).max().item() == pytest.approx(1000.0)  # the sampler: exact
    with pytest.raises(DuoGenInputError, match="unknown prediction 'eps'"):
        to_velocity(out, noisy, 0.5, dataclasses.replace(flow, prediction="eps"))


def test_residual_dit_that_changes_nothing_redraws_the_previous_picture(setup):
    """Under "residual" a zero output means "keep the last picture": the sampler lands on it exactly."""
    cfg, dit = setup

    class Zero(torch.nn.Module):
        config = dit.config
        check_grid, project_text = dit.check_grid, dit.project_text

        def forward(self, pack):
            return torch.zeros_like(dit(pack))

    flow = dataclasses.replace(cfg.flow, prediction="residual", sampler="euler", num_inference_steps=6)
    width = cfg.dit.crossattn_proj_in_channels
    first, last = torch.randn(16, 6, 10), torch.randn(16, 6, 10)
    drawn = sample_latent(Zero(), [first, last], (6, 10), torch.randn(5, width), torch.randn(2, width), flow,
                          torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(drawn, last, atol=1e-4, rtol=0)


def test_flow_starts_from_the_previous_picture_only_when_asked_and_sizes_match(setup):
    cfg, _ = setup
    noise, base = torch.randn(2, 16, 6, 10).unbind(0)
    assert torch.equal(source_of(noise, base, cfg.flow), noise)
    bridge = dataclasses.replace(cfg.flow, source="previous", source_noise=0.5)
    torch.testing.assert_close(source_of(noise, base, bridge), base + 0.5 * noise)
    assert torch.equal(source_of(noise, base[:, :4], bridge), noise)  # another size: plain noise
    assert torch.equal(source_of(noise, None, bridge), noise)  # the first picture
    with pytest.raises(DuoGenInputError, match="unknown flow source 'image'"):
        source_of(noise, base, dataclasses.replace(bridge, source="image"))


def test_bridge_loss_targets_the_velocity_from_the_previous_picture(setup):
    """With source "previous" and no source noise, a DiT that predicts "no change" (residual 0) is exact
    for a target equal to its predecessor, and wrong for any other target."""
    cfg, dit = setup

    class Zero(torch.nn.Module):
        config = dit.config
        check_grid, project_text = dit.check_grid, dit.project_text

        def forward(self, pack):
            return torch.zeros_like(dit(pack))

    flow = dataclasses.replace(cfg.flow, source="previous", source_noise=0.0, prediction="residual")
    width = cfg.dit.crossattn_proj_in_channels
    picture = torch.randn(16, 6, 10)
    same = TrainingExample([picture, picture.clone()], 1, torch.randn(3, width))
    other = TrainingExample([picture, torch.randn(16, 6, 10)], 1, torch.randn(3, width))
    assert flow_matching_loss(Zero(), [same], flow, torch.Generator().manual_seed(0)).item() < 1e-10
    assert flow_matching_loss(Zero(), [other], flow, torch.Generator().manual_seed(0)).item() > 0.5


def test_the_connector_runs_once_per_image_not_per_step_and_branch(setup):
    """The text stream is the same at every denoising step and in both CFG branches: `sample_latent`
    projects it (and the negative) once. The result equals the per-step projection it replaced."""
    cfg, dit = setup
    flow = dataclasses.replace(cfg.flow, sampler="euler", num_inference_steps=6, guidance_scale=3.0)
    width = cfg.dit.crossattn_proj_in_channels
    cond, text, neg = [torch.randn(16, 8, 8)], torch.randn(5, width), torch.randn(2, width)
    forwards = []

    def counted(samples, texts):
        forwards.append(len(samples))
        return run_dit(dit, samples, texts)

    before = dit.text_projections
    once = sample_latent(dit, cond, (6, 10), text, neg, flow, torch.Generator().manual_seed(3), counted)
    assert dit.text_projections - before == 2 and forwards == [2] * 6  # 6 steps x 2 branches, 2 projections

    def per_step(samples, texts):  # the old way: raw streams projected inside every forward
        raw = [text if t.shape[0] == text.shape[0] else neg for t in texts]
        pack = pack_samples(samples, raw, dit.config.patch_size, max_frames=dit.config.max_frames)
        return unpack(dit(pack), pack, dit.config.out_channels)

    before = dit.text_projections
    again = sample_latent(dit, cond, (6, 10), text, neg, flow, torch.Generator().manual_seed(3), per_step)
    assert dit.text_projections - before == 2 + 6  # ...and again in each of the 6 forwards
    torch.testing.assert_close(once, again, atol=1e-5, rtol=1e-5)


def test_an_oversized_latent_is_refused_before_any_work(setup):
    cfg, dit = setup
    width = cfg.dit.crossattn_proj_in_channels
    mh, mw = dit.max_grid
    ph = cfg.dit.patch_size[1]
    before = dit.text_projections
    with pytest.raises(DuoGenInputError, match="larger than this DiT's largest"):
        sample_latent(dit, [], ((mh + 1) * ph, 4), torch.randn(2, width), None, cfg.flow)
    assert dit.text_projections == before  # refused first, nothing ran
    frames = [Frame(torch.randn(16, (mh + 1) * ph, 4), 0.5, False)]
    with pytest.raises(DuoGenInputError, match="larger than this DiT's largest"):
        dit(pack_samples([frames], [torch.randn(2, width)], cfg.dit.patch_size))  # training's path too


def test_edit_weight_counts_the_changed_positions_more(setup):
    """`edit_weight` weights the latent positions the target changes relative to the previous picture: no
    change, no difference from the plain mean; a changed patch moves the loss, further the larger the weight,
    toward the error on the changed patch alone."""
    cfg, dit = setup
    width = cfg.dit.crossattn_proj_in_channels
    before = torch.randn(16, 8, 8)
    after = before.clone()
    after[:, 2:4, 2:4] += 3.0  # an edit on 4 of 64 positions
    text = torch.randn(4, width)

    def loss(target, weight):
        flow = dataclasses.replace(cfg.flow, edit_weight=weight)
        example = TrainingExample([before, target], 1, text)
        with torch.no_grad():
            return float(flow_matching_loss(dit, [example], flow, torch.Generator().manual_seed(0)))

    assert loss(before.clone(), 10.0) == loss(before.clone(), 1.0)
    plain, weighted, heavy = loss(after, 1.0), loss(after, 10.0), loss(after, 1e6)
    assert plain != weighted != heavy
    assert abs(heavy - weighted) < abs(heavy - plain)  # monotone in the weight
