"""Samplers against ComfyUI's own outputs (tests/fixtures/comfyui_numerics/samplers_all.json: ComfyUI 0.8.0 on CPU
float32, all 44 KSampler samplers on the analytic denoiser D(x, σ) = mu + s2/(s2 + σ²)·(x − mu), [1,4,4,4] latent,
schedulers normal/karras at 10 steps and normal at 4, with KSampler's noise scaling; the file's "pipeline" field
gives the recipe).

Every case with a result (114 of 132) is checked to rtol 1e-5, atol 2e-6 (float32 rounding of a different operation
order). Measured with torch 2.13 on x86-64, 110 of them are ComfyUI's bit for bit: all three cases of 35 samplers, the
SDE ones included (their Brownian noise is torchsde's tree seeded as ComfyUI seeds it, their step noise the CPU
generator seeded seed + 1); lms (exact integration of its Adams weights instead of scipy's quadrature: within 5e-6
relative) and the karras cases of uni_pc / uni_pc_bh2 (within 4e-6) differ in the last bits. Six of the seven CFG++
samplers have no result in the fixture (ComfyUI raises without a guider's unconditional prediction); they are checked
against their update rules with a cond/uncond denoiser below.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from diffusion.guidance import GuidedDenoiser, PreparedCond
from diffusion.model_sampling import DiscreteSampling
from diffusion.noise import StepNoiseSampler, initial_noise
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
from diffusion.samplers.cfg_pp import capture_uncond, publish_uncond, uncond_wanted
from diffusion.schedules import DISCARD_PENULTIMATE_SIGMA_SAMPLERS, sampler_sigmas

FIXTURES = Path(__file__).parents[1] / "fixtures"
FIXTURE = json.loads((FIXTURES / "comfyui_numerics" / "samplers_all.json").read_text())
RESULT_CASES = [case for case in FIXTURE["cases"] if "result" in case]
ERROR_CASES = [case for case in FIXTURE["cases"] if "error" in case]
KSAMPLER_LIST = json.loads((FIXTURES / "comfyui_object_info" / "object_info.json").read_text())[
    "KSampler"]["input"]["required"]["sampler_name"][0]
SAMPLING = DiscreteSampling.linear()
MU, S2 = 0.5, 0.09
CFG_PP = [name for name in SAMPLER_NAMES if name.endswith("_cfg_pp")]


def analytic_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The fixture's denoiser: the exact posterior mean for data ~ N(MU, S2) elementwise."""
    s = sigma.reshape(-1, 1, 1, 1)
    return MU + S2 / (S2 + s**2) * (x - MU)


def _case_id(case: dict) -> str:
    return f"{case['sampler']}-{case['scheduler']}-{case['steps']}"


def test_sampler_names_are_comfyuis_44_in_its_order():
    assert list(SAMPLER_NAMES) == KSAMPLER_LIST and len(SAMPLER_NAMES) == 44
    in_fixture = list(dict.fromkeys(case["sampler"] for case in FIXTURE["cases"]))
    assert in_fixture == list(SAMPLER_NAMES)
    assert DISCARD_PENULTIMATE_SIGMA_SAMPLERS <= set(SAMPLER_NAMES)


def test_unknown_sampler_raises_instead_of_falling_back():
    with pytest.raises(UnknownSamplerError, match="'euler_a'"):
        get_sampler("euler_a")


def test_only_ddim_uses_random_inpaint_noise():
    assert [n for n in SAMPLER_NAMES if get_sampler(n).inpaint_noise == "random"] == ["ddim"]


@pytest.mark.parametrize("case", RESULT_CASES, ids=_case_id)
def test_fixture_sigmas_are_ours(case):
    ours = sampler_sigmas(SAMPLING, case["scheduler"], case["steps"], sampler_name=case["sampler"])
    expected = torch.tensor(case["sigmas"], dtype=torch.float32)
    if case["sampler"].startswith("uni_pc"):
        # ComfyUI's UniPC writes its stand-in final sigma 0.001 into the caller's sigmas tensor, so the fixture
        # recorded 0.001 where the schedule holds 0. Ours leaves the input alone.
        assert case["sigmas"][-1] == pytest.approx(0.001)
        expected[-1] = 0.0
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("case", RESULT_CASES, ids=_case_id)
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


