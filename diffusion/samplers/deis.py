"""DEIS (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator"): a multistep
exponential integrator whose weights integrate the Lagrange polynomial through the previous steps' derivatives
against the VP-SDE's exponential kernel, in the diff-solvers formulation (Zhou et al. 2024) that ComfyUI uses.

The weights are computed once per schedule. "tab" (the default) integrates numerically over the VP time
t of an EDM-range VP schedule (sigma in [0.002, 80]); "rhoab" integrates the polynomial exactly in sigma.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from diffusion.samplers.common import DenoiserFn, StepCallback, call_model, report

DeisMode = Literal["tab", "rhoab"]

# The VP schedule the "tab" weights integrate over (EDM's range, as diff-solvers sets it).
_EPSILON_S, _SIGMA_MIN, _SIGMA_MAX = 1e-3, 0.002, 80
# Points of the numerical integration per step.
_TAB_POINTS = 10000


def _vp_time(sigmas: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The VP time t of each sigma for the linear-beta VP schedule through (eps_s, sigma_min) and (1, sigma_max),
    sigma(t)² = exp(beta_d·t²/2 + beta_min·t) − 1; returns (t, beta_0, beta_1).

    The dtypes are the reference's, so the weights are its bit for bit: sigma_min enters as a float32 tensor and
    sigma_max as the integer 80, whose log NumPy takes in float64, so beta_d and beta_min are float64 scalars; each
    operation with a float32 tensor rounds them to float32.
    """
    log_snr_min = _numpy_log(torch.tensor(_SIGMA_MIN) ** 2 + 1)  # float32
    log_snr_max = _numpy_log(torch.tensor(_SIGMA_MAX) ** 2 + 1)  # float64
    beta_d = 2 * (log_snr_min / _EPSILON_S - log_snr_max) / (_EPSILON_S - 1)
    beta_min = log_snr_max - 0.5 * beta_d
    sigmas = sigmas.detach().cpu()
    t = ((beta_min**2 + 2 * beta_d * (sigmas**2 + 1).log()).sqrt() - beta_min) / beta_d
    return t, beta_min, beta_d + beta_min


def _numpy_log(value: Tensor) -> Tensor:
    """NumPy's natural log (float32 in, float32 out; integers in, float64 out), whose last bit can differ from
    torch's."""
    return torch.from_numpy(np.asarray(np.log(value.numpy())))


def _lagrange_basis(nodes: Tensor, j: int, taus: Tensor) -> Tensor:
    """The Lagrange polynomial through ``nodes`` that is 1 at nodes[j], evaluated at taus."""
    poly: Tensor | float = 1
    for k in range(nodes.shape[0]):
        if k != j:
            poly = poly * ((taus - nodes[k]) / (nodes[j] - nodes[k]))
    return poly  # type: ignore[return-value]


