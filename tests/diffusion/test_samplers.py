"""Samplers against ComfyUI's own outputs (tests/fixtures/comfyui_numerics/samplers.json: ComfyUI 0.8.0 on CPU
float32, the 18 KSampler samplers on the analytic denoiser D(x, σ) = mu + s2/(s2 + σ²)·(x − mu), [1,4,4,4] latent,
schedulers normal/karras at 10 steps and normal at 4, with KSampler's noise scaling; the file's "pipeline" field
gives the recipe). All 18 are checked for parity, the SDE ones too: their Brownian noise is torchsde's tree seeded
as ComfyUI seeds it."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from diffusion.model_sampling import DiscreteSampling
from diffusion.noise import initial_noise
from diffusion.samplers import (
    SAMPLER_NAMES,
    MissingNoiseError,
    SamplerStep,
    UnknownSamplerError,
    get_sampler,
    run_sampler,
    sample_dpmpp_sde,
    sample_euler_ancestral,
)
from diffusion.schedules import DISCARD_PENULTIMATE_SIGMA_SAMPLERS, sampler_sigmas

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "comfyui_numerics" / "samplers.json").read_text())
SAMPLING = DiscreteSampling.linear()
MU, S2 = 0.5, 0.09


def analytic_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The fixture's denoiser: the exact posterior mean for data ~ N(MU, S2) elementwise."""
    s = sigma.reshape(-1, 1, 1, 1)
    return MU + S2 / (S2 + s**2) * (x - MU)


def _case_id(case: dict) -> str:
    return f"{case['sampler']}-{case['scheduler']}-{case['steps']}"


def test_sampler_names_are_the_18_in_comfyuis_order():
    assert SAMPLER_NAMES == (
        "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
        "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm", "lcm",
        "ddim", "uni_pc", "uni_pc_bh2",
    )
    assert {c["sampler"] for c in FIXTURE["cases"]} == set(SAMPLER_NAMES)
    assert DISCARD_PENULTIMATE_SIGMA_SAMPLERS <= set(SAMPLER_NAMES)


def test_unknown_sampler_raises_instead_of_falling_back():
    with pytest.raises(UnknownSamplerError, match="'euler_a'"):
        get_sampler("euler_a")


def test_only_ddim_uses_random_inpaint_noise():
    assert [n for n in SAMPLER_NAMES if get_sampler(n).inpaint_noise == "random"] == ["ddim"]


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=_case_id)
def test_fixture_sigmas_are_ours(case):
    ours = sampler_sigmas(SAMPLING, case["scheduler"], case["steps"], sampler_name=case["sampler"])
    expected = torch.tensor(case["sigmas"], dtype=torch.float32)
    if case["sampler"].startswith("uni_pc"):
        # ComfyUI's UniPC writes its stand-in final sigma 0.001 into the caller's sigmas tensor, so the fixture
        # recorded 0.001 where the schedule holds 0. Ours leaves the input alone.
        assert case["sigmas"][-1] == pytest.approx(0.001)
        expected[-1] = 0.0
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=_case_id)
def test_sampler_matches_comfyui(case):
    shape = FIXTURE["shape"]
    sigmas = sampler_sigmas(SAMPLING, case["scheduler"], case["steps"], sampler_name=case["sampler"])
    assert SAMPLING.reaches_max(float(sigmas[0])) == case["max_denoise"]
    noise = initial_noise(shape, case["seed"])
    x = SAMPLING.noise_scaling(sigmas[0], noise, torch.zeros(shape), max_denoise=case["max_denoise"])
    sigmas_before = sigmas.clone()
    out = run_sampler(case["sampler"], analytic_denoiser, x, sigmas, seed=case["seed"])
    out = SAMPLING.inverse_noise_scaling(sigmas[-1], out)
    expected = torch.tensor(case["result"], dtype=torch.float32).reshape(shape)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=2e-6)
    assert torch.equal(sigmas, sigmas_before)  # inputs are not mutated


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_same_seed_gives_bit_identical_results(name):
    sigmas = sampler_sigmas(SAMPLING, "karras", 6, sampler_name=name)
    x = initial_noise([2, 4, 8, 8], 5) * sigmas[0]
    first = run_sampler(name, analytic_denoiser, x, sigmas, seed=77)
    second = run_sampler(name, analytic_denoiser, x, sigmas, seed=77)
    assert torch.equal(first, second)
    other = run_sampler(name, analytic_denoiser, x, sigmas, seed=78)
    assert torch.equal(first, other) == (get_sampler(name).noise == "none")


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_callback_reports_each_step_with_a_frozen_record(name):
    sigmas = sampler_sigmas(SAMPLING, "normal", 5, sampler_name=name)
    x = initial_noise([1, 4, 4, 4], 0) * sigmas[0]
    seen: list[SamplerStep] = []
    run_sampler(name, analytic_denoiser, x, sigmas, seed=0, callback=seen.append)
    assert seen and [s.index for s in seen] == list(range(len(seen)))
    assert all(isinstance(s.sigma, float) and s.x.shape == x.shape == s.denoised.shape for s in seen)
    if name == "dpm_adaptive":
        assert all(s.total is None for s in seen)
    elif name != "dpm_fast":  # dpm_fast reports its own (fewer, higher-order) steps
        assert len(seen) == seen[0].total == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[0].index = 3  # type: ignore[misc]


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_raising_from_the_callback_stops_sampling(name):
    sigmas = sampler_sigmas(SAMPLING, "karras", 8, sampler_name=name)
    x = initial_noise([1, 4, 4, 4], 0) * sigmas[0]
    calls = []

    def counting(x, sigma):
        calls.append(1)
        return analytic_denoiser(x, sigma)

    def interrupt(step: SamplerStep):
        if step.index == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_sampler(name, counting, x, sigmas, seed=0, callback=interrupt)
    assert len(calls) <= 6  # stopped in the second step, not after all eight


