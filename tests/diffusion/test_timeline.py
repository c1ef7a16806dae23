"""The timeline recorder (diffusion/timeline.py): watching a run changes nothing, and what it records is what the
model predicted — checked against the closed form of the samplers' analytic denoiser for every sampler."""

from __future__ import annotations

import pytest
import torch

from diffusion.guidance import GuidedDenoiser, prepare_conditioning
from diffusion.model_sampling import DiscreteSampling, FlowSampling
from diffusion.noise import initial_noise
from diffusion.samplers import SAMPLER_NAMES, run_sampler
from diffusion.sampling_pipeline import sample_latent
from diffusion.schedules import SCHEDULER_NAMES, sampler_sigmas, scheduler_sigmas
from diffusion.timeline import TimelineRecorder, eps_from, observed_callback, visited_sigmas
from diffusion.values import CondEntry, Conditioning
from tests.diffusion.tiny_models import S2, TinyUNet, cond, entry, no_extra

SAMPLING = DiscreteSampling.linear()
SHAPE = (2, 4, 8, 8)
SELF_STEPPING = {"dpm_fast", "dpm_adaptive"}  # choose their own steps between the schedule's ends
# The positive and negative prompts of the analytic model: Gaussian data N(mu, S2) with a different mean each.
MU_COND, MU_UNCOND = 0.5, -0.25


def _sigmas(name: str, steps: int = 4) -> torch.Tensor:
    return sampler_sigmas(SAMPLING, "karras", steps, sampler_name=name)


def _run(name: str, *, observer=None, cfg: float = 3.0, callback=None):
    sigmas = _sigmas(name)
    return sample_latent(apply_model=TinyUNet(), sampling=SAMPLING, latent=torch.zeros(SHAPE),
                         noise=initial_noise(SHAPE, 5), sigmas=sigmas, positive=cond(entry(1)),
                         negative=cond(entry(2)), cfg=cfg, sampler_name=name, seed=5, extra_conds=no_extra,
                         observer=observer, callback=callback)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_recording_a_run_changes_nothing_and_gives_one_record_per_step(name):
    plain = _run(name)
    recorder, seen = TimelineRecorder(), []
    watched = _run(name, observer=recorder, callback=seen.append)
    assert torch.equal(plain, watched)
    records = recorder.records
    assert [r.index for r in records] == [s.index for s in seen] == list(range(len(seen)))
    for record, step in zip(records, seen):
        assert record.sigma == step.sigma and torch.equal(record.x0, step.denoised[0])
        assert record.x0_uncond is not None and record.x.shape == SHAPE[1:]
        if not name.startswith("uni_pc"):  # uni_pc's corrector moves x after the model saw it: x_t is the model's
            assert torch.equal(record.x, step.x[0])
    sigmas = _sigmas(name)
    levels = visited_sigmas(records, sigmas)
    assert len(levels) == len(records) + 1 and [r.sigma for r in records] == levels[:-1]
    if name not in SELF_STEPPING:
        assert len(records) == len(sigmas) - 1 and levels == [float(s) for s in sigmas]


def _analytic_denoiser(x: torch.Tensor, sigma: torch.Tensor, *, context: torch.Tensor) -> torch.Tensor:
    """The samplers' analytic denoiser (tests/diffusion/test_samplers.py), its data mean chosen by the prompt:
    the posterior mean of N(mu, S2) data, mu = context's first value."""
    mu = context[:, 0, 0].reshape(-1, 1, 1, 1)
    s = sigma.reshape(-1, 1, 1, 1)
    return mu + S2 / (S2 + s**2) * (x - mu)


def _closed_form(x: torch.Tensor, sigma: float, mu: float) -> torch.Tensor:
    return mu + S2 / (S2 + sigma**2) * (x - mu)


