"""Deterministic solvers of the probability-flow ODE dx/dsigma = (x − D(x, sigma)) / sigma in sigma space."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffusion.noise import NoiseSampler
from diffusion.samplers.common import DenoiserFn, StepCallback, call_model, churn, report, to_d


@torch.no_grad()
def sample_euler(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Euler steps with optional churn: Algorithm 2 of Karras et al. (2022) without the Heun correction."""
    steps = len(sigmas) - 1
    for i in range(steps):
        x, sigma_hat = churn(x, sigmas[i], s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
                             steps=steps, noise_sampler=noise_sampler)
        denoised = call_model(model, x, sigma_hat, extra_args)
        report(callback, i, steps, x, sigma_hat, denoised)
        x = x + to_d(x, sigma_hat, denoised) * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_heun(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Heun's 2nd-order method, Algorithm 2 of Karras et al. (2022); an Euler step into sigma = 0."""
    steps = len(sigmas) - 1
    for i in range(steps):
        x, sigma_hat = churn(x, sigmas[i], s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
                             steps=steps, noise_sampler=noise_sampler)
        denoised = call_model(model, x, sigma_hat, extra_args)
        report(callback, i, steps, x, sigma_hat, denoised)
        d = to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt  # D at sigma 0 is undefined (division by 0): plain Euler
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], call_model(model, x_2, sigmas[i + 1], extra_args))
        x = x + (d + d_2) / 2 * dt
    return x



@torch.no_grad()
def sample_heunpp2(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """Heun++ (sd-webui-samplers-scheduler's heunpp2): each step averages the slopes at the next two sigmas too,
    weighted by sigma / (3·sigma_0) (by sigma / (2·sigma_0) on the step before the last, which has one); an
    Euler step into the schedule's last sigma."""
    steps = len(sigmas) - 1
    s_end = sigmas[-1]
    for i in range(steps):
        x, sigma_hat = churn(x, sigmas[i], s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
                             steps=steps, noise_sampler=noise_sampler)
        denoised = call_model(model, x, sigma_hat, extra_args)
        report(callback, i, steps, x, sigma_hat, denoised)
        d = to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], call_model(model, x_2, sigmas[i + 1], extra_args))
        if sigmas[i + 2] == s_end:
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
            continue
        x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
        d_3 = to_d(x_3, sigmas[i + 2], call_model(model, x_3, sigmas[i + 2], extra_args))
        w = 3 * sigmas[0]
        w2, w3 = sigmas[i + 1] / w, sigmas[i + 2] / w
        x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x

@torch.no_grad()
def sample_dpm_2(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver-2 (Lu et al. 2022) in Karras et al.'s form: a midpoint step at the log-midpoint of sigma."""
    steps = len(sigmas) - 1
    for i in range(steps):
        x, sigma_hat = churn(x, sigmas[i], s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
                             steps=steps, noise_sampler=noise_sampler)
        denoised = call_model(model, x, sigma_hat, extra_args)
        report(callback, i, steps, x, sigma_hat, denoised)
        d = to_d(x, sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)  # log-midpoint of 0 does not exist: plain Euler
            continue
        sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
        x_2 = x + d * (sigma_mid - sigma_hat)
        d_2 = to_d(x_2, sigma_mid, call_model(model, x_2, sigma_mid, extra_args))
        x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


def _lagrange_integral(nodes: np.ndarray, j: int, lo: float, hi: float) -> float:
    """∫_lo^hi of the Lagrange basis polynomial that is 1 at nodes[j] and 0 at the other nodes (exact, float64)."""
    basis = np.polynomial.Polynomial([1.0])
    for k, node in enumerate(nodes):
        if k != j:
            basis = basis * np.polynomial.Polynomial([-node, 1.0]) / (nodes[j] - node)
    antiderivative = basis.integ()
    return float(antiderivative(hi) - antiderivative(lo))


def lms_coefficients(sigmas: np.ndarray, i: int, order: int) -> list[float]:
    """Adams-Bashforth weights for stepping sigmas[i] -> sigmas[i+1] from derivatives at sigmas[i], i-1, ..."""
    nodes = np.array([sigmas[i - k] for k in range(order)], dtype=np.float64)
    return [_lagrange_integral(nodes, j, float(sigmas[i]), float(sigmas[i + 1])) for j in range(order)]


@torch.no_grad()
def sample_lms(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    order: int = 4,
) -> Tensor:
    """Linear multistep (Adams-Bashforth) in sigma, as in Karras et al.'s k-diffusion; the last step returns D."""
    steps = len(sigmas) - 1
    sigmas_np = sigmas.detach().cpu().double().numpy()
    history: list[Tensor] = []  # derivatives, newest last
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        history = (history + [to_d(x, sigmas[i], denoised)])[-order:]
        if sigmas[i + 1] == 0:
            x = denoised  # the exact ODE solution to sigma 0 given D; extrapolating the history only adds error
            continue
        coeffs = lms_coefficients(sigmas_np, i, len(history))
        x = x + sum(c * d for c, d in zip(coeffs, reversed(history)))
    return x


# ComfyUI's "ddim" is Euler on the denoiser (Song et al. 2021's DDIM with eta 0 is the Euler step of the
# probability-flow ODE in sigma); the only difference is random inpaint noise, chosen by the sampler table.
sample_ddim = sample_euler