# ---- the _gpu names -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in SAMPLER_NAMES if n.endswith("_gpu")])
def test_gpu_variants_are_their_cpu_samplers(name):
    # ComfyUI builds their Brownian tree on the latent's device: on a CPU, the CPU sampler's tree (the fixture has
    # equal results for both). Chisel draws noise on the CPU everywhere, so they are the same on any device.
    cpu_name = name.removesuffix("_gpu")
    assert get_sampler(name).noise == get_sampler(cpu_name).noise == "brownian"
    sigmas = sampler_sigmas(SAMPLING, "karras", 6, sampler_name=name)
    x = initial_noise([1, 4, 4, 4], 2) * sigmas[0]
    assert torch.equal(run_sampler(name, analytic_denoiser, x, sigmas, seed=9),
                       run_sampler(cpu_name, analytic_denoiser, x, sigmas, seed=9))


# ---- CFG++ ---------------------------------------------------------------------------------------------------------
# A guided analytic denoiser: the positive prompt's data ~ N(MU_C, S2_C), the negative's ~ N(MU_U, S2_U), so both
# predictions are exact posterior means and D = uncond + (cond − uncond)·cfg.
MU_C, S2_C, MU_U, S2_U = 0.5, 0.09, 0.2, 0.16


def _posterior(x: torch.Tensor, sigma: torch.Tensor, mu, s2) -> torch.Tensor:
    s = sigma.reshape(-1, 1, 1, 1)
    return mu + s2 / (s2 + s**2) * (x - mu)


@dataclasses.dataclass
class CondUncondDenoiser:
    """Classifier-free guidance over the two analytic predictions, publishing the unconditional one as a guider
    does."""

    cfg: float

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cond, uncond = _posterior(x, sigma, MU_C, S2_C), _posterior(x, sigma, MU_U, S2_U)
        publish_uncond(uncond)
        return uncond + (cond - uncond) * self.cfg


def _predict(x, sigma, cfg):
    """(guided x0, unconditional x0) at one sigma, for the references."""
    cond, uncond = _posterior(x, sigma, MU_C, S2_C), _posterior(x, sigma, MU_U, S2_U)
    return uncond + (cond - uncond) * cfg, uncond


def _ancestral(sigma_from, sigma_to, eta):
    if not eta:
        return sigma_to, 0.0
    up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - up**2) ** 0.5, up


# ComfyUI 0.8.0's update rules (comfy/k_diffusion/sampling.py), written out for a VE model (lambda = −log sigma,
# alpha = sigma·e^lambda), uncond being the unconditional x0 of the latest model call.
def ref_euler_ancestral_cfg_pp(x, sigmas, cfg, noise, eta=1.0):
    for i in range(len(sigmas) - 1):
        denoised, uncond = _predict(x, sigmas[i], cfg)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        alpha_s = sigmas[i] * (-sigmas[i].log()).exp()
        alpha_t = sigmas[i + 1] * (-sigmas[i + 1].log()).exp()
        d = (x - alpha_s * uncond) / sigmas[i]
        sigma_down, sigma_up = _ancestral(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta)
        x = alpha_t * denoised + alpha_t * sigma_down * d
        if eta > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def ref_euler_cfg_pp(x, sigmas, cfg, noise):
    return ref_euler_ancestral_cfg_pp(x, sigmas, cfg, noise, eta=0.0)


