"""SEEDS (Gonzalez et al. 2023, "SEEDS: Exponential SDE Solvers for Fast High-Quality Sampling from Diffusion
Models"): stochastic explicit exponential derivative-free solvers on the data prediction in lambda = log(alpha /
sigma), with two (SEEDS-2) or three (SEEDS-3) stages per step. eta scales the SDE part (0: the ODE solver); the
noise of the stages of one step is correlated the way the exact Brownian increments are.

exp_heun_2_x0 and exp_heun_2_x0_sde are SEEDS-2 with r = 1 and the phi_2 update: the exponential Heun method in
data prediction, deterministic or stochastic.

On a rectified-flow model (``model.model_sampling`` a flow table, ComfyUI's CONST) lambda = log((1 − σ)/σ) and
alpha = 1 − σ, and a schedule starting at σ 1 starts just below it, as in ComfyUI (common.offset_first_sigma).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from diffusion.noise import NoiseSampler
from diffusion.samplers.common import (
    DenoiserFn,
    StepCallback,
    call_model,
    half_log_snr,
    model_sampling_of,
    offset_first_sigma,
    report,
    sigma_of_half_log_snr,
    step_noise,
)

SolverType = Literal["phi_1", "phi_2"]


def h_phi_1(h: Tensor) -> Tensor:
    """h·phi_1(h) = e^h − 1."""
    return torch.expm1(h)


def h_phi_2(h: Tensor) -> Tensor:
    """h·phi_2(h) = (e^h − 1 − h) / h."""
    return (torch.expm1(h) - h) / h


def _stage_noise(noise: Tensor, factor: Tensor) -> tuple[Tensor, Tensor]:
    """A stage's noise carried over a further segment (scaled by e^factor) and the weight of the fresh noise to add."""
    return noise * factor.exp(), factor.mul(2).expm1().neg().sqrt()


@torch.no_grad()
def sample_seeds_2(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r: float = 0.5,
    solver_type: SolverType = "phi_1",
) -> Tensor:
    """SEEDS-2: an exponential step to lambda_s + r·h, then the full step from both x0 evaluations."""
    if solver_type not in ("phi_1", "phi_2"):
        raise ValueError(f"solver_type must be 'phi_1' or 'phi_2', got {solver_type!r}")
    inject = eta > 0 and s_noise > 0
    noise_sampler = step_noise(x, noise_sampler, seed) if inject else None
    sampling = model_sampling_of(model)
    sigmas = offset_first_sigma(sigmas, sampling)
    fac = 1 / (2 * r)
    steps = len(sigmas) - 1
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i], sampling), half_log_snr(sigmas[i + 1], sampling)
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = sigma_of_half_log_snr(lambda_s_1, sampling)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s_1 * h_phi_1(-r * h_eta) * denoised
        if noise_sampler is not None:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise_sampler(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = call_model(model, x_2, sigma_s_1, extra_args)

        if solver_type == "phi_1":
            denoised_d = torch.lerp(denoised, denoised_2, fac)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * h_phi_1(-h_eta) * denoised_d
        else:
            b2 = h_phi_2(-h_eta) / r
            b1 = h_phi_1(-h_eta) - b2
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b2 * denoised_2)
        if noise_sampler is not None:
            carried, fresh = _stage_noise(sde_noise, (r - 1) * h * eta)
            sde_noise = carried + fresh * noise_sampler(sigma_s_1, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


@torch.no_grad()
def sample_seeds_3(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    r_1: float = 1.0 / 3,
    r_2: float = 2.0 / 3,
) -> Tensor:
    """SEEDS-3: stages at lambda_s + r_1·h and lambda_s + r_2·h, then the full step."""
    inject = eta > 0 and s_noise > 0
    noise_sampler = step_noise(x, noise_sampler, seed) if inject else None
    sampling = model_sampling_of(model)
    sigmas = offset_first_sigma(sigmas, sampling)
    steps = len(sigmas) - 1
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i], sampling), half_log_snr(sigmas[i + 1], sampling)
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r_1)
        lambda_s_2 = torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s_1 = sigma_of_half_log_snr(lambda_s_1, sampling)
        sigma_s_2 = sigma_of_half_log_snr(lambda_s_2, sampling)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_s_2 = sigma_s_2 * lambda_s_2.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        x_2 = sigma_s_1 / sigmas[i] * (-r_1 * h * eta).exp() * x - alpha_s_1 * h_phi_1(-r_1 * h_eta) * denoised
        if noise_sampler is not None:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise_sampler(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = call_model(model, x_2, sigma_s_1, extra_args)

        a3_2 = r_2 / r_1 * h_phi_2(-r_2 * h_eta)
        a3_1 = h_phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - alpha_s_2 * (a3_1 * denoised + a3_2 * denoised_2)
        if noise_sampler is not None:
            carried, fresh = _stage_noise(sde_noise, (r_1 - r_2) * h * eta)
            sde_noise = carried + fresh * noise_sampler(sigma_s_1, sigma_s_2)
            x_3 = x_3 + sde_noise * sigma_s_2 * s_noise
        denoised_3 = call_model(model, x_3, sigma_s_2, extra_args)

        b3 = h_phi_2(-h_eta) / r_2
        b1 = h_phi_1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        if noise_sampler is not None:
            carried, fresh = _stage_noise(sde_noise, (r_2 - 1) * h * eta)
            sde_noise = carried + fresh * noise_sampler(sigma_s_2, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


@torch.no_grad()
def sample_exp_heun_2_x0(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    solver_type: SolverType = "phi_2",
) -> Tensor:
    """The deterministic exponential Heun method in data prediction and log-SNR time (SEEDS-2, r 1, eta 0)."""
    return sample_seeds_2(model, x, sigmas, extra_args=extra_args, callback=callback, eta=0.0, s_noise=0.0, r=1.0,
                          solver_type=solver_type)


@torch.no_grad()
def sample_exp_heun_2_x0_sde(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    solver_type: SolverType = "phi_2",
) -> Tensor:
    """The stochastic exponential Heun method in data prediction and log-SNR time (SEEDS-2 with r 1)."""
    return sample_seeds_2(model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=noise_sampler,
                          seed=seed, eta=eta, s_noise=s_noise, r=1.0, solver_type=solver_type)
