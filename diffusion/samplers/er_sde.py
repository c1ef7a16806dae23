"""ER-SDE-Solver-3 (Cui et al. 2023, "Elucidating the Solution Space of Extended Reverse-Time SDE for Diffusion
Models", the VP data-prediction solver): a three-stage solver of the extended reverse-time SDE whose noise is
shaped by a noise scaler; stage k adds the (k−1)-th divided difference of x0 weighted by integrals of the scaler,
computed with a 200-point Riemann sum.

Time variable: er_lambda = sigma / alpha (= sigma for VE models; σ / (1 − σ) for rectified-flow ones, whose schedule
starts just below σ 1 as in ComfyUI, common.offset_first_sigma). Step noise is fresh per step (seeded CPU noise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

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
    step_noise,
)

NoiseScaler = Callable[[Tensor], Tensor]

# Points of the Riemann sums of the stage integrals.
_INTEGRATION_POINTS = 200.0


def er_sde_noise_scaler(x: Tensor) -> Tensor:
    """ER-SDE's default noise scaler, x·(exp(x^0.3) + 10) (Cui et al. 2023, the "ER-SDE 5" choice)."""
    return x * ((x**0.3).exp() + 10.0)


@torch.no_grad()
def sample_er_sde(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    s_noise: float = 1.0,
    noise_scaler: NoiseScaler | None = None,
    max_stage: int = 3,
) -> Tensor:
    """ER-SDE-Solver with up to ``max_stage`` (1..3) stages; ``noise_scaler`` None is ER-SDE's own."""
    scaler = er_sde_noise_scaler if noise_scaler is None else noise_scaler
    noise_sampler = step_noise(x, noise_sampler, seed) if s_noise > 0 else None
    points = torch.arange(0, _INTEGRATION_POINTS, dtype=torch.float32, device=x.device)
    sampling = model_sampling_of(model)
    sigmas = offset_first_sigma(sigmas, sampling)
    er_lambdas = half_log_snr(sigmas, sampling).neg().exp()  # sigma / alpha via the half log-SNR, as ComfyUI rounds it
    steps = len(sigmas) - 1
    old_denoised: Tensor | None = None
    old_denoised_d: Tensor | None = None
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = er_lambdas[i], er_lambdas[i + 1]
            alpha_s = sigmas[i] / lambda_s
            alpha_t = sigmas[i + 1] / lambda_t
            r_alpha = alpha_t / alpha_s
            r = scaler(lambda_t) / scaler(lambda_s)
            x = r_alpha * r * x + alpha_t * (1 - r) * denoised  # stage 1: the Euler step
            if stage >= 2:
                dt = lambda_t - lambda_s
                step = -dt / _INTEGRATION_POINTS
                positions = lambda_t + points * step
                scaled = scaler(positions)
                integral_1 = torch.sum(1 / scaled) * step
                denoised_d = (denoised - old_denoised) / (lambda_s - er_lambdas[i - 1])
                x = x + alpha_t * (dt + integral_1 * scaler(lambda_t)) * denoised_d
                if stage >= 3:
                    integral_2 = torch.sum((positions - lambda_s) / scaled) * step
                    denoised_u = (denoised_d - old_denoised_d) / ((lambda_s - er_lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt**2) / 2 + integral_2 * scaler(lambda_t)) * denoised_u
                old_denoised_d = denoised_d
            if noise_sampler is not None:
                spread = (lambda_t**2 - lambda_s**2 * r**2).sqrt().nan_to_num(nan=0.0)
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * spread
        old_denoised = denoised
    return x