def ref_dpmpp_2s_ancestral_cfg_pp(x, sigmas, cfg, noise):
    for i in range(len(sigmas) - 1):
        denoised, uncond = _predict(x, sigmas[i], cfg)
        sigma_down, sigma_up = _ancestral(sigmas[i], sigmas[i + 1], 1.0)
        if sigma_down == 0:
            x = denoised + (x - uncond) / sigmas[i] * sigma_down
        else:
            t, t_next = -sigmas[i].log(), -sigma_down.log()
            h = t_next - t
            s = t + 0.5 * h
            x_2 = ((-s).exp() / (-t).exp()) * (x + (denoised - uncond)) - (-h * 0.5).expm1() * denoised
            # The second stage reads the hook variable after the midpoint evaluation: its unconditional x0.
            denoised_2, uncond_2 = _predict(x_2, (-s).exp(), cfg)
            x = ((-t_next).exp() / (-t).exp()) * (x + (denoised - uncond_2)) - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def ref_dpmpp_2m_cfg_pp(x, sigmas, cfg, noise):
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised, uncond = _predict(x, sigmas[i], cfg)
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_uncond is None or sigmas[i + 1] == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (t - -sigmas[i - 1].log()) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


def ref_res_multistep_ancestral_cfg_pp(x, sigmas, cfg, noise, eta=1.0):
    old_uncond, old_sigma_down = None, None
    for i in range(len(sigmas) - 1):
        denoised, uncond = _predict(x, sigmas[i], cfg)
        sigma_down, sigma_up = _ancestral(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0 or old_uncond is None:
            x = denoised + (x - uncond) / sigmas[i] * sigma_down
        else:
            t, t_old = -sigmas[i].log(), -old_sigma_down.log()
            t_next, t_prev = -sigma_down.log(), -sigmas[i - 1].log()
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = torch.expm1(-h) / -h
            phi2 = (phi1 - 1.0) / -h
            b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
            x = x + (denoised - uncond)
            x = (-h).exp() * x + h * (b1 * uncond + b2 * old_uncond)
        if eta and sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
        old_uncond, old_sigma_down = uncond, sigma_down
    return x


def ref_res_multistep_cfg_pp(x, sigmas, cfg, noise):
    return ref_res_multistep_ancestral_cfg_pp(x, sigmas, cfg, noise, eta=0.0)


def ref_gradient_estimation_cfg_pp(x, sigmas, cfg, noise, ge_gamma=2.0):
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised, uncond = _predict(x, sigmas[i], cfg)
        d = (x - uncond) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1]
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


CFG_PP_REFERENCES = {
    "euler_cfg_pp": ref_euler_cfg_pp, "euler_ancestral_cfg_pp": ref_euler_ancestral_cfg_pp,
    "dpmpp_2s_ancestral_cfg_pp": ref_dpmpp_2s_ancestral_cfg_pp, "dpmpp_2m_cfg_pp": ref_dpmpp_2m_cfg_pp,
    "res_multistep_cfg_pp": ref_res_multistep_cfg_pp,
    "res_multistep_ancestral_cfg_pp": ref_res_multistep_ancestral_cfg_pp,
    "gradient_estimation_cfg_pp": ref_gradient_estimation_cfg_pp,
}


def test_the_cfg_pp_samplers_are_the_seven_comfyui_lists_and_the_fixture_records_its_errors():
    assert sorted(CFG_PP) == sorted(CFG_PP_REFERENCES)
    # Without a guider ComfyUI's hook variable stays None and six of them raise; dpmpp_2s_ancestral_cfg_pp starts
    # from 0 instead, and the fixture's results for it (checked above) are ours with uncond read as 0.
    assert {case["sampler"] for case in ERROR_CASES} == set(CFG_PP) - {"dpmpp_2s_ancestral_cfg_pp"}
    assert all("NoneType" in case["error"] for case in ERROR_CASES)


@pytest.mark.parametrize("cfg", [1.0, 2.5])
@pytest.mark.parametrize("scheduler, steps", [("karras", 8), ("normal", 3)])
@pytest.mark.parametrize("name", CFG_PP)
def test_cfg_pp_samplers_follow_comfyuis_update_rules(name, scheduler, steps, cfg):
    sigmas = sampler_sigmas(SAMPLING, scheduler, steps, sampler_name=name)
    x = initial_noise([2, 4, 4, 4], 7) * (1 + sigmas[0] ** 2) ** 0.5
    ours = run_sampler(name, CondUncondDenoiser(cfg), x, sigmas, seed=5)
    expected = CFG_PP_REFERENCES[name](x, sigmas, cfg, StepNoiseSampler(x, 5))
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(ours).all()


