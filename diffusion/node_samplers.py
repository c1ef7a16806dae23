"""Sampler functions that ComfyUI defines beside its nodes rather than in its sampler list, with the table's
signature (diffusion/samplers): ``sample_x(model, x, sigmas, *, extra_args, callback, seed, ...) -> Tensor``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffusion.noise import cpu_generator
from diffusion.samplers import DenoiserFn, StepCallback
from diffusion.samplers.cfg_pp import capture_uncond
from diffusion.samplers.common import call_model, report, to_d

Upscale = Callable[[Tensor, int, int, str], Tensor]
"""(latent [B, C, h, w], width, height, method) -> the latent resized to [B, C, height, width]."""


@torch.no_grad()
def sample_lcm_upscale(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
    seed: int,
    upscale: Upscale,
    total_upscale: float = 2.0,
    upscale_method: str = "bislerp",
    upscale_steps: int | None = None,
) -> Tensor:
    """LCM sampling (Luo et al. 2023) that grows the latent between steps: jump to D, resize by the next of the
    ratios linspace(1, total_upscale, upscale_steps + 1)[1:], re-noise to the next sigma.

    Step noise: ComfyUI draws it from the global generator right after the initial noise of the same seed; here
    a CPU generator seeded with ``seed`` skips that initial draw (one latent-sized draw) and continues, which
    gives ComfyUI's CPU numbers for a latent without batch_index.
    """
    steps = len(sigmas) - 1
    if upscale_steps is None:
        upscale_steps = max(len(sigmas) // 2 + 1, 2)
    else:
        upscale_steps = min(upscale_steps + 1, len(sigmas) + 1)
    ratios = np.linspace(1.0, total_upscale, upscale_steps)[1:]
    height, width = x.shape[-2], x.shape[-1]
    generator = cpu_generator(seed)
    torch.randn(tuple(x.shape), dtype=torch.float32, generator=generator)  # the initial noise's draw
    for i in range(steps):
        denoised = call_model(model, x, sigmas[i], extra_args)
        report(callback, i, steps, x, sigmas[i], denoised)
        x = denoised
        if i < len(ratios):
            x = upscale(x, round(width * ratios[i]), round(height * ratios[i]), upscale_method)
        if sigmas[i + 1] > 0:
            noise = torch.randn(tuple(x.shape), dtype=x.dtype, generator=generator).to(x.device)
            x = x + sigmas[i + 1] * noise
    return x


@torch.no_grad()
def sample_euler_pp(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """SamplerEulerCFG++ "alternative": an Euler step whose direction swaps the guided prediction in x for the
    unconditional one, d = (x − D + D_uncond − D) / sigma (ComfyUI's sample_euler_pp; CFG++'s first form)."""
    steps = len(sigmas) - 1
    with capture_uncond() as uncond:
        for i in range(steps):
            denoised = call_model(model, x, sigmas[i], extra_args)
            d = to_d(x - denoised + uncond.latest(denoised), sigmas[i], denoised)
            report(callback, i, steps, x, sigmas[i], denoised)
            x = x + d * (sigmas[i + 1] - sigmas[i])
    return x
