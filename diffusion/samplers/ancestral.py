"""Samplers that add fresh Gaussian noise after each step (ancestral / DDPM-style).

All take ``noise_sampler`` (or a ``seed`` for the default: seeded CPU step noise, one draw per noisy step).

On a rectified-flow model (``model.model_sampling`` is a flow table, ComfyUI's CONST) euler_ancestral,
dpm_2_ancestral and dpmpp_2s_ancestral take ComfyUI's ``*_RF`` formulas (comfy/k_diffusion/sampling.py
``sample_euler_ancestral_RF`` etc.: the step goes down to sigma_down on the straight path and is re-noised with the
alpha-scaled renoise coefficient, common.flow_ancestral_step), and lcm re-noises with the model's noise_scaling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from diffusion.noise import NoiseSampler
from diffusion.samplers.common import (
    DenoiserFn,
    StepCallback,
    ancestral_step,
    call_model,
    exp_neg,
    flow_ancestral_step,
    is_flow,
    model_sampling_of,
    neg_log,
    report,
    step_noise,
    to_d,
)


@torch.no_grad()
def sample_euler_ancestral(
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
    """Ancestral sampling with Euler steps (Ho et al. 2020's posterior noise on Karras et al. 2022's ODE step)."""
    noise_sampler = step_noise(x, noise_sampler, seed)
    if is_flow(model_sampling_of(model)):
        return _euler_ancestral_flow(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise)
    steps = len(sigmas) - 1
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = denoised
        else:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _euler_ancestral_flow(model: DenoiserFn, x: Tensor, sigmas: Tensor, extra_args: Mapping[str, Any] | None,
                          callback: StepCallback | None, noise_sampler: NoiseSampler, eta: float,
                          s_noise: float) -> Tensor:
    """euler_ancestral on a flow model (ComfyUI's sample_euler_ancestral_RF)."""
    steps = len(sigmas) - 1
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        sigma_down, alpha_ratio, renoise = flow_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        down_ratio = sigma_down / sigmas[i]
        x = down_ratio * x + (1 - down_ratio) * denoised  # the Euler step on the straight path
        if eta > 0:
            x = alpha_ratio * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(
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
    """Ancestral sampling with DPM-Solver-2 steps (Lu et al. 2022) down to sigma_down, then noise up to sigma_next.
    On a flow model sigma_down and the re-noising are the RF ones (ComfyUI's sample_dpm_2_ancestral_RF)."""
    noise_sampler = step_noise(x, noise_sampler, seed)
    flow = is_flow(model_sampling_of(model))
    steps = len(sigmas) - 1
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        if flow:
            sigma_down, alpha_ratio, renoise = flow_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        else:
            sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
            continue
        sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
        x_2 = x + d * (sigma_mid - sigmas[i])
        d_2 = to_d(x_2, sigma_mid, call_model(model, x_2, sigma_mid, extra_args))
        x = x + d_2 * (sigma_down - sigmas[i])
        if flow:
            x = alpha_ratio * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise
        else:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
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
    """Ancestral sampling with DPM-Solver++(2S) steps (Lu et al. 2022b, Algorithm 1, single-step midpoint r = 1/2)."""
    noise_sampler = step_noise(x, noise_sampler, seed)
    if is_flow(model_sampling_of(model)):
        return _dpmpp_2s_ancestral_flow(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise)
    steps = len(sigmas) - 1
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = neg_log(sigmas[i]), neg_log(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            # Exponential-integrator first-order step to the midpoint, then the full step with D at the midpoint.
            x_2 = (exp_neg(s) / exp_neg(t)) * x - (-0.5 * h).expm1() * denoised
            denoised_2 = call_model(model, x_2, exp_neg(s), extra_args)
            x = (exp_neg(t_next) / exp_neg(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _dpmpp_2s_ancestral_flow(model: DenoiserFn, x: Tensor, sigmas: Tensor, extra_args: Mapping[str, Any] | None,
                             callback: StepCallback | None, noise_sampler: NoiseSampler, eta: float,
                             s_noise: float) -> Tensor:
    """dpmpp_2s_ancestral on a flow model (ComfyUI's sample_dpmpp_2s_ancestral_RF): the midpoint sigma_s halfway in
    lambda = log((1 − σ)/σ) between sigma and sigma_down, both stages as straight-path interpolations."""
    steps = len(sigmas) - 1
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        sigma_down, alpha_ratio, renoise = flow_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            if sigmas[i] == 1.0:
                sigma_s: Tensor | float = 0.9999  # lambda(1) is −inf: ComfyUI's fixed midpoint
            else:
                t_i, t_down = ((1 - sigmas[i]) / sigmas[i]).log(), ((1 - sigma_down) / sigma_down).log()
                sigma_s = ((t_i + 0.5 * (t_down - t_i)).exp() + 1) ** -1
            s_ratio = sigma_s / sigmas[i]
            denoised_2 = call_model(model, s_ratio * x + (1 - s_ratio) * denoised, sigma_s, extra_args)
            down_ratio = sigma_down / sigmas[i]
            x = down_ratio * x + (1 - down_ratio) * denoised_2
        if sigmas[i + 1] > 0 and eta > 0:
            x = alpha_ratio * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def _ddpm_step(x_vp: Tensor, sigma: Tensor, sigma_next: Tensor, eps: Tensor, noise_sampler: NoiseSampler) -> Tensor:
    """One DDPM ancestral step in VP space (Ho et al. 2020, Algorithm 2), written with ᾱ = 1 / (1 + sigma²)."""
    alpha_bar = 1 / (sigma * sigma + 1)
    alpha_bar_next = 1 / (sigma_next * sigma_next + 1)
    alpha = alpha_bar / alpha_bar_next
    mean = (1.0 / alpha).sqrt() * (x_vp - (1 - alpha) * eps / (1 - alpha_bar).sqrt())
    if sigma_next > 0:
        variance = (1 - alpha) * (1.0 - alpha_bar_next) / (1.0 - alpha_bar)  # the posterior variance β̃_t
        mean = mean + variance.sqrt() * noise_sampler(sigma, sigma_next)
    return mean


@torch.no_grad()
def sample_ddpm(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on the given sigmas."""
    noise_sampler = step_noise(x, noise_sampler, seed)
    steps = len(sigmas) - 1
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        # VE latent x = x_vp·sqrt(1 + sigma²); the DDPM step works on x_vp and eps = (x − D) / sigma.
        x_vp = x / torch.sqrt(1.0 + sigmas[i] ** 2.0)
        x = _ddpm_step(x_vp, sigmas[i], sigmas[i + 1], (x - denoised) / sigmas[i], noise_sampler)
        if sigmas[i + 1] != 0:
            x = x * torch.sqrt(1.0 + sigmas[i + 1] ** 2.0)
    return x


@torch.no_grad()
def sample_lcm(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
) -> Tensor:
    """Latent Consistency Model multistep sampling (Luo et al. 2023, Algorithm 1): jump to D, re-noise to sigma_next
    (with the model's noise_scaling on a flow model: (1 − σ)·D + σ·noise, as ComfyUI's sample_lcm)."""
    noise_sampler = step_noise(x, noise_sampler, seed)
    sampling = model_sampling_of(model)
    flow = is_flow(sampling)
    steps = len(sigmas) - 1
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            noise = noise_sampler(sigmas[i], sigmas[i + 1])
            x = sampling.noise_scaling(sigmas[i + 1], noise, x) if flow else x + noise * sigmas[i + 1]
    return x
