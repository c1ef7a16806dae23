"""The discrete noise table and the eps / v wrapper (ComfyUI ModelSamplingDiscrete semantics)."""

import math

import pytest
import torch

from diffusion.model_sampling import (
    SIGMA_BEFORE_START,
    Denoiser,
    DiscreteSampling,
    ModelSamplingError,
)

EPS = DiscreteSampling.linear()
V = DiscreteSampling.linear(prediction="v")


def test_table_is_increasing_float32_with_sd_ends():
    assert EPS.sigmas.dtype == EPS.log_sigmas.dtype == torch.float32
    assert len(EPS.sigmas) == 1000
    assert torch.all(EPS.sigmas[1:] > EPS.sigmas[:-1])
    # SD's well-known ends (ComfyUI reference §6.3: ~0.0292 and ~14.6146).
    assert EPS.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert EPS.sigma_max == pytest.approx(14.6146, abs=1e-4)


def test_timestep_of_a_table_sigma_is_its_index():
    idx = torch.tensor([0, 1, 500, 998, 999])
    assert EPS.timestep(EPS.sigmas[idx]).tolist() == idx.float().tolist()


def test_timestep_picks_the_nearest_entry_in_log_space_and_keeps_shape():
    between = (EPS.log_sigmas[10] * 0.7 + EPS.log_sigmas[11] * 0.3).exp()
    t = EPS.timestep(between.reshape(1))
    assert t.shape == (1,) and t.dtype == torch.float32 and t.item() == 10.0
    assert EPS.timestep(float(between)).shape == ()


def test_sigma_interpolates_log_sigma_between_entries():
    s = EPS.sigma(torch.tensor([10.25]))
    expected = (0.75 * EPS.log_sigmas[10] + 0.25 * EPS.log_sigmas[11]).exp()
    torch.testing.assert_close(s, expected.reshape(1))
    # Out-of-range timesteps clamp to the table.
    assert EPS.sigma(torch.tensor(-5.0)).item() == pytest.approx(EPS.sigma_min, rel=1e-6)
    assert EPS.sigma(torch.tensor(5000.0)).item() == pytest.approx(EPS.sigma_max, rel=1e-6)


def test_percent_to_sigma_ends_and_middle():
    assert EPS.percent_to_sigma(0.0) == SIGMA_BEFORE_START
    assert EPS.percent_to_sigma(1.0) == 0.0
    assert EPS.percent_to_sigma(0.5) == pytest.approx(float(EPS.sigma(torch.tensor(499.5))), rel=1e-6)
    assert EPS.percent_to_sigma(0.2) > EPS.percent_to_sigma(0.8)


def test_reaches_max_tolerates_float32_rounding():
    assert EPS.reaches_max(EPS.sigma_max * (1 - 5e-7))
    assert EPS.reaches_max(EPS.sigma_max * 2)
    assert not EPS.reaches_max(EPS.sigma_max * 0.99)


def test_eps_denoised_removes_scaled_noise():
    x, out, sigma = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.tensor([0.5, 3.0])
    expected = x - out * sigma.reshape(2, 1, 1, 1)
    torch.testing.assert_close(EPS.denoised(sigma, out, x), expected)


def test_v_prediction_recovers_x0_from_the_true_v():
    # VP sample z = alpha·x0 + s·eps with alpha = 1/sqrt(1+σ²), s = σ/sqrt(1+σ²); v = alpha·eps − s·x0.
    # The VE latent is z / alpha = x0 + σ·eps; the wrapper must map (σ, v, x) back to x0 exactly.
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 2, generator=gen), torch.randn(3, 4, 2, 2, generator=gen)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    s4 = sigma.reshape(3, 1, 1, 1)
    alpha, s = 1 / (1 + s4**2) ** 0.5, s4 / (1 + s4**2) ** 0.5
    v = alpha * eps - s * x0
    torch.testing.assert_close(V.denoised(sigma, v, x0 + s4 * eps), x0, rtol=1e-5, atol=1e-5)


def test_calculate_input_has_unit_variance_for_pure_noise_at_sigma():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 64, 64, generator=gen) * (1 + 14.0**2) ** 0.5
    assert EPS.calculate_input(torch.tensor([14.0]), x).std().item() == pytest.approx(1.0, abs=0.02)


def test_noise_scaling_plain_and_max_denoise():
    noise, latent = torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.25)
    assert EPS.noise_scaling(torch.tensor(2.0), noise, latent, max_denoise=False).flatten().tolist() == [2.25] * 4
    scaled = EPS.noise_scaling(torch.tensor(2.0), noise, latent, max_denoise=True)
    torch.testing.assert_close(scaled, torch.full((1, 1, 2, 2), math.sqrt(5.0) + 0.25))
    assert EPS.inverse_noise_scaling(torch.tensor(0.0), latent) is latent


def test_noise_scaling_does_not_mutate_inputs():
    noise, latent = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    EPS.noise_scaling(torch.tensor(3.0), noise, latent, max_denoise=True)
    assert noise.eq(1).all() and latent.eq(0).all()


def test_denoiser_feeds_scaled_input_and_discrete_timestep_and_applies_eps():
    seen = {}

    def apply_model(x_in, t, *, context):
        seen.update(x_in=x_in, t=t, context=context)
        return torch.full_like(x_in, 0.5)

    denoiser = Denoiser(apply_model=apply_model, sampling=EPS)
    x = torch.ones(2, 4, 2, 2)
    sigma = EPS.sigmas[[999, 500]]
    out = denoiser(x, sigma, context="ctx")
    assert seen["context"] == "ctx"
    assert seen["t"].tolist() == [999.0, 500.0]
    torch.testing.assert_close(seen["x_in"], x / (sigma.reshape(2, 1, 1, 1) ** 2 + 1) ** 0.5)
    torch.testing.assert_close(out, x - 0.5 * sigma.reshape(2, 1, 1, 1))


def test_unknown_prediction_type_is_rejected():
    with pytest.raises(ModelSamplingError, match="'edm'"):
        DiscreteSampling.linear(prediction="edm")  # type: ignore[arg-type]
