"""DPM-Solver (Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in
Around 10 Steps"): singlestep solvers of orders 1-3 on the noise prediction in t = −log sigma.

These two samplers use only the ends of the given schedule: they choose their own steps between sigmas[0] and the
smallest positive sigma (DPM-Solver-fast's uniform t grid, or an adaptive step size), and stop there (no final
jump to sigma 0), as in ComfyUI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffusion.samplers.common import DenoiserFn, StepCallback, exp_neg, neg_log, report


@dataclass(frozen=True)
class _Solver:
    """The eps-prediction view of a denoiser and DPM-Solver's three update rules."""

    model: DenoiserFn
    extra_args: Mapping[str, Any]

    def eps(self, cache: dict[str, Tensor], key: str, x: Tensor, t: Tensor) -> Tensor:
        """eps(x, t) = (x − D(x, sigma)) / sigma, computed once per key within a step."""
        if key not in cache:
            sigma = exp_neg(t)
            cache[key] = (x - self.model(x, sigma * x.new_ones([x.shape[0]]), **self.extra_args)) / sigma
        return cache[key]

    def step_1(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict[str, Tensor]) -> Tensor:
        """DPM-Solver-1 (= DDIM), Lu et al. 2022 eq. 3.7."""
        h = t_next - t
        return x - exp_neg(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict[str, Tensor], r1: float = 1 / 2) -> Tensor:
        """DPM-Solver-2, Lu et al. 2022 Algorithm 1."""
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - exp_neg(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - exp_neg(t_next) * h.expm1() * eps - exp_neg(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict[str, Tensor], r1: float = 1 / 3,
               r2: float = 2 / 3) -> Tensor:
        """DPM-Solver-3, Lu et al. 2022 Algorithm 2."""
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - exp_neg(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - exp_neg(s2) * (r2 * h).expm1() * eps
              - exp_neg(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - exp_neg(t_next) * h.expm1() * eps - exp_neg(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)


def _end_sigmas(sigmas: Tensor) -> tuple[Tensor, Tensor]:
    """(sigma_max, sigma_min) of the run: the first sigma and the last positive one."""
    sigma_min = sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]
    return sigmas[0], sigma_min


@torch.no_grad()
def sample_dpm_fast(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """DPM-Solver-fast (Lu et al. 2022, §3.4): len(sigmas) − 1 model calls as order-3 steps on a uniform t grid."""
    if len(sigmas) <= 1:
        return x
    sigma_max, sigma_min = _end_sigmas(sigmas)
    nfe = len(sigmas) - 1
    solver = _Solver(model, extra_args or {})
    m = nfe // 3 + 1
    ts = torch.linspace(float(neg_log(sigma_max)), float(neg_log(sigma_min)), m + 1, device=x.device)
    # Spend exactly nfe evaluations: third-order steps, the remainder as one lower-order step at the end.
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        cache: dict[str, Tensor] = {}
        t, t_next = ts[i], ts[i + 1]
        eps = solver.eps(cache, "eps", x, t)
        report(callback, i, len(orders), x, exp_neg(t), x - exp_neg(t) * eps)
        step = {1: solver.step_1, 2: solver.step_2, 3: solver.step_3}[order]
        x = step(x, t, t_next, cache)
    return x


@dataclass
class _StepSizeController:
    """Integral (I) step-size control with an arctan limiter (Söderlind 2003, used by DPM-Solver's adaptive mode)."""

    h: float
    order: float
    accept_safety: float = 0.81
    eps: float = 1e-8

    def propose(self, error: Tensor) -> bool:
        """Scale h by the limited (1/error)^(1/order); accept the step when the factor is not too small."""
        inv_error = 1 / (float(error) + self.eps)
        factor = inv_error ** (1 / self.order)
        factor = 1 + math.atan(factor - 1)  # limiter: smooth, bounded change of the step size
        self.h *= factor
        return factor >= self.accept_safety


@torch.no_grad()
def sample_dpm_adaptive(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    accept_safety: float = 0.81,
) -> Tensor:
    """Adaptive DPM-Solver-12 / -23 (Lu et al. 2022, Algorithm 4): embedded lower/higher-order error estimate."""
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3, got {order}")
    if len(sigmas) <= 1:
        return x
    sigma_max, sigma_min = _end_sigmas(sigmas)
    solver = _Solver(model, extra_args or {})
    t_start, t_end = neg_log(torch.as_tensor(sigma_max)), neg_log(torch.as_tensor(sigma_min))
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    controller = _StepSizeController(h=abs(h_init), order=order, accept_safety=accept_safety)
    s = t_start
    x_prev = x
    step_index = 0
    while s < t_end - 1e-5:
        cache: dict[str, Tensor] = {}
        t = torch.minimum(t_end, s + controller.h)
        eps = solver.eps(cache, "eps", x, s)
        report(callback, step_index, None, x, exp_neg(s), x - exp_neg(s) * eps)
        if order == 2:
            x_low, x_high = solver.step_1(x, s, t, cache), solver.step_2(x, s, t, cache)
        else:
            x_low, x_high = solver.step_2(x, s, t, cache, r1=1 / 3), solver.step_3(x, s, t, cache)
        # Mixed absolute/relative tolerance, error as an RMS over all elements (Lu et al. 2022, §4.3).
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if controller.propose(error):
            x_prev, x, s = x_low, x_high, t
        step_index += 1
    return x
