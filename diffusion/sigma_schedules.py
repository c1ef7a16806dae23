"""The schedules of ComfyUI's custom-sampling scheduler nodes that KSampler's list lacks: functions returning float32
sigma tensors (decreasing; all but Laplace end in 0), with ComfyUI's numbers and quirks.

Formula schedules (k-diffusion's ``get_sigmas_*``): polyexponential, vp, laplace. Model schedules: basic (the
KSampler schedulers with BasicScheduler's denoise rule), sd_turbo. Table schedules (schedule_tables.py): Align Your
Steps, GITS, OptimalSteps — other step counts are log-linear interpolations of the published tables, and denoise
keeps the last round(steps · denoise) steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from diffusion.model_sampling import DiscreteSampling
from diffusion.schedule_tables import ALIGN_YOUR_STEPS, GITS, OPTIMAL_STEPS
from diffusion.schedules import ScheduleError, scheduler_sigmas

AYS_MODEL_TYPES: tuple[str, ...] = tuple(ALIGN_YOUR_STEPS)
OPTIMAL_STEPS_MODEL_TYPES: tuple[str, ...] = tuple(OPTIMAL_STEPS)
GITS_COEFFS: tuple[float, ...] = tuple(GITS)
# SD-Turbo was distilled on these 10 timesteps (999, 899, ..., 99); its scheduler takes `steps` of them.
SD_TURBO_TIMESTEPS = 10


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _empty() -> Tensor:
    return torch.zeros([0], dtype=torch.float32)


def polyexponential(steps: int, sigma_min: float, sigma_max: float, *, rho: float = 1.0) -> Tensor:
    """A polynomial in log sigma: log σ_i = log σmin + (1 − i/(n−1))^rho · (log σmax − log σmin)."""
    ramp = torch.linspace(1, 0, steps) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def vp(steps: int, *, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> Tensor:
    """The continuous VP-SDE schedule (Song et al. 2021): σ(t) = sqrt(exp(beta_d·t²/2 + beta_min·t) − 1), t from 1
    down to eps_s."""
    t = torch.linspace(1, eps_s, steps)
    return _append_zero(torch.sqrt(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t)))


def laplace(steps: int, sigma_min: float, sigma_max: float, *, mu: float = 0.0, beta: float = 0.5) -> Tensor:
    """Log sigma at Laplace(mu, beta) quantiles (Tiankai et al. 2024), clamped to [σmin, σmax].

    As in ComfyUI, no 0 is appended: the last sigma is σmin (or above), so sampling ends with noise left.
    """
    epsilon = 1e-5  # keeps log() finite at the two ends
    x = torch.linspace(0, 1, steps)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + epsilon)
    return torch.clamp(torch.exp(lmb), min=sigma_min, max=sigma_max)


def basic(sampling: DiscreteSampling, scheduler: str, steps: int, denoise: float = 1.0) -> Tensor:
    """BasicScheduler: the named KSampler schedule, the last steps + 1 sigmas of int(steps / denoise) steps.

    Unlike KSampler there is no discard-penultimate rule (the node does not know the sampler), and any denoise
    below 1 takes the partial path; denoise <= 0 gives no sigmas.
    """
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return _empty()
        total = int(steps / denoise)
    return scheduler_sigmas(sampling, scheduler, total).cpu()[-(steps + 1):]


def sd_turbo(sampling: DiscreteSampling, steps: int, denoise: float = 1.0) -> Tensor:
    """SD-Turbo's schedule: `steps` of the timesteps 999, 899, ..., 99, starting 10 − int(10·denoise) in, then 0."""
    start = SD_TURBO_TIMESTEPS - int(SD_TURBO_TIMESTEPS * denoise)
    timesteps = torch.flip(torch.arange(1, SD_TURBO_TIMESTEPS + 1) * 100 - 1, (0,))[start:start + steps]
    return _append_zero(sampling.sigma(timesteps))


def loglinear_interp(values: Sequence[float], count: int) -> np.ndarray:
    """``count`` points of a decreasing sequence, interpolated linearly in log value over an even grid (float64)."""
    xs = np.linspace(0, 1, len(values))
    ys = np.log(np.asarray(values, dtype=np.float64)[::-1])
    new_ys = np.interp(np.linspace(0, 1, count), xs, ys)
    return np.exp(new_ys)[::-1].copy()


def _from_table(levels: Sequence[float] | np.ndarray, steps: int, denoise: float) -> Tensor:
    """The last round(steps · denoise) steps of a steps + 1 table, ending in 0 (the table nodes' common tail)."""
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return _empty()
        total = round(steps * denoise)
    kept = list(levels)[-(total + 1):]
    kept[-1] = 0.0
    return torch.tensor(kept, dtype=torch.float32)


def _table_levels(table: Sequence[float], steps: int) -> Sequence[float] | np.ndarray:
    return table if steps + 1 == len(table) else loglinear_interp(table, steps + 1)


def _check(steps: int, minimum: int) -> None:
    if steps < minimum:
        raise ScheduleError(f"steps must be >= {minimum}, got {steps}")


def align_your_steps(model_type: str, steps: int, denoise: float = 1.0) -> Tensor:
    """Align Your Steps for "SD1", "SDXL" or "SVD" (the published 10-step schedule, interpolated otherwise)."""
    if model_type not in ALIGN_YOUR_STEPS:
        raise ScheduleError(f"unknown Align Your Steps model type {model_type!r}; expected one of {AYS_MODEL_TYPES}")
    _check(steps, 1)
    return _from_table(_table_levels(ALIGN_YOUR_STEPS[model_type], steps), steps, denoise)


def optimal_steps(model_type: str, steps: int, denoise: float = 1.0) -> Tensor:
    """OptimalSteps for "FLUX", "Wan" or "Chroma" (flow-matching sigmas in [0, 1])."""
    if model_type not in OPTIMAL_STEPS:
        raise ScheduleError(f"unknown OptimalSteps model type {model_type!r}; expected one of "
                            f"{OPTIMAL_STEPS_MODEL_TYPES}")
    _check(steps, 1)
    return _from_table(_table_levels(OPTIMAL_STEPS[model_type], steps), steps, denoise)


def gits(coeff: float, steps: int, denoise: float = 1.0) -> Tensor:
    """GITS for SD1.x: the searched schedule of `coeff` (0.80..1.50 in steps of 0.05, compared after rounding to 2
    decimals) for 2..20 steps; more steps interpolate its 20-step schedule."""
    table = GITS.get(round(coeff, 2))
    if table is None:
        raise ScheduleError(f"GITS has no schedule for coeff {coeff}; expected one of {GITS_COEFFS}")
    _check(steps, 2)
    levels = table[steps - 2] if steps <= len(table) + 1 else loglinear_interp(table[-1], steps + 1)
    return _from_table(levels, steps, denoise)
