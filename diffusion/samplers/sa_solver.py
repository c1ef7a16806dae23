"""SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion Models"): a
stochastic Adams predictor-corrector on the data prediction in lambda = log(alpha / sigma).

The predictor extrapolates x0 through the last ``predictor_order`` evaluations with Lagrange polynomials integrated
exactly against the SDE's exponential kernel (eqs. 15 and 18); the corrector redoes the previous step with the new
evaluation included (``corrector_order`` points). ``tau(sigma)`` sets the stochasticity per step: by default 1
between 20 % and 80 % of the model's noise schedule and 0 (the ODE) outside it. ``use_pece`` evaluates the corrected
state again (predict-evaluate-correct-evaluate, twice the model calls). Orders are lowered near the end of a
schedule that reaches sigma 0.

On a rectified-flow model (``model.model_sampling`` a flow table, ComfyUI's CONST) lambda = log((1 − σ)/σ) and a
schedule starting at σ 1 starts just below it (common.offset_first_sigma); a model that carries its table gets the
default tau interval from that table's percent_to_sigma, as ComfyUI's sample_sa_solver does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
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

TauFunction = Callable[[Tensor], float]

# The default stochastic interval, as fractions of the schedule (ComfyUI's KSampler sa_solver).
_SDE_START_PERCENT, _SDE_END_PERCENT = 0.2, 0.8


def exponential_coefficients(s: Tensor, t: Tensor, order: int, tau: float) -> Tensor:
    """(1 + tau²)·∫_s^t exp((1 + tau²)·x)·x^p dx for p = 0..order−1, with exp((1 + tau²)·t) factored out.

    Integration by parts gives I_p = T_p − p/(1 + tau²)·I_(p−1), T_p = t^p − s^p·e^(−(1 + tau²)(t − s)); unrolled,
    I = M·T with M[p, q] = (−1)^(p−q)·p!/q!·(1 + tau²)^(q−p) below the diagonal.
    """
    tau_mul = 1 + tau**2
    h = t - s
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    terms = t**p - s**p * (-tau_mul * h).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_factorial = (p + 1).lgamma()
    log_coeff = log_factorial.unsqueeze(1) - log_factorial.unsqueeze(0)
    if tau > 0:
        log_coeff = log_coeff - depth * math.log(tau_mul)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (log_coeff.exp() * signs).tril() @ terms


def _simple_order_2_coefficients(sigma_next: Tensor, lambdas: Tensor, lambda_s: Tensor, lambda_t: Tensor,
                                 tau: float, corrector: bool) -> Tensor:
    """The simplified order-2 weights of the paper's Appendix D (oldest point first)."""
    tau_mul = 1 + tau**2
    h = lambda_t - lambda_s
    alpha_t = sigma_next * lambda_t.exp()
    if corrector:
        b_new = alpha_t * (0.5 * tau_mul * h)
        b_old = alpha_t * (-h * tau_mul).expm1().neg() - b_new
    else:
        b_old = alpha_t * (0.5 * tau_mul * h**2) / (lambdas[-2] - lambda_s)
        b_new = alpha_t * (-h * tau_mul).expm1().neg() - b_old
    return torch.stack([b_old, b_new])


def adams_coefficients(sigma_next: Tensor, lambdas: Tensor, lambda_s: Tensor, lambda_t: Tensor, tau: float, *,
                       simple_order_2: bool = False, corrector: bool = False) -> Tensor:
    """The weights b_i of the x0 evaluations at ``lambdas`` (oldest first) for the step lambda_s -> lambda_t.

    The Lagrange basis integrals solve V^T·l = I (V the Vandermonde matrix of the points, I the exponential
    coefficients); the weights are alpha_t·l, the factored-out exponential folded back in.
    """
    n = lambdas.shape[0]
    if simple_order_2 and n == 2:
        return _simple_order_2_coefficients(sigma_next, lambdas, lambda_s, lambda_t, tau, corrector)
    integrals = exponential_coefficients(lambda_s, lambda_t, n, tau)
    vandermonde_t = torch.vander(lambdas, n, increasing=True).T
    lagrange = torch.linalg.solve(vandermonde_t, integrals)
    alpha_t = sigma_next * lambda_t.exp()
    return alpha_t * lagrange


@dataclass(frozen=True)
class SigmaIntervalTau:
    """tau(sigma) = eta for end_sigma <= sigma <= start_sigma, else 0 (eta <= 0: always 0, the ODE)."""

    start_sigma: float
    end_sigma: float
    eta: float = 1.0

    def __call__(self, sigma: Tensor | float) -> float:
        if self.eta <= 0:
            return 0.0
        value = float(sigma)
        return self.eta if self.start_sigma >= value >= self.end_sigma else 0.0


