"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models"):
multistep predictor (UniP) plus a corrector (UniC) that reuses the next step's model call, on the data prediction.

The solver works in VP space (x_vp = alpha·x with alpha = 1/sqrt(1 + sigma²)) with the sigma itself as its time
variable, like ComfyUI's port: the final sigma 0 becomes 0.001 (lambda = log(alpha/std) is infinite at 0) and
the result is divided by alpha(0.001) at the end. The float32 formulas for alpha, std and lambda are kept as they
are because the last step's std(0.001) is rounding-sensitive and the result depends on it at the 1e-3 level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from diffusion.samplers.common import DenoiserFn, StepCallback, call_model, report

Variant = Literal["bh1", "bh2"]

# Where the solver stops instead of sigma 0.
_FINAL_SIGMA = 0.001
_MAX_ORDER = 3


def _log_alpha(sigma: Tensor) -> Tensor:
    """log alpha(sigma) = ½·log(1 / (sigma² + 1)), the VP "log mean coefficient"."""
    return 0.5 * torch.log(1 / (sigma * sigma + 1))


def _alpha(sigma: Tensor) -> Tensor:
    return torch.exp(_log_alpha(sigma))


def _std(sigma: Tensor) -> Tensor:
    return torch.sqrt(1.0 - torch.exp(2.0 * _log_alpha(sigma)))


def _lambda(sigma: Tensor) -> Tensor:
    """Half log-SNR, log(alpha / std)."""
    log_alpha = _log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def _data_prediction(model: DenoiserFn, x_vp: Tensor, sigma: Tensor, extra_args: Mapping[str, Any] | None) -> Tensor:
    """x0 from the VP sample through the eps view of the denoiser: x0 = (x_vp − std·eps) / alpha."""
    x_ve = x_vp * ((sigma**2 + 1.0) ** 0.5)
    eps = (x_ve - call_model(model, x_ve, sigma, extra_args)) / sigma
    return (x_vp - _std(sigma) * eps) / _alpha(sigma)


def _coefficients(h: Tensor, rks: list[Tensor], order: int, variant: Variant) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The UniPC linear system (Zhao et al. 2023, Algorithm "B(h)" variants): R (order × order), b, h·phi_1, B(h).

    R[i-1] = r_k^(i-1) over the previous steps' relative log-SNR distances r_k (and 1 for the current step);
    b[i-1] = phi_(i+1)(h)·i! / B(h), with the phi functions built by the recurrence phi_(k+1) = (phi_k − 1/k!) / h.
    """
    hh = -h  # data prediction integrates in −lambda
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    r = torch.stack([rk.reshape(()) for rk in rks] + [torch.ones_like(h).reshape(())])
    rows, b = [], []
    factorial = 1
    for i in range(1, order + 1):
        rows.append(torch.pow(r, i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.stack([v.reshape(()) for v in b]), h_phi_1, b_h


def _weighted_sum(weights: Tensor, terms: list[Tensor]) -> Tensor:
    return torch.einsum("k,k...->...", weights, torch.stack(terms))


def _update(
    model: DenoiserFn,
    x: Tensor,
    history: list[tuple[Tensor, Tensor]],
    sigma: Tensor,
    order: int,
    use_corrector: bool,
    variant: Variant,
    extra_args: Mapping[str, Any] | None,
) -> tuple[Tensor, Tensor | None]:
    """One UniP step to ``sigma`` of the given order, then UniC if asked; returns (x, model at the new point)."""
    sigma_prev, model_prev = history[-1]
    lambda_prev = _lambda(sigma_prev)
    h = _lambda(sigma) - lambda_prev
    rks, d1s = [], []
    for sigma_i, model_i in reversed(history[-order:-1]):
        rk = (_lambda(sigma_i) - lambda_prev) / h
        rks.append(rk)
        d1s.append((model_i - model_prev) / rk)
    r_mat, b, h_phi_1, b_h = _coefficients(h, rks, order, variant)
    alpha_t = torch.exp(_log_alpha(sigma))

    # Why the fixed 0.5: for order 2 (predictor) and order 1 (corrector) the paper's closed form is rho = 1/2.
    x_base = (_std(sigma) / _std(sigma_prev)) * x - (alpha_t * h_phi_1) * model_prev
    if d1s:
        rhos_p = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(r_mat[:-1, :-1], b[:-1])
        x_t = x_base - (alpha_t * b_h) * _weighted_sum(rhos_p.to(x), d1s)
    else:
        x_t = x_base
    if not use_corrector:
        return x_t, None
    rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(r_mat, b)
    rhos_c = rhos_c.to(x)
    model_t = _data_prediction(model, x_t, sigma, extra_args)
    corr = _weighted_sum(rhos_c[:-1], d1s) if d1s else 0
    x_t = x_base - (alpha_t * b_h) * (corr + rhos_c[-1] * (model_t - model_prev))
    return x_t, model_t


def _sample_unipc(model: DenoiserFn, x: Tensor, sigmas: Tensor, *, extra_args: Mapping[str, Any] | None,
                  callback: StepCallback | None, variant: Variant) -> Tensor:
    steps = len(sigmas) - 1
    if steps < 1:
        return x
    ts = sigmas.clone()
    if ts[-1] == 0:
        ts[-1] = _FINAL_SIGMA
    # Highest order used; warm-up steps use 1, 2, ... and the last steps drop back (lower_order_final).
    order = max(1, min(_MAX_ORDER, steps - 1))
    x = x / torch.sqrt(1.0 + ts[0] ** 2.0)  # VE -> VP
    history = [(ts[0], _data_prediction(model, x, ts[0], extra_args))]
    report(callback, 0, steps, x / _alpha(ts[0]), ts[0], history[-1][1])
    for k in range(1, steps + 1):
        step_order = k if k < order else min(order, steps + 1 - k)
        last = k == steps
        x, model_x = _update(model, x, history, ts[k], step_order, not last, variant, extra_args)
        if last:
            break
        if model_x is None:
            model_x = _data_prediction(model, x, ts[k], extra_args)
        history = (history + [(ts[k], model_x)])[-order:]
        report(callback, k, steps, x / _alpha(ts[k]), ts[k], model_x)
    return x / _alpha(ts[-1])  # VP -> VE at the final sigma


@torch.no_grad()
def sample_uni_pc(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """UniPC with B(h) = h ("bh1", Zhao et al. 2023), order up to 3, data prediction."""
    return _sample_unipc(model, x, sigmas, extra_args=extra_args, callback=callback, variant="bh1")


@torch.no_grad()
def sample_uni_pc_bh2(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """UniPC with B(h) = e^h − 1 ("bh2", Zhao et al. 2023), order up to 3, data prediction."""
    return _sample_unipc(model, x, sigmas, extra_args=extra_args, callback=callback, variant="bh2")
