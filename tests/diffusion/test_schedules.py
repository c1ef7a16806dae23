"""Schedules against ComfyUI's own sigmas (tests/fixtures/comfyui_numerics/sigmas.json: ComfyUI 0.8.0's
KSampler(...).sigmas on CPU float32 for every scheduler, steps 1-30, the dpm_2 discard rule and denoise < 1)."""

import json
import math
from pathlib import Path

import pytest
import torch

from diffusion.model_sampling import DiscreteSampling
from diffusion.schedules import (
    SCHEDULER_NAMES,
    ScheduleError,
    UnknownSchedulerError,
    advanced_sigmas,
    sampler_sigmas,
    scheduler_sigmas,
)

FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures" / "comfyui_numerics" / "sigmas.json").read_text())
SAMPLING = DiscreteSampling.linear()


def _case_id(case: dict) -> str:
    return f"{case['scheduler']}-{case['steps']}-{case['sampler']}-d{case['denoise']}"


def test_scheduler_names_are_comfyuis_current_order():
    assert SCHEDULER_NAMES == (
        "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
        "kl_optimal",
    )


def test_every_fixture_scheduler_is_known():
    assert {c["scheduler"] for c in FIXTURE["cases"]} == set(SCHEDULER_NAMES)


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=_case_id)
def test_sampler_sigmas_match_comfyui(case):
    ours = sampler_sigmas(
        SAMPLING, case["scheduler"], case["steps"], denoise=case["denoise"], sampler_name=case["sampler"]
    )
    expected = torch.tensor(case["sigmas"], dtype=torch.float32)
    assert ours.dtype == torch.float32
    if case["scheduler"] == "kl_optimal" and case["steps"] == 1:
        # ComfyUI divides by steps - 1 here and returns [nan, 0]; we return the one sensible step instead.
        assert math.isnan(case["sigmas"][0])
        assert ours.tolist() == pytest.approx([SAMPLING.sigma_max, 0.0], rel=1e-6)
        return
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=0)


def test_table_matches_comfyui_ends():
    ms = FIXTURE["model_sampling"]
    assert SAMPLING.sigma_min == pytest.approx(ms["sigma_min"], rel=1e-7)
    assert SAMPLING.sigma_max == pytest.approx(ms["sigma_max"], rel=1e-7)
    torch.testing.assert_close(SAMPLING.sigmas[:5], torch.tensor(ms["sigmas_first5"]), rtol=1e-7, atol=0)
    torch.testing.assert_close(SAMPLING.sigmas[-5:], torch.tensor(ms["sigmas_last5"]), rtol=1e-7, atol=0)


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [2, 7, 25])
def test_schedules_decrease_and_end_in_zero(scheduler, steps):
    sigmas = scheduler_sigmas(SAMPLING, scheduler, steps)
    assert sigmas[-1] == 0
    assert torch.all(sigmas[1:] < sigmas[:-1])
    assert float(sigmas[0]) <= SAMPLING.sigma_max * (1 + 1e-5)


def test_unknown_scheduler_raises_instead_of_falling_back():
    with pytest.raises(UnknownSchedulerError, match="'karass'"):
        sampler_sigmas(SAMPLING, "karass", 10, sampler_name="euler")


def test_zero_steps_is_an_error():
    with pytest.raises(ScheduleError):
        sampler_sigmas(SAMPLING, "karras", 0, sampler_name="euler")


def test_denoise_zero_gives_an_empty_schedule():
    assert sampler_sigmas(SAMPLING, "normal", 10, denoise=0.0, sampler_name="euler").numel() == 0


def test_discard_penultimate_keeps_step_count():
    full = sampler_sigmas(SAMPLING, "karras", 10, sampler_name="euler")
    dpm2 = sampler_sigmas(SAMPLING, "karras", 10, sampler_name="dpm_2")
    assert len(full) == len(dpm2) == 11
    eleven = scheduler_sigmas(SAMPLING, "karras", 11)
    torch.testing.assert_close(dpm2, torch.cat([eleven[:-2], eleven[-1:]]))


def test_advanced_end_at_step_with_leftover_noise_stops_at_that_sigma():
    full = sampler_sigmas(SAMPLING, "normal", 20, sampler_name="euler")
    cut = advanced_sigmas(SAMPLING, "normal", 20, sampler_name="euler", end_at_step=12, force_full_denoise=False)
    torch.testing.assert_close(cut, full[:13])
    assert cut[-1] > 0


def test_advanced_force_full_denoise_ends_at_zero_without_touching_other_sigmas():
    full = sampler_sigmas(SAMPLING, "normal", 20, sampler_name="euler")
    cut = advanced_sigmas(SAMPLING, "normal", 20, sampler_name="euler", end_at_step=12, force_full_denoise=True)
    assert len(cut) == 13 and cut[-1] == 0
    torch.testing.assert_close(cut[:-1], full[:12])


def test_advanced_start_at_step_skips_the_first_sigmas():
    full = sampler_sigmas(SAMPLING, "karras", 20, sampler_name="euler")
    tail = advanced_sigmas(SAMPLING, "karras", 20, sampler_name="euler", start_at_step=5, force_full_denoise=True)
    torch.testing.assert_close(tail, full[5:])


def test_advanced_two_halves_cover_the_full_schedule():
    full = sampler_sigmas(SAMPLING, "karras", 20, sampler_name="euler")
    first = advanced_sigmas(SAMPLING, "karras", 20, sampler_name="euler", end_at_step=8, force_full_denoise=False)
    second = advanced_sigmas(SAMPLING, "karras", 20, sampler_name="euler", start_at_step=8, force_full_denoise=True)
    torch.testing.assert_close(torch.cat([first, second[1:]]), full)


def test_advanced_start_past_the_end_leaves_nothing_to_sample():
    sigmas = advanced_sigmas(SAMPLING, "karras", 10, sampler_name="euler", start_at_step=10, force_full_denoise=True)
    assert sigmas.numel() == 0