@lru_cache(maxsize=1)
def default_tau() -> SigmaIntervalTau:
    """Stochastic between 20 % and 80 % of the Stable Diffusion noise table, which every model family loaded here
    (SD1.x, SD2.x, SDXL) shares; pass ``tau_func`` for another interval or table."""
    from diffusion.model_sampling import DiscreteSampling  # the table only; samplers stay model-agnostic

    table = DiscreteSampling.linear()
    return SigmaIntervalTau(table.percent_to_sigma(_SDE_START_PERCENT), table.percent_to_sigma(_SDE_END_PERCENT))


@torch.no_grad()
def sample_sa_solver(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    tau_func: TauFunction | None = None,
    s_noise: float = 1.0,
    predictor_order: int = 3,
    corrector_order: int = 4,
    use_pece: bool = False,
    simple_order_2: bool = False,
) -> Tensor:
    """SA-Solver predictor-corrector (predictor_order 1..6, corrector_order 0..6)."""
    if len(sigmas) <= 1:
        return x
    sampling = model_sampling_of(model)
    if tau_func is None:
        tau_func = default_tau() if sampling is None else SigmaIntervalTau(
            sampling.percent_to_sigma(_SDE_START_PERCENT), sampling.percent_to_sigma(_SDE_END_PERCENT))
    noise_sampler = step_noise(x, noise_sampler, seed) if s_noise > 0 else None
    sigmas = offset_first_sigma(sigmas, sampling)
    lambdas = half_log_snr(sigmas, sampling)
    max_order = max(predictor_order, corrector_order)
    lower_order_to_end = float(sigmas[-1]) == 0
    steps = len(sigmas) - 1

    x_pred = x  # x: the corrected state; x_pred: the predicted next state
    h: Tensor | float = 0.0
    tau = 0.0
    noise: Tensor | float = 0.0  # the predictor's noise, added again to the corrected state
    evaluations: list[Tensor] = []
    for i in range(steps):
        denoised = call_model(model, x_pred, sigmas[i], extra_args)
        report(callback, i, steps, x_pred, sigmas[i], denoised)
        evaluations = (evaluations + [denoised])[-max_order:]

        predictor_used = min(predictor_order, len(evaluations))
        if i == 0 or (sigmas[i + 1] == 0 and not use_pece):
            corrector_used = 0
        else:
            corrector_used = min(corrector_order, len(evaluations))
        if lower_order_to_end:
            predictor_used = min(predictor_used, steps - 1 - i)
            corrector_used = min(corrector_used, steps - i)

        if corrector_used == 0:
            x = x_pred
        else:
            b = adams_coefficients(sigmas[i], lambdas[i - corrector_used + 1:i + 1], lambdas[i - 1], lambdas[i],
                                   tau, simple_order_2=simple_order_2, corrector=True)
            stacked = torch.stack(evaluations[-corrector_used:], dim=1)  # (B, K, ...)
            x = sigmas[i] / sigmas[i - 1] * (-(tau**2) * h).exp() * x \
                + torch.tensordot(stacked, b, dims=([1], [0]))
            if tau > 0 and noise_sampler is not None:
                x = x + noise
            if use_pece:
                denoised = call_model(model, x, sigmas[i], extra_args)
                evaluations[-1] = denoised

        if sigmas[i + 1] == 0:
            x_pred = denoised
            continue
        tau = tau_func(sigmas[i + 1])
        b = adams_coefficients(sigmas[i + 1], lambdas[i - predictor_used + 1:i + 1], lambdas[i], lambdas[i + 1],
                               tau, simple_order_2=simple_order_2, corrector=False)
        stacked = torch.stack(evaluations[-predictor_used:], dim=1)
        h = lambdas[i + 1] - lambdas[i]
        x_pred = sigmas[i + 1] / sigmas[i] * (-(tau**2) * h).exp() * x + torch.tensordot(stacked, b, dims=([1], [0]))
        if tau > 0 and noise_sampler is not None:
            noise = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * tau**2 * h).expm1().neg().sqrt() \
                * s_noise
            x_pred = x_pred + noise
    return x_pred


@torch.no_grad()
def sample_sa_solver_pece(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    noise_sampler: NoiseSampler | None = None,
    seed: int | None = None,
    tau_func: TauFunction | None = None,
    s_noise: float = 1.0,
    predictor_order: int = 3,
    corrector_order: int = 4,
    simple_order_2: bool = False,
) -> Tensor:
    """SA-Solver in PECE mode: the corrected state is evaluated again before the next prediction."""
    return sample_sa_solver(model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=noise_sampler,
                            seed=seed, tau_func=tau_func, s_noise=s_noise, predictor_order=predictor_order,
                            corrector_order=corrector_order, use_pece=True, simple_order_2=simple_order_2)