def _prompt(mu: float) -> Conditioning:
    return Conditioning((CondEntry(cross_attn=torch.full((1, 3, 4), mu)),))


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_recorded_frames_of_the_analytic_denoiser_match_its_closed_form(name):
    cfg = 2.5
    noise = initial_noise(SHAPE, 11)
    sigmas = sampler_sigmas(SAMPLING, "normal", 5, sampler_name=name)
    entries = prepare_conditioning(_prompt(MU_COND), _prompt(MU_UNCOND), latent=noise, sampling=SAMPLING,
                                   extra_conds=no_extra)
    recorder = TimelineRecorder(item=1)
    guided = GuidedDenoiser(denoiser=_analytic_denoiser, entries=entries, cfg=cfg, observer=recorder.predictions)
    x = SAMPLING.noise_scaling(sigmas[0], noise, torch.zeros(SHAPE), max_denoise=True)
    run_sampler(name, guided, x, sigmas, seed=3, callback=observed_callback(None, recorder))
    assert recorder.records
    for r in recorder.records:
        tol = {"rtol": 2e-5, "atol": 2e-5}
        cond_x0, uncond_x0 = _closed_form(r.x, r.sigma, MU_COND), _closed_form(r.x, r.sigma, MU_UNCOND)
        torch.testing.assert_close(r.x0_cond, cond_x0, **tol)
        torch.testing.assert_close(r.x0_uncond, uncond_x0, **tol)
        torch.testing.assert_close(r.x0, uncond_x0 + cfg * (cond_x0 - uncond_x0), **tol)
        # ε̂ = (x_t − x̂₀)/σ_t, for the guided prediction and each of CFG's parts, and CFG mixes ε̂ the same way.
        assert torch.equal(r.eps, (r.x - r.x0) / r.sigma)
        assert torch.equal(r.eps_cond, (r.x - r.x0_cond) / r.sigma)
        torch.testing.assert_close(r.eps, r.eps_uncond + cfg * (r.eps_cond - r.eps_uncond), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(r.eps_cond, (1 - S2 / (S2 + r.sigma**2)) * (r.x - MU_COND) / r.sigma, **tol)


def test_cfg_one_records_no_unconditional_prediction_and_whole_batches_on_request():
    recorder = TimelineRecorder(item=None)
    _run("euler", observer=recorder, cfg=1.0)
    assert all(r.x0_uncond is None and r.eps_uncond is None for r in recorder.records)
    assert all(torch.equal(r.x0, r.x0_cond) and r.x.shape == SHAPE for r in recorder.records)


def test_observed_callback_tells_the_observer_first_and_is_the_callback_itself_without_one():
    calls = []

    class Observer:
        def predictions(self, x, sigma, preds):
            calls.append("predictions")

        def step(self, step):
            calls.append("observer")

    def callback(step):
        calls.append("callback")

    assert observed_callback(callback, None) is callback and observed_callback(None, None) is None
    _run("euler", observer=Observer(), callback=callback)
    assert calls[:3] == ["predictions", "observer", "callback"] and len(calls) == 3 * 4


def test_eps_at_sigma_zero_is_zero_not_nan():
    x = torch.ones(4, 2, 2)
    assert torch.equal(eps_from(x, x * 0.5, 0.0), torch.zeros_like(x))


# ---- the rectified-flow table (plotted by SchedulePlot) ------------------------------------------------------------
def test_flow_table_is_comfyuis_model_sampling_discrete_flow():
    flow = FlowSampling()
    assert flow.sigma_max == 1.0 and flow.sigma_min == pytest.approx(0.001)
    assert len(flow.sigmas) == 1000 and flow.timestep(0.5) == pytest.approx(500.0)
    # ComfyUI's normal scheduler on this table: timesteps linspace(1000, 1, steps) / 1000.
    expected = torch.cat([torch.linspace(1000, 1, 6) / 1000, torch.zeros(1)])
    torch.testing.assert_close(scheduler_sigmas(flow, "normal", 6), expected)
    torch.testing.assert_close(scheduler_sigmas(flow, "simple", 4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    shifted = FlowSampling(shift=3.0)
    assert float(shifted.sigma(torch.tensor(500.0))) == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))
    for name in SCHEDULER_NAMES:
        sigmas = scheduler_sigmas(flow, name, 8)
        assert float(sigmas[0]) <= 1.0 and float(sigmas[-1]) == 0.0 and bool((sigmas[:-1] >= sigmas[1:]).all())
    noise, latent = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(flow.noise_scaling(0.25, noise, latent), 0.25 * noise + 0.75 * latent)
