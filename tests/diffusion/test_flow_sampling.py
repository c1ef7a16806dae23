"""Flow model sampling against ComfyUI 0.8.0's own numbers (tests/fixtures/comfyui_numerics_flow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusion.flow_sampling import AURAFLOW_MULTIPLIER, FluxSampling, ShiftedFlowSampling, flux_shift_for
from diffusion.schedules import scheduler_sigmas

FIXTURES = Path(__file__).parents[1] / "fixtures" / "comfyui_numerics_flow"


def _load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _sampling(params: dict) -> ShiftedFlowSampling | FluxSampling:
    if "multiplier" in params:
        return ShiftedFlowSampling(shift=params["shift"], multiplier=params["multiplier"])
    return FluxSampling(shift=params["shift"])


SIGMAS = _load("flow_sigmas.json")["model_samplings"]
CONVERSIONS = _load("flow_timestep_conversion.json")["model_samplings"]


@pytest.mark.parametrize("case", SIGMAS, ids=[m["name"] for m in SIGMAS])
def test_table_and_every_scheduler_equal_comfyui(case: dict) -> None:
    sampling = _sampling(case["params"])
    assert len(sampling.sigmas) == case["table_len"]
    assert sampling.sigma_min == pytest.approx(case["sigma_min"], rel=1e-6)
    assert sampling.sigma_max == pytest.approx(case["sigma_max"], rel=1e-6)
    torch.testing.assert_close(sampling.sigmas[:5], torch.tensor(case["table_first5"]), rtol=1e-6, atol=0)
    torch.testing.assert_close(sampling.sigmas[-5:], torch.tensor(case["table_last5"]), rtol=1e-6, atol=0)
    for run in case["cases"]:
        got = scheduler_sigmas(sampling, run["scheduler"], run["steps"])
        expected = run["sigmas"]
        if None in expected:
            # kl_optimal at 1 step: ComfyUI divides by steps - 1 and gives NaN; Chisel's schedules.kl_optimal
            # deviates on purpose (as for the discrete models) and starts at sigma_max.
            assert got.tolist() == [sampling.sigma_max, 0.0], run
            continue
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32), rtol=2e-6, atol=1e-7,
                                   msg=f"{case['name']} {run['scheduler']} {run['steps']}")


@pytest.mark.parametrize("case", CONVERSIONS, ids=[m["name"] for m in CONVERSIONS])
def test_timestep_sigma_and_percent_conversions(case: dict) -> None:
    sampling = _sampling(case["params"])
    t = case["timestep_of_sigma"]
    torch.testing.assert_close(sampling.timestep(torch.tensor(t["sigma"])), torch.tensor(t["timestep"]),
                               rtol=1e-6, atol=0)
    s = case["sigma_of_timestep"]
    torch.testing.assert_close(sampling.sigma(torch.tensor(s["timestep"])), torch.tensor(s["sigma"]),
                               rtol=1e-6, atol=0)
    p = case["percent_to_sigma"]
    for percent, sigma in zip(p["percent"], p["sigma"]):
        assert sampling.percent_to_sigma(percent) == pytest.approx(sigma, rel=1e-12, abs=1e-15)


def test_const_scaling_equals_comfyui() -> None:
    data = _load("flow_const_scaling.json")
    shape = data["inputs"]["shape"]
    x0 = torch.tensor(data["inputs"]["x0"]).reshape(shape)
    noise = torch.tensor(data["inputs"]["noise_values"]).reshape(shape)
    output = torch.tensor(data["inputs"]["model_output_values"]).reshape(shape)
    sampling = ShiftedFlowSampling(shift=3.0)
    for case in data["cases"]:
        sigma = torch.tensor(case["sigma"])
        scaled = sampling.noise_scaling(sigma, noise, x0, max_denoise=False)
        torch.testing.assert_close(scaled.flatten(), torch.tensor(case["noise_scaling"]), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(sampling.noise_scaling(sigma, noise, x0, max_denoise=True).flatten(),
                                   torch.tensor(case["noise_scaling_max_denoise"]), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(sampling.calculate_input(sigma, scaled).flatten(),
                                   torch.tensor(case["calculate_input"]), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(sampling.denoised(sigma, output, scaled).flatten(),
                                   torch.tensor(case["calculate_denoised"]), rtol=1e-6, atol=1e-6)
        if isinstance(case["inverse_noise_scaling"], list):
            torch.testing.assert_close(sampling.inverse_noise_scaling(sigma, scaled).flatten(),
                                       torch.tensor(case["inverse_noise_scaling"]), rtol=1e-6, atol=1e-7)


def test_flux_node_shift_and_auraflow_multiplier() -> None:
    assert flux_shift_for(1024, 1024) == pytest.approx(1.15, abs=1e-12)
    assert flux_shift_for(512, 512) == pytest.approx(0.63, abs=1e-12)
    assert AURAFLOW_MULTIPLIER == 1.0
    # A per-sample sigma vector broadcasts over the batch.
    sampling = FluxSampling()
    x = torch.ones(2, 1, 2, 2)
    out = sampling.denoised(torch.tensor([0.5, 1.0]), torch.ones_like(x), x)
    assert out[0].unique().tolist() == [0.5] and out[1].unique().tolist() == [0.0]
