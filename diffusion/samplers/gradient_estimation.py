"""Gradient estimation sampling (Permenter & Yuan 2024, "Interpreting and Improving Diffusion Models from an
Optimization Perspective", Algorithm 2): Euler steps whose direction is extrapolated from the previous step's,
d̄ = d + (gamma − 1)·(d − d_prev), which corrects the error of denoising as an approximate projection.
The CFG++ variant (diffusion/samplers/cfg_pp.py) takes d from the unconditional x0 and lands on the guided one.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from diffusion.samplers.cfg_pp import capture_uncond
from diffusion.samplers.common import DenoiserFn, StepCallback, call_model, report, to_d


def _gradient_estimation(model: DenoiserFn, x: Tensor, sigmas: Tensor, *, extra_args: Mapping[str, Any] | None,
                         callback: StepCallback | None, ge_gamma: float, cfg_pp: bool) -> Tensor:
    steps = len(sigmas) - 1
    old_d: Tensor | None = None
    with capture_uncond() if cfg_pp else nullcontext() as uncond:
        for i in range(steps):
            denoised = call_model(model, x, sigmas[i], extra_args)
            d = to_d(x, sigmas[i], denoised if uncond is None else uncond.latest(denoised))
            report(callback, i, steps, x, sigmas[i], denoised)
            dt = sigmas[i + 1] - sigmas[i]
            if sigmas[i + 1] == 0:
                x = denoised
            else:
                x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
                if old_d is not None:
                    x = x + (ge_gamma - 1) * (d - old_d) * dt
            old_d = d
    return x


@torch.no_grad()
def sample_gradient_estimation(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    ge_gamma: float = 2.0,
) -> Tensor:
    """Gradient estimation with extrapolation factor ``ge_gamma`` (1: plain Euler)."""
    return _gradient_estimation(model, x, sigmas, extra_args=extra_args, callback=callback, ge_gamma=ge_gamma,
                                cfg_pp=False)


@torch.no_grad()
def sample_gradient_estimation_cfg_pp(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    ge_gamma: float = 2.0,
) -> Tensor:
    """Gradient estimation with CFG++."""
    return _gradient_estimation(model, x, sigmas, extra_args=extra_args, callback=callback, ge_gamma=ge_gamma,
                                cfg_pp=True)