def _entry(slot: str, context: float) -> PreparedCond:
    return PreparedCond(slot=slot, area=None, mask=None, mask_strength=1.0, strength=1.0, sigma_start=1e9,
                        sigma_end=0.0, model_inputs={"context": torch.full((1, 1, 1), context)})


def _guided_denoiser(cfg: float, seen: list[str]) -> GuidedDenoiser:
    """guidance.GuidedDenoiser over the two analytic predictions (context 1: the positive entry, 0: the negative)."""

    def denoiser(x, sigma, context):
        positive = context.reshape(-1, 1, 1, 1) > 0.5
        seen.extend("cond" if p else "uncond" for p in positive.reshape(-1).tolist())
        return torch.where(positive, _posterior(x, sigma, MU_C, S2_C), _posterior(x, sigma, MU_U, S2_U))

    return GuidedDenoiser(denoiser=denoiser, entries=(_entry("cond", 1.0), _entry("uncond", 0.0)), cfg=cfg)


@pytest.mark.parametrize("cfg", [1.0, 3.0])
@pytest.mark.parametrize("name", CFG_PP)
def test_the_guided_denoiser_hands_cfg_pp_samplers_its_unconditional_prediction(name, cfg):
    sigmas = sampler_sigmas(SAMPLING, "karras", 5, sampler_name=name)
    x = initial_noise([1, 4, 4, 4], 3) * (1 + sigmas[0] ** 2) ** 0.5
    seen: list[str] = []
    ours = run_sampler(name, _guided_denoiser(cfg, seen), x, sigmas, seed=4)
    assert torch.equal(ours, run_sampler(name, CondUncondDenoiser(cfg), x, sigmas, seed=4))
    assert "uncond" in seen  # at cfg 1 too (ComfyUI's disable_cfg1_optimization)


def test_other_samplers_still_skip_the_negative_at_cfg_1_and_are_unchanged():
    sigmas = sampler_sigmas(SAMPLING, "karras", 5, sampler_name="euler")
    x = initial_noise([1, 4, 4, 4], 3) * (1 + sigmas[0] ** 2) ** 0.5
    seen: list[str] = []
    out = run_sampler("euler", _guided_denoiser(1.0, seen), x, sigmas, seed=4)
    assert set(seen) == {"cond"}
    assert torch.equal(out, run_sampler("euler", lambda x, s: _posterior(x, s, MU_C, S2_C), x, sigmas, seed=4))
    seen.clear()
    guided = run_sampler("euler", _guided_denoiser(3.0, seen), x, sigmas, seed=4)
    assert torch.equal(guided, run_sampler("euler", CondUncondDenoiser(3.0), x, sigmas, seed=4))


@pytest.mark.parametrize("name", CFG_PP)
def test_a_model_that_publishes_nothing_gives_an_unconditional_prediction_of_zeros(name):
    # ComfyUI's guider without a negative (BasicGuider) predicts 0 for it; a bare denoiser is read the same way.
    def publishing_zeros(x, sigma):
        denoised = analytic_denoiser(x, sigma)
        publish_uncond(torch.zeros_like(denoised))
        return denoised

    sigmas = sampler_sigmas(SAMPLING, "karras", 4, sampler_name=name)
    x = initial_noise([1, 4, 4, 4], 1) * sigmas[0]
    assert torch.equal(run_sampler(name, analytic_denoiser, x, sigmas, seed=2),
                       run_sampler(name, publishing_zeros, x, sigmas, seed=2))


def test_unconditional_predictions_are_only_collected_inside_a_capture():
    assert not uncond_wanted()
    publish_uncond(torch.ones(2))  # nobody listens: nothing happens
    with capture_uncond() as capture:
        assert uncond_wanted()
        assert torch.equal(capture.latest(torch.ones(2)), torch.zeros(2))
        publish_uncond(torch.full((2,), 3.0))
        with capture_uncond() as inner:
            publish_uncond(torch.full((2,), 4.0))
        assert torch.equal(inner.latest(torch.ones(2)), torch.full((2,), 4.0))
        assert torch.equal(capture.latest(torch.ones(2)), torch.full((2,), 3.0))
    assert not uncond_wanted()
