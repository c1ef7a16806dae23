"""The custom-sampling schedules and sigma tools give ComfyUI's numbers: checked against values its own node code
produced (tests/fixtures/comfyui_numerics/custom_sampling.json) and against KSampler's sigmas (sigmas.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusion import schedules, sigma_schedules, sigma_tools
from diffusion.model_sampling import DiscreteSampling
from diffusion.schedule_tables import ALIGN_YOUR_STEPS, GITS, OPTIMAL_STEPS
from diffusion.schedules import ScheduleError, UnknownSchedulerError

NUMERICS = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui_numerics"
REFERENCE = json.loads((NUMERICS / "custom_sampling.json").read_text())
KSAMPLER_SIGMAS = json.loads((NUMERICS / "sigmas.json").read_text())
CASES = REFERENCE["cases"]
SIGMAS_IN = torch.tensor(REFERENCE["sigmas_input_for_sigma_tools"])
SAMPLING = DiscreteSampling.linear()


def _close(actual: torch.Tensor, expected: list[float]) -> None:
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), rtol=1e-6, atol=1e-7)


def _cases(kind: str) -> list[tuple]:
    return [pytest.param(c["params"], c["sigmas"], id=str(c["params"])) for c in CASES[kind]]


@pytest.mark.parametrize("params, expected", _cases("KarrasScheduler"))
def test_karras_node_parameters_give_comfyuis_sigmas(params, expected):
    steps, sigma_max, sigma_min, rho = params
    _close(schedules.karras(steps, sigma_min, sigma_max, rho=rho), expected)


@pytest.mark.parametrize("params, expected", _cases("ExponentialScheduler"))
def test_exponential(params, expected):
    steps, sigma_max, sigma_min = params
    _close(schedules.exponential(steps, sigma_min, sigma_max), expected)


@pytest.mark.parametrize("params, expected", _cases("PolyexponentialScheduler"))
def test_polyexponential(params, expected):
    steps, sigma_max, sigma_min, rho = params
    _close(sigma_schedules.polyexponential(steps, sigma_min, sigma_max, rho=rho), expected)


def test_polyexponential_with_rho_one_is_the_exponential_schedule():
    torch.testing.assert_close(sigma_schedules.polyexponential(12, 0.03, 14.6),
                               schedules.exponential(12, 0.03, 14.6), rtol=1e-6, atol=0)


@pytest.mark.parametrize("params, expected", _cases("VPScheduler"))
def test_vp(params, expected):
    steps, beta_d, beta_min, eps_s = params
    _close(sigma_schedules.vp(steps, beta_d=beta_d, beta_min=beta_min, eps_s=eps_s), expected)


@pytest.mark.parametrize("params, expected", _cases("LaplaceScheduler"))
def test_laplace_ends_at_sigma_min_without_a_zero(params, expected):
    steps, sigma_max, sigma_min, mu, beta = params
    sigmas = sigma_schedules.laplace(steps, sigma_min, sigma_max, mu=mu, beta=beta)
    _close(sigmas, expected)
    assert len(sigmas) == steps and float(sigmas[-1]) > 0


@pytest.mark.parametrize("params, expected", _cases("AlignYourStepsScheduler"))
def test_align_your_steps(params, expected):
    _close(sigma_schedules.align_your_steps(*params), expected)


@pytest.mark.parametrize("params, expected", _cases("GITSScheduler"))
def test_gits(params, expected):
    _close(sigma_schedules.gits(*params), expected)


@pytest.mark.parametrize("params, expected", _cases("OptimalStepsScheduler"))
def test_optimal_steps(params, expected):
    _close(sigma_schedules.optimal_steps(*params), expected)


def test_the_tables_have_their_published_shapes():
    assert set(ALIGN_YOUR_STEPS) == {"SD1", "SDXL", "SVD"} and all(len(t) == 11 for t in ALIGN_YOUR_STEPS.values())
    assert [len(t) for t in OPTIMAL_STEPS.values()] == [11, 21, 41]
    assert sorted(GITS) == [round(0.8 + 0.05 * i, 2) for i in range(15)]
    for rows in GITS.values():
        assert [len(r) for r in rows] == list(range(3, 22))  # 2..20 steps
        assert all(list(r) == sorted(r, reverse=True) for r in rows)


def test_table_schedulers_refuse_what_comfyui_cannot_look_up():
    with pytest.raises(ScheduleError, match="coeff"):
        sigma_schedules.gits(0.83, 10)
    with pytest.raises(ScheduleError, match="model type"):
        sigma_schedules.align_your_steps("SD3", 10)
    with pytest.raises(ScheduleError, match="model type"):
        sigma_schedules.optimal_steps("SD1", 10)
    with pytest.raises(ScheduleError, match="steps"):
        sigma_schedules.gits(1.2, 1)


def _ksampler_cases():
    for case in KSAMPLER_SIGMAS["cases"]:
        if case["sampler"] == "euler":  # BasicScheduler has no discard-penultimate rule
            yield pytest.param(case, id=f"{case['scheduler']}-{case['steps']}-{case['denoise']}")


@pytest.mark.parametrize("case", list(_ksampler_cases()))
def test_basic_scheduler_gives_comfyuis_ksampler_sigmas(case):
    if case["scheduler"] == "kl_optimal" and case["steps"] == 1:
        pytest.skip("ComfyUI's kl_optimal divides by steps - 1 (NaN); schedules.kl_optimal gives [sigma_max, 0]")
    sigmas = sigma_schedules.basic(SAMPLING, case["scheduler"], case["steps"], case["denoise"])
    # BasicScheduler keeps the last steps + 1 sigmas even where KSampler runs more (ddim_uniform's stride).
    expected = torch.tensor(case["sigmas"])[-(case["steps"] + 1):]
    torch.testing.assert_close(sigmas, expected, rtol=1e-5, atol=1e-6)


def test_basic_scheduler_partial_denoise_and_its_edges():
    full = sigma_schedules.basic(SAMPLING, "karras", 20)
    half = sigma_schedules.basic(SAMPLING, "karras", 10, 0.5)
    torch.testing.assert_close(half, full[-11:])
    assert len(sigma_schedules.basic(SAMPLING, "normal", 10, 0.0)) == 0
    # Unlike KSampler, any denoise below 1 takes the int(steps / denoise) path (ComfyUI's BasicScheduler).
    assert len(sigma_schedules.basic(SAMPLING, "normal", 3, 0.25)) == 4
    with pytest.raises(UnknownSchedulerError):
        sigma_schedules.basic(SAMPLING, "nope", 10)


def test_sd_turbo_takes_timesteps_999_899_and_on():
    sigmas = sigma_schedules.sd_turbo(SAMPLING, 4)
    expected = [float(SAMPLING.sigmas[t]) for t in (999, 899, 799, 699)] + [0.0]
    torch.testing.assert_close(sigmas, torch.tensor(expected), rtol=1e-6, atol=0)
    assert float(sigmas[0]) == pytest.approx(KSAMPLER_SIGMAS["model_sampling"]["sigma_max"], rel=1e-6)
    # denoise 0.5 starts five timesteps in; more steps than remain are cut; denoise 0 leaves only the final 0.
    assert torch.equal(sigma_schedules.sd_turbo(SAMPLING, 2, 0.5)[:2], SAMPLING.sigmas[[499, 399]])
    assert len(sigma_schedules.sd_turbo(SAMPLING, 10, 0.3)) == 4
    assert sigma_schedules.sd_turbo(SAMPLING, 3, 0.0).tolist() == [0.0]


# ---- sigma tools -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES["SplitSigmas"], ids=lambda c: str(c["params"]))
def test_split(case):
    high, low = sigma_tools.split(SIGMAS_IN, *case["params"])
    assert high.tolist() == case["high"] and low.tolist() == case["low"]


@pytest.mark.parametrize("case", CASES["SplitSigmasDenoise"], ids=lambda c: str(c["params"]))
def test_split_denoise(case):
    high, low = sigma_tools.split_denoise(SIGMAS_IN, *case["params"])
    assert high.tolist() == case["high"] and low.tolist() == case["low"]


def test_flip():
    assert sigma_tools.flip(SIGMAS_IN).tolist() == CASES["FlipSigmas"][0]["sigmas"]
    assert sigma_tools.flip(SIGMAS_IN[:-1]).tolist() == CASES["FlipSigmas"][1]["sigmas"]
    assert len(sigma_tools.flip(torch.zeros(0))) == 0


@pytest.mark.parametrize("case", CASES["ExtendIntermediateSigmas"], ids=lambda c: str(c["params"]))
def test_extend_intermediate(case):
    steps, start, end, spacing = case["params"]
    out = sigma_tools.extend_intermediate(SIGMAS_IN, steps, start_at_sigma=start, end_at_sigma=end, spacing=spacing)
    assert out.tolist() == case["sigmas"]


@pytest.mark.parametrize("case", CASES["ManualSigmas"], ids=lambda c: repr(c["params"][0]))
def test_manual(case):
    assert sigma_tools.parse_manual(case["params"][0]).tolist() == case["sigmas"]


def test_sigma_tools_never_change_their_input():
    before = SIGMAS_IN.clone()
    high, _ = sigma_tools.split(SIGMAS_IN, 2)
    high[0] = 99.0
    sigma_tools.set_first(SIGMAS_IN, 5.0)
    sigma_tools.flip(SIGMAS_IN)
    assert torch.equal(SIGMAS_IN, before)
    assert sigma_tools.set_first(SIGMAS_IN, 136.0).tolist() == [136.0] + before.tolist()[1:]


def test_sigma_tool_errors():
    with pytest.raises(IndexError):
        sigma_tools.set_first(torch.zeros(0), 1.0)
    with pytest.raises(sigma_tools.SigmasError, match="spacing"):
        sigma_tools.extend_intermediate(SIGMAS_IN, 2, start_at_sigma=-1, end_at_sigma=0, spacing="cubic")
    with pytest.raises(sigma_tools.SigmasError, match="1-D"):
        sigma_tools.split(torch.zeros(2, 2), 1)


def test_percent_to_sigma_interval_value_and_actual_sigma():
    assert sigma_tools.percent_to_sigma(SAMPLING, 0.0) == 999999999.9
    assert sigma_tools.percent_to_sigma(SAMPLING, 1.0) == 0.0
    assert sigma_tools.percent_to_sigma(SAMPLING, 0.0, actual=True) == SAMPLING.sigma_max
    assert sigma_tools.percent_to_sigma(SAMPLING, 1.0, actual=True) == SAMPLING.sigma_min
    middle = sigma_tools.percent_to_sigma(SAMPLING, 0.5, actual=True)
    assert middle == sigma_tools.percent_to_sigma(SAMPLING, 0.5) == pytest.approx(float(SAMPLING.sigma(499.5)))
