"""Improved PNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", Section 5;
the ``diff-solvers`` formulation of Zhou et al. 2024): Adams-Bashforth multistep on the probability-flow ODE in
sigma, warming up through lower orders from the derivatives of the previous steps.

``ipndm`` uses the fixed-step Adams-Bashforth weights; ``ipndm_v`` the variable-step ones, which fit schedules
whose steps are not equal (all of them, in sigma). Both return D itself on the step into sigma 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from diffusion.samplers.common import DenoiserFn, StepCallback, call_model, report

MAX_ORDER = 4


def _remember(history: list[Tensor], d: Tensor, max_order: int) -> list[Tensor]:
    """The last max_order − 1 derivatives, oldest first."""
    return (history + [d])[-(max_order - 1):] if max_order > 1 else []


@torch.no_grad()
def sample_ipndm(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    max_order: int = MAX_ORDER,
) -> Tensor:
    """iPNDM: fixed-step Adams-Bashforth of order min(i + 1, max_order) (1..4) on d = (x − D) / sigma."""
    if not 1 <= max_order <= MAX_ORDER:
        raise ValueError(f"max_order must be 1..{MAX_ORDER}, got {max_order}")
    steps = len(sigmas) - 1
    history: list[Tensor] = []  # derivatives of the previous steps, oldest first
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = call_model(model, x, sigma, extra_args)
        report(callback, i, steps, x, sigma, denoised)
        d = (x - denoised) / sigma
        order = min(max_order, i + 1)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + dt * d
        elif order == 2:
            x_next = x + dt * (3 * d - history[-1]) / 2
        elif order == 3:
            x_next = x + dt * (23 * d - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            x_next = x + dt * (55 * d - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        history = _remember(history, d, max_order)
        x = x_next
    return x


def _variable_step_weights(sigmas: Tensor, i: int, order: int) -> list[Tensor]:
    """Adams-Bashforth weights for unequal steps (the current derivative's first, then older ones)."""
    h_n = sigmas[i + 1] - sigmas[i]
    h_n_1 = sigmas[i] - sigmas[i - 1]
    if order == 2:
        return [(2 + (h_n / h_n_1)) / 2, -(h_n / h_n_1) / 2]
    h_n_2 = sigmas[i - 1] - sigmas[i - 2]
    temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if order == 3:
        return [(2 + (h_n / h_n_1)) / 2 + temp1,
                -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1,
                temp1 * h_n_1 / h_n_2]
    h_n_3 = sigmas[i - 2] - sigmas[i - 3]
    ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
    temp2 = ((1 - h_n / (3 * (h_n + h_n_1))) / 2
             + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2))) \
        * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2)) / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
    return [(2 + (h_n / h_n_1)) / 2 + temp1 + temp2,
            -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + (h_n_1 / h_n_2) + ratio) * temp2,
            temp1 * h_n_1 / h_n_2 + ((h_n_1 / h_n_2) + ratio * (1 + h_n_2 / h_n_3)) * temp2,
            -temp2 * ratio * h_n_1 / h_n_2]


@torch.no_grad()
def sample_ipndm_v(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    max_order: int = MAX_ORDER,
) -> Tensor:
    """iPNDM with variable-step Adams-Bashforth weights of order min(i + 1, max_order) (1..4)."""
    if not 1 <= max_order <= MAX_ORDER:
        raise ValueError(f"max_order must be 1..{MAX_ORDER}, got {max_order}")
    steps = len(sigmas) - 1
    history: list[Tensor] = []
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = call_model(model, x, sigma, extra_args)
        report(callback, i, steps, x, sigma, denoised)
        d = (x - denoised) / sigma
        order = min(max_order, i + 1)
        if sigma_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (sigma_next - sigma) * d
        else:
            weights = _variable_step_weights(sigmas, i, order)
            combined = weights[0] * d
            for weight, older in zip(weights[1:], reversed(history)):
                combined = combined + weight * older
            x_next = x + (sigma_next - sigma) * combined
        history = _remember(history, d, max_order)
        x = x_next
    return x
