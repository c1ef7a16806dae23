"""DPM-Solver++ family: exponential-integrator solvers in t = −log sigma on the data (x0) prediction.

Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models". The SDE
variants read their noise from one Brownian path (``noise_sampler`` or a seeded Brownian tree).
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
    neg_log,
    report,
    to_d,
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
    steps = len(sigmas) - 1
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = neg_log(sigmas[i]), neg_log(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        fac = 1 / (2 * r)

        # Stage 1: ancestral step to the intermediate time s.
        sd, su = ancestral_step(exp_neg(t), exp_neg(s), eta)
        s_ = neg_log(sd)
        x_2 = (exp_neg(s_) / exp_neg(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise_sampler(exp_neg(t), exp_neg(s)) * s_noise * su
        denoised_2 = call_model(model, x_2, exp_neg(s), extra_args)

        # Stage 2: full ancestral step with D extrapolated from the two evaluations.
        sd, su = ancestral_step(exp_neg(t), exp_neg(t_next), eta)
        t_next_ = neg_log(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (exp_neg(t_next_) / exp_neg(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + noise_sampler(exp_neg(t), exp_neg(t_next)) * s_noise * su
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
    steps = len(sigmas) - 1
    old_denoised: Tensor | None = None
    h_last: Tensor | None = None
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised  # the final step: the solution at sigma 0 is D itself
        else:
            h = neg_log(sigmas[i + 1]) - neg_log(sigmas[i])
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() \
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
            h = neg_log(sigmas[i + 1]) - neg_log(sigmas[i])
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            # phi_2, phi_3: the exponential-integrator weights of the first and second divided differences.
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                x = x + phi_2 * ((denoised - denoised_1) / (h_1 / h))
            if eta:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() \
                    * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x
