"""RES multistep (Zhang et al. 2023, "Improved Order Analysis and Design of Exponential Integrator for Diffusion
Models", the second-order multistep scheme of its Section 4): an exponential integrator in t = −log sigma whose
second stage extrapolates from the previous step's x0 with the "refined" phi-function weights.

Four variants, as ComfyUI lists them: plain (deterministic), ancestral (fresh noise to sigma_next after a step down
to sigma_down), and each with CFG++ (diffusion/samplers/cfg_pp.py: the update uses the unconditional x0 history and
adds the current guidance difference).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from diffusion.noise import NoiseSampler
from diffusion.samplers.cfg_pp import UncondCapture, capture_uncond
from diffusion.samplers.common import (
    DenoiserFn,
    StepCallback,
    ancestral_step,
    call_model,
    exp_neg,
    neg_log,
    report,
    step_noise,
    to_d,
)


def _phi_1(t: Tensor) -> Tensor:
    return torch.expm1(t) / t


def _phi_2(t: Tensor) -> Tensor:
    return (_phi_1(t) - 1.0) / t


def _res_multistep(model: DenoiserFn, x: Tensor, sigmas: Tensor, *, extra_args: Mapping[str, Any] | None,
                   callback: StepCallback | None, noise_sampler: NoiseSampler | None, seed: int | None, eta: float,
                   s_noise: float, cfg_pp: bool) -> Tensor:
    noise_sampler = step_noise(x, noise_sampler, seed) if eta else None  # eta 0: sigma_up is 0, no noise at all
    steps = len(sigmas) - 1
    old_denoised: Tensor | None = None
    old_sigma_down: Tensor | None = None
    with capture_uncond() if cfg_pp else nullcontext() as uncond:
        for i in range(steps):
            denoised = call_model(model, x, sigmas[i], extra_args)
            # With CFG++ the steps (and the history) use the unconditional x0; the guided one only shifts x.
            basis = _latest(uncond, denoised)
            report(callback, i, steps, x, sigmas[i], denoised)
            sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
            if sigma_down == 0 or old_denoised is None:
                if cfg_pp:
                    x = denoised + to_d(x, sigmas[i], basis) * sigma_down
                else:
                    x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
            else:
                t, t_old = neg_log(sigmas[i]), neg_log(old_sigma_down)
                t_next, t_prev = neg_log(sigma_down), neg_log(sigmas[i - 1])
                h = t_next - t
                c2 = (t_prev - t_old) / h
                phi1, phi2 = _phi_1(-h), _phi_2(-h)
                b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
                b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
                if cfg_pp:
                    x = x + (denoised - basis)
                x = exp_neg(h) * x + h * (b1 * basis + b2 * old_denoised)
            if noise_sampler is not None and sigmas[i + 1] > 0:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
            old_denoised = basis
            old_sigma_down = sigma_down
    return x


def _latest(uncond: UncondCapture | None, denoised: Tensor) -> Tensor:
    return denoised if uncond is None else uncond.latest(denoised)


@torch.no_grad()
def sample_res_multistep(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """RES second-order multistep, deterministic (an Euler first step, then the multistep update)."""
    return _res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=None, seed=None,
                          eta=0.0, s_noise=1.0, cfg_pp=False)


@torch.no_grad()
def sample_res_multistep_cfg_pp(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """RES multistep with CFG++, deterministic."""
    return _res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=None, seed=None,
                          eta=0.0, s_noise=1.0, cfg_pp=True)


@torch.no_grad()
def sample_res_multistep_ancestral(
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
    """RES multistep stepping down to sigma_down, then fresh noise up to sigma_next (ancestral, eta)."""
    return _res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=noise_sampler,
                          seed=seed, eta=eta, s_noise=s_noise, cfg_pp=False)


@torch.no_grad()
def sample_res_multistep_ancestral_cfg_pp(
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
    """Ancestral RES multistep with CFG++."""
    return _res_multistep(model, x, sigmas, extra_args=extra_args, callback=callback, noise_sampler=noise_sampler,
                          seed=seed, eta=eta, s_noise=s_noise, cfg_pp=True)
