"""Noise schedules: functions returning float32 sigma tensors, decreasing, ending in 0.

Each follows ComfyUI's scheduler of the same name (``comfy/samplers.py``), including its quirks where they change
the numbers (ddim_uniform's step count, the discard-penultimate rule), so a workflow gives the same sigmas here.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
import scipy.stats
import torch
from torch import Tensor

from diffusion.model_sampling import DiscreteSampling

SchedulerName = Literal[
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic", "kl_optimal"
]
# ComfyUI's current order; the UI shows the first as the default.
SCHEDULER_NAMES: tuple[str, ...] = get_args(SchedulerName)

# Samplers whose last step is a two-stage step that cannot end at a tiny sigma: ComfyUI computes steps + 1 sigmas
# and drops the second to last, so the final step goes straight from a moderate sigma to 0.
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


class UnknownSchedulerError(ValueError):
    """The scheduler name is not one of SCHEDULER_NAMES."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULER_NAMES)}")
        self.name = name


class ScheduleError(ValueError):
    """A schedule argument is out of range (steps < 1, ...)."""


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise ScheduleError(f"steps must be >= 1, got {steps}")


def karras(steps: int, sigma_min: float, sigma_max: float, *, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) eq. 5: sigmas evenly spaced in sigma^(1/rho)."""
    _check_steps(steps)
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Sigmas evenly spaced in log sigma (the DPM-Solver "logSNR" spacing, Lu et al. 2022)."""
    _check_steps(steps)
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def kl_optimal(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """"Align Your Steps" KL-optimal schedule (Sabour et al. 2024, eq. 8): evenly spaced in arctan sigma.

    ComfyUI divides by steps - 1 and returns NaN for one step; here one step is simply [sigma_max, 0].
    """
    _check_steps(steps)
    if steps == 1:
        return torch.tensor([sigma_max, 0.0], dtype=torch.float32)
    w = torch.arange(steps, dtype=torch.float32) / (steps - 1)
    return _append_zero((w * math.atan(sigma_min) + (1 - w) * math.atan(sigma_max)).tan())


def normal(sampling: DiscreteSampling, steps: int) -> Tensor:
    """Timesteps evenly spaced from the model's last to first table entry, mapped to sigmas (Ho et al. 2020)."""
    _check_steps(steps)
    start, end = sampling.timestep(sampling.sigma_max), sampling.timestep(sampling.sigma_min)
    if math.isclose(float(sampling.sigma(end)), 0.0, abs_tol=1e-5):
        # A zero-terminal-SNR table already ends at sigma 0: take one more point instead of appending a 0.
        return sampling.sigma(torch.linspace(float(start), float(end), steps + 1))
    return _append_zero(sampling.sigma(torch.linspace(float(start), float(end), steps)))


def sgm_uniform(sampling: DiscreteSampling, steps: int) -> Tensor:
    """As ``normal`` but with steps + 1 points of which the last (t = 0) is dropped (Stability's SGM sampling)."""
    _check_steps(steps)
    start, end = sampling.timestep(sampling.sigma_max), sampling.timestep(sampling.sigma_min)
    return _append_zero(sampling.sigma(torch.linspace(float(start), float(end), steps + 1)[:-1]))


def simple(sampling: DiscreteSampling, steps: int) -> Tensor:
    """Every (T/steps)-th table sigma from the top, by truncated index (ComfyUI's "simple")."""
    _check_steps(steps)
    stride = len(sampling.sigmas) / steps
    picked = [float(sampling.sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.tensor(picked + [0.0], dtype=torch.float32)


def ddim_uniform(sampling: DiscreteSampling, steps: int) -> Tensor:
    """DDIM's uniform timestep skipping (Song et al. 2021): table indices 1, 1 + c, 1 + 2c, ... with c = T // steps.

    As in ComfyUI the count is whatever the stride gives (e.g. 7 sigmas for 6 steps) and a 0 ends the list.
    """
    _check_steps(steps)
    table = sampling.sigmas
    if math.isclose(float(table[1]), 0.0, abs_tol=1e-5):
        steps += 1
        picked: list[float] = []
    else:
        picked = [0.0]
    stride = max(len(table) // steps, 1)
    picked += [float(table[i]) for i in range(1, len(table), stride)]
    return torch.tensor(picked[::-1], dtype=torch.float32)


def beta(sampling: DiscreteSampling, steps: int, *, alpha: float = 0.6, beta: float = 0.6) -> Tensor:
    """Timesteps at Beta(alpha, beta) quantiles (Lee et al. 2024, "Beta Sampling is All You Need", arXiv 2407.12173)."""
    _check_steps(steps)
    last = len(sampling.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(scipy.stats.beta.ppf(quantiles, alpha, beta) * last)
    picked: list[float] = []
    previous = -1.0
    for t in timesteps:
        if t != previous:  # rounding can repeat a timestep: keep one
            picked.append(float(sampling.sigmas[int(t)]))
        previous = t
    return torch.tensor(picked + [0.0], dtype=torch.float32)


def linear_quadratic(
    sampling: DiscreteSampling, steps: int, *, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> Tensor:
    """Mochi's schedule (Genmo 2024): linear in 1 - sigma/sigma_max up to threshold_noise, then quadratic to 1."""
    _check_steps(steps)
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        n_lin = steps // 2 if linear_steps is None else linear_steps
        n_quad = steps - n_lin
        step_diff = n_lin - threshold_noise * steps
        quad_coef = step_diff / (n_lin * n_quad**2)
        lin_coef = threshold_noise / n_lin - 2 * step_diff / n_quad**2
        const = quad_coef * n_lin**2
        levels = [i * threshold_noise / n_lin for i in range(n_lin)]
        levels += [quad_coef * i**2 + lin_coef * i + const for i in range(n_lin, steps)]
        fractions = [1.0 - v for v in levels + [1.0]]
    return torch.tensor(fractions, dtype=torch.float32) * sampling.sigmas[-1]


def scheduler_sigmas(sampling: DiscreteSampling, scheduler: str, steps: int) -> Tensor:
    """The named schedule for ``steps`` steps on this model's table."""
    if scheduler == "simple":
        return simple(sampling, steps)
    if scheduler == "sgm_uniform":
        return sgm_uniform(sampling, steps)
    if scheduler == "karras":
        return karras(steps, sampling.sigma_min, sampling.sigma_max)
    if scheduler == "exponential":
        return exponential(steps, sampling.sigma_min, sampling.sigma_max)
    if scheduler == "ddim_uniform":
        return ddim_uniform(sampling, steps)
    if scheduler == "beta":
        return beta(sampling, steps)
    if scheduler == "normal":
        return normal(sampling, steps)
    if scheduler == "linear_quadratic":
        return linear_quadratic(sampling, steps)
    if scheduler == "kl_optimal":
        return kl_optimal(steps, sampling.sigma_min, sampling.sigma_max)
    raise UnknownSchedulerError(scheduler)


def _sampler_schedule(sampling: DiscreteSampling, scheduler: str, steps: int, sampler_name: str) -> Tensor:
    if sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        sigmas = scheduler_sigmas(sampling, scheduler, steps + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return scheduler_sigmas(sampling, scheduler, steps)


def sampler_sigmas(
    sampling: DiscreteSampling, scheduler: str, steps: int, *, denoise: float = 1.0, sampler_name: str
) -> Tensor:
    """The sigmas KSampler runs: the schedule, the discard-penultimate rule, and partial denoising.

    Args:
        sampling: the model's noise table.
        scheduler: one of SCHEDULER_NAMES.
        steps: number of sampler steps (>= 1).
        denoise: fraction of the schedule to run. Below 1 the schedule is computed for int(steps / denoise) steps
            and its last steps + 1 sigmas are kept; at 0 or below the result is empty (nothing to sample).
        sampler_name: the sampler, for the discard-penultimate rule.

    Returns:
        float32 sigmas, len steps + 1 (ddim_uniform may differ, as in ComfyUI), ending in 0; or empty.
    """
    if scheduler not in SCHEDULER_NAMES:
        raise UnknownSchedulerError(scheduler)
    _check_steps(steps)
    if denoise > 0.9999:
        return _sampler_schedule(sampling, scheduler, steps, sampler_name)
    if denoise <= 0.0:
        return torch.zeros([0], dtype=torch.float32)
    sigmas = _sampler_schedule(sampling, scheduler, int(steps / denoise), sampler_name)
    return sigmas[-(steps + 1):]


def advanced_sigmas(
    sampling: DiscreteSampling,
    scheduler: str,
    steps: int,
    *,
    sampler_name: str,
    start_at_step: int = 0,
    end_at_step: int = 10000,
    force_full_denoise: bool,
) -> Tensor:
    """KSamplerAdvanced's sigmas: the full schedule cut to [start_at_step, end_at_step].

    Args:
        force_full_denoise: when the schedule is cut short by end_at_step, end it at sigma 0 anyway
            (ComfyUI's return_with_leftover_noise = "disable").

    Returns:
        float32 sigmas; empty when start_at_step leaves no step (the caller returns the latent unchanged).
    """
    sigmas = sampler_sigmas(sampling, scheduler, steps, sampler_name=sampler_name)
    if end_at_step < len(sigmas) - 1:
        sigmas = sigmas[: end_at_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0.0
    if start_at_step >= len(sigmas) - 1:
        return torch.zeros([0], dtype=torch.float32)
    return sigmas[start_at_step:]