def _tab_weights(sigmas: Tensor, max_order: int) -> list[list[Tensor]]:
    t_steps, beta_0, beta_1 = _vp_time(sigmas)
    weights: list[list[Tensor]] = []
    for i in range(len(t_steps) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            weights.append([])
            continue
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        taus = torch.linspace(float(t_cur), float(t_next), _TAB_POINTS)
        dtau = (t_next - t_cur) / _TAB_POINTS
        nodes = t_steps[[i - k for k in range(order)]]
        # The kernel −½·(d log alpha / dtau) / sqrt(alpha·(1 − alpha)),
        # alpha(t) = exp(−½t²(beta_1 − beta_0) − t·beta_0).
        # d log alpha / dtau is formed as reverse-mode differentiation of log(exp(u)) forms it, (1/alpha)·alpha·u',
        # so the float32 weights are the reference's bit for bit.
        alpha = torch.exp(-0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0)
        chain = (1 / alpha) * alpha
        d_log_alpha = chain * (beta_1 - beta_0) * -0.5 * (2 * taus) + (-chain) * beta_0
        kernel = -0.5 * d_log_alpha / torch.sqrt(alpha * (1 - alpha))
        weights.append([torch.sum(kernel * _lagrange_basis(nodes, j, taus)) * dtau for j in range(order)])
    return weights


def _integral_2(a: Tensor, b: Tensor, start: Tensor, end: Tensor, c: Tensor) -> Tensor:
    """∫ (x − a)(x − b) / ((c − a)(c − b)) dx over [start, end]."""
    value = (end**3 - start**3) / 3 - (end**2 - start**2) * (a + b) / 2 + (end - start) * a * b
    return value / ((c - a) * (c - b))


def _integral_3(a: Tensor, b: Tensor, c: Tensor, start: Tensor, end: Tensor, d: Tensor) -> Tensor:
    """∫ (x − a)(x − b)(x − c) / ((d − a)(d − b)(d − c)) dx over [start, end]."""
    value = (end**4 - start**4) / 4 - (end**3 - start**3) * (a + b + c) / 3 \
        + (end**2 - start**2) * (a * b + a * c + b * c) / 2 - (end - start) * a * b * c
    return value / ((d - a) * (d - b) * (d - c))


def _rhoab_weights(t_steps: Tensor, max_order: int) -> list[list[Tensor]]:
    weights: list[list[Tensor]] = []
    for i in range(len(t_steps) - 1):
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        order = min(i, max_order)
        if order == 0:
            weights.append([])
            continue
        prev = t_steps[[i - k for k in range(order + 1)]]
        if order == 1:
            weights.append([((t_next - prev[1]) ** 2 - (t_cur - prev[1]) ** 2) / (2 * (t_cur - prev[1])),
                            (t_next - t_cur) ** 2 / (2 * (prev[1] - t_cur))])
        elif order == 2:
            weights.append([_integral_2(prev[1], prev[2], t_cur, t_next, t_cur),
                            _integral_2(t_cur, prev[2], t_cur, t_next, prev[1]),
                            _integral_2(t_cur, prev[1], t_cur, t_next, prev[2])])
        else:
            weights.append([_integral_3(prev[1], prev[2], prev[3], t_cur, t_next, t_cur),
                            _integral_3(t_cur, prev[2], prev[3], t_cur, t_next, prev[1]),
                            _integral_3(t_cur, prev[1], prev[3], t_cur, t_next, prev[2]),
                            _integral_3(t_cur, prev[1], prev[2], t_cur, t_next, prev[3])])
    return weights


def deis_weights(sigmas: Tensor, max_order: int, mode: DeisMode = "tab") -> list[list[Tensor]]:
    """Per step, the weights of the current and previous derivatives (empty where the step is first order)."""
    if mode == "tab":
        return _tab_weights(sigmas, max_order)
    if mode == "rhoab":
        return _rhoab_weights(sigmas, max_order)
    raise ValueError(f"deis_mode must be 'tab' or 'rhoab', got {mode!r}")


@torch.no_grad()
def sample_deis(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    max_order: int = 3,
    deis_mode: DeisMode = "tab",
) -> Tensor:
    """DEIS multistep of order min(i + 1, max_order) (1..4); an Euler step into sigma 0."""
    if not 1 <= max_order <= 4:
        raise ValueError(f"max_order must be 1..4, got {max_order}")
    weights = deis_weights(sigmas, max_order, deis_mode)
    steps = len(sigmas) - 1
    history: list[Tensor] = []  # derivatives of the previous steps, oldest first
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = call_model(model, x, sigma, extra_args)
        report(callback, i, steps, x, sigma, denoised)
        d = (x - denoised) / sigma
        order = 1 if sigma_next <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x + (sigma_next - sigma) * d
        else:
            w = [wi.to(x.device) for wi in weights[i]]
            x_next = x + w[0] * d
            for weight, older in zip(w[1:], reversed(history)):
                x_next = x_next + weight * older
        history = (history + [d])[-(max_order - 1):] if max_order > 1 else []
        x = x_next
    return x


__all__ = ["DeisMode", "deis_weights", "sample_deis"]