def test_stochastic_samplers_need_a_seed_or_a_noise_sampler():
    sigmas = sampler_sigmas(SAMPLING, "karras", 4, sampler_name="euler_ancestral")
    x = torch.zeros(1, 4, 4, 4)
    with pytest.raises(MissingNoiseError):
        sample_euler_ancestral(analytic_denoiser, x, sigmas)
    with pytest.raises(MissingNoiseError):
        sample_dpmpp_sde(analytic_denoiser, x, sigmas)


def test_an_injected_noise_sampler_is_used_once_per_noisy_step():
    sigmas = sampler_sigmas(SAMPLING, "karras", 4, sampler_name="euler_ancestral")
    x = initial_noise([1, 4, 4, 4], 0) * sigmas[0]
    calls = []

    def zeros(sigma, sigma_next):
        calls.append((float(sigma), float(sigma_next)))
        return torch.zeros_like(x)

    sample_euler_ancestral(analytic_denoiser, x, sigmas, noise_sampler=zeros)
    assert calls == [(float(sigmas[i]), float(sigmas[i + 1])) for i in range(3)]  # none into sigma 0


def test_euler_ancestral_with_eta_zero_is_euler():
    sigmas = sampler_sigmas(SAMPLING, "karras", 4, sampler_name="euler")
    x = initial_noise([1, 4, 4, 4], 0) * sigmas[0]
    eta0 = sample_euler_ancestral(analytic_denoiser, x, sigmas, seed=0, eta=0.0)
    torch.testing.assert_close(eta0, run_sampler("euler", analytic_denoiser, x, sigmas, seed=0), rtol=1e-5, atol=1e-6)


def test_samplers_do_not_mutate_the_input_latent():
    sigmas = sampler_sigmas(SAMPLING, "karras", 4, sampler_name="dpmpp_2m")
    x = initial_noise([1, 4, 4, 4], 0) * sigmas[0]
    before = x.clone()
    for name in SAMPLER_NAMES:
        run_sampler(name, analytic_denoiser, x, sigmas, seed=1)
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_one_step_lands_near_the_denoised_estimate(name):
    # With one step every sampler should return (about) D(x, σmax) = MU ± tiny. ComfyUI's UniPC returns the
    # untouched noise here (its loop makes no update for one step); ours takes a first-order step.
    sigmas = sampler_sigmas(SAMPLING, "karras", 1, sampler_name=name)
    x = initial_noise([1, 4, 8, 8], 3) * (1 + sigmas[0] ** 2) ** 0.5
    out = run_sampler(name, analytic_denoiser, x, sigmas, seed=3)
    if name in ("dpm_fast", "dpm_adaptive"):
        assert torch.allclose(out, x)  # they stop at the last positive sigma, here σmax itself: nothing to do
        return
    assert (out - MU).abs().max().item() < 0.15
