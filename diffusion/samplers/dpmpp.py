"""DPM-Solver++ family: exponential-integrator solvers in t = −log sigma on the data (x0) prediction.

Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models". The SDE
variants read their noise from one Brownian path (``noise_sampler`` or a seeded Brownian tree) and are written in
the half log-SNR lambda = log(alpha / sigma) = −log sigma with alpha = sigma·e^lambda: 1 for these models, but kept
in the formulas as ComfyUI evaluates them, so the float32 results are its own bit for bit. On a rectified-flow model
(``model.model_sampling`` a flow table, ComfyUI's CONST) lambda = log((1 − σ)/σ) and alpha = 1 − σ, and a schedule
starting at σ 1 starts just below it (common.offset_first_sigma), as ComfyUI 0.8.0's SDE samplers do.
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
    ancestral_step,
    brownian_noise,
    call_model,
    exp_neg,
    half_log_snr,
    model_sampling_of,
    neg_log,
    offset_first_sigma,
    report,
    sigma_of_half_log_snr,
)


@torch.no_grad()
def sample_dpmpp_2m(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2): second-order multistep from the previous D."""
    steps = len(sigmas) - 1
    old_denoised: Tensor | None = None
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        t, t_next = neg_log(sigmas[i]), neg_log(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            denoised_d = denoised  # first step, or the final jump to sigma 0: first order
        else:
            r = (t - neg_log(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (exp_neg(t_next) / exp_neg(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_sde(
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
) -> Tensor:
    """DPM-Solver++ stochastic two-stage step (Lu et al. 2022b's SDE-DPM-Solver++ with k-diffusion's midpoint r)."""
    if len(sigmas) <= 1:
        return x
    noise_sampler = brownian_noise(x, sigmas, noise_sampler, seed)
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
        lambda_s_1 = lambda_s + r * h
        fac = 1 / (2 * r)
        sigma_s_1 = sigma_of_half_log_snr(lambda_s_1, sampling)
        alpha_s = sigmas[i] * lambda_s.exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        # Stage 1: ancestral step to the intermediate time lambda_s_1.
        sd, su = ancestral_step(exp_neg(lambda_s), exp_neg(lambda_s_1), eta)
        h_ = neg_log(sd) - lambda_s
        x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s_1 * noise_sampler(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = call_model(model, x_2, sigma_s_1, extra_args)

        # Stage 2: full ancestral step with D extrapolated from the two evaluations.
        sd, su = ancestral_step(exp_neg(lambda_s), exp_neg(lambda_t), eta)
        h_ = neg_log(sd) - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
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
    solver_type: Literal["midpoint", "heun"] = "midpoint",
) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022b, the second-order multistep solver of the diffusion SDE)."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    if len(sigmas) <= 1:
        return x
    noise_sampler = brownian_noise(x, sigmas, noise_sampler, seed)
    sampling = model_sampling_of(model)
    sigmas = offset_first_sigma(sigmas, sampling)
    steps = len(sigmas) - 1
    old_denoised: Tensor | None = None
    h_last: Tensor | None = None
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised  # the final step: the solution at sigma 0 is D itself
        else:
            lambda_s, lambda_t = half_log_snr(sigmas[i], sampling), half_log_snr(sigmas[i + 1], sampling)
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() \
                    * s_noise
            h_last = h
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
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
) -> Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep version of the 2M SDE solver (Lu et al. 2022b, eq. for k = 3)."""
    if len(sigmas) <= 1:
        return x
    noise_sampler = brownian_noise(x, sigmas, noise_sampler, seed)
    sampling = model_sampling_of(model)
    sigmas = offset_first_sigma(sigmas, sampling)
    steps = len(sigmas) - 1
    denoised_1: Tensor | None = None
    denoised_2: Tensor | None = None
    h: Tensor | None = None
    h_1: Tensor | None = None
    h_2: Tensor | None = None
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = half_log_snr(sigmas[i], sampling), half_log_snr(sigmas[i + 1], sampling)
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            # phi_2, phi_3: the exponential-integrator weights of the first and second divided differences.
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                x = x + (alpha_t * phi_2) * ((denoised - denoised_1) / (h_1 / h))
            if eta > 0 and s_noise > 0:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() \
                    * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde_heun(
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
    solver_type: Literal["midpoint", "heun"] = "heun",
) -> Tensor:
    """DPM-Solver++(2M) SDE with the Heun form of its second-order correction (ComfyUI's dpmpp_2m_sde_heun)."""
    return sample_dpmpp_2m_sde(model, x, sigmas, extra_args=extra_args, callback=callback,
                               noise_sampler=noise_sampler, seed=seed, eta=eta, s_noise=s_noise,
                               solver_type=solver_type)


# ComfyUI's "_gpu" variants build the Brownian tree on the latent's device instead of the CPU. On a CPU that is the
# same tree, so the same numbers; on a GPU ComfyUI's path depends on the device's generator. Chisel draws every
# sampler's noise on the CPU (one result for a seed on any machine), so each "_gpu" name is its CPU sampler.
sample_dpmpp_sde_gpu = sample_dpmpp_sde
sample_dpmpp_2m_sde_gpu = sample_dpmpp_2m_sde
sample_dpmpp_2m_sde_heun_gpu = sample_dpmpp_2m_sde_heun
sample_dpmpp_3m_sde_gpu = sample_dpmpp_3m_sde
