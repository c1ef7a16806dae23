"""The scheduler nodes of custom sampling: each gives SIGMAS (a 1-D float32 tensor on the CPU) with ComfyUI's
numbers (diffusion/schedules.py, diffusion/sigma_schedules.py). Node classes carry comments rather than
docstrings: a docstring would become the description, which ComfyUI leaves empty.
"""

from __future__ import annotations

from torch import Tensor

from diffusion import schedules, sigma_schedules
from diffusion.handles import Model
from diffusion.schedules import SCHEDULER_NAMES
from nodes.context import RunContext
from nodes.inputs import Combo, Float, Int, Link
from nodes.registry import Node, Output

CATEGORY = "sampling/custom_sampling/schedulers"
# ComfyUI's defaults for the formula schedulers: SD1.x/SDXL's discrete table ends (rounded).
SIGMA_MAX_DEFAULT = 14.614642
SIGMA_MIN_DEFAULT = 0.0291675


def _sigma_max() -> Float:
    return Float(SIGMA_MAX_DEFAULT, min=0.0, max=5000.0, step=0.01, round=False)


def _sigma_min() -> Float:
    return Float(SIGMA_MIN_DEFAULT, min=0.0, max=5000.0, step=0.01, round=False)


def _steps(default: int = 20, minimum: int = 1, maximum: int = 10000) -> Int:
    return Int(default, min=minimum, max=maximum)


def _denoise() -> Float:
    return Float(1.0, min=0.0, max=1.0, step=0.01)


# One of KSampler's schedulers for this model (no discard-penultimate rule: the node does not know the sampler).
class BasicScheduler(Node):
    category = CATEGORY
    v3_schema = True
    model = Link("MODEL")
    scheduler = Combo(SCHEDULER_NAMES)
    steps = _steps()
    denoise = _denoise()
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, scheduler: str, steps: int, denoise: float) -> tuple[Tensor]:
        return (sigma_schedules.basic(model.sampling, scheduler, steps, denoise),)


# Karras et al. (2022): evenly spaced in sigma^(1/rho).
class KarrasScheduler(Node):
    category = CATEGORY
    v3_schema = True
    steps = _steps()
    sigma_max = _sigma_max()
    sigma_min = _sigma_min()
    rho = Float(7.0, min=0.0, max=100.0, step=0.01, round=False)
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[Tensor]:
        return (schedules.karras(steps, sigma_min, sigma_max, rho=rho),)


# Evenly spaced in log sigma.
class ExponentialScheduler(Node):
    category = CATEGORY
    v3_schema = True
    steps = _steps()
    sigma_max = _sigma_max()
    sigma_min = _sigma_min()
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, steps: int, sigma_max: float, sigma_min: float) -> tuple[Tensor]:
        return (schedules.exponential(steps, sigma_min, sigma_max),)


# Log sigma polynomial (degree rho) in the step fraction; rho 1 is the exponential schedule.
class PolyexponentialScheduler(Node):
    category = CATEGORY
    v3_schema = True
    steps = _steps()
    sigma_max = _sigma_max()
    sigma_min = _sigma_min()
    rho = Float(1.0, min=0.0, max=100.0, step=0.01, round=False)
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[Tensor]:
        return (sigma_schedules.polyexponential(steps, sigma_min, sigma_max, rho=rho),)


# The continuous VP-SDE schedule.
class VPScheduler(Node):
    category = CATEGORY
    v3_schema = True
    steps = _steps()
    beta_d = Float(19.9, min=0.0, max=5000.0, step=0.01, round=False)
    beta_min = Float(0.1, min=0.0, max=5000.0, step=0.01, round=False)
    eps_s = Float(0.001, min=0.0, max=1.0, step=0.0001, round=False)
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, steps: int, beta_d: float, beta_min: float, eps_s: float) -> tuple[Tensor]:
        return (sigma_schedules.vp(steps, beta_d=beta_d, beta_min=beta_min, eps_s=eps_s),)


# Timesteps at Beta(alpha, beta) quantiles of the model's table.
class BetaSamplingScheduler(Node):
    category = CATEGORY
    v3_schema = True
    model = Link("MODEL")
    steps = _steps()
    alpha = Float(0.6, min=0.0, max=50.0, step=0.01, round=False)
    beta = Float(0.6, min=0.0, max=50.0, step=0.01, round=False)
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, steps: int, alpha: float, beta: float) -> tuple[Tensor]:
        return (schedules.beta(model.sampling, steps, alpha=alpha, beta=beta),)


# Log sigma at Laplace(mu, beta) quantiles, clamped to [sigma_min, sigma_max] (no final 0).
class LaplaceScheduler(Node):
    category = CATEGORY
    v3_schema = True
    steps = _steps()
    sigma_max = _sigma_max()
    sigma_min = _sigma_min()
    mu = Float(0.0, min=-10.0, max=10.0, step=0.1, round=False)
    beta = Float(0.5, min=0.0, max=10.0, step=0.1, round=False)
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, steps: int, sigma_max: float, sigma_min: float, mu: float, beta: float
            ) -> tuple[Tensor]:
        return (sigma_schedules.laplace(steps, sigma_min, sigma_max, mu=mu, beta=beta),)


# SD-Turbo's timesteps 999, 899, ..., 99.
class SDTurboScheduler(Node):
    category = CATEGORY
    v3_schema = True
    model = Link("MODEL")
    steps = _steps(1, 1, 10)
    denoise = Float(1.0, min=0, max=1.0, step=0.01)
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, steps: int, denoise: float) -> tuple[Tensor]:
        return (sigma_schedules.sd_turbo(model.sampling, steps, denoise),)


# Align Your Steps: NVIDIA's optimized schedules for SD1.x, SDXL and SVD.
class AlignYourStepsScheduler(Node):
    category = CATEGORY
    v3_schema = True
    model_type = Combo(sigma_schedules.AYS_MODEL_TYPES)
    steps = _steps(10)
    denoise = _denoise()
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, model_type: str, steps: int, denoise: float) -> tuple[Tensor]:
        return (sigma_schedules.align_your_steps(model_type, steps, denoise),)


# GITS: searched schedules for SD1.x per coefficient.
class GITSScheduler(Node):
    category = CATEGORY
    v3_schema = True
    coeff = Float(1.2, min=0.8, max=1.5, step=0.05)
    steps = _steps(10, 2, 1000)
    denoise = _denoise()
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, coeff: float, steps: int, denoise: float) -> tuple[Tensor]:
        return (sigma_schedules.gits(coeff, steps, denoise),)


# OptimalSteps: searched schedules for the flow-matching models FLUX, Wan and Chroma.
class OptimalStepsScheduler(Node):
    category = CATEGORY
    v3_schema = True
    model_type = Combo(sigma_schedules.OPTIMAL_STEPS_MODEL_TYPES)
    steps = _steps(20, 3, 1000)
    denoise = _denoise()
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, model_type: str, steps: int, denoise: float) -> tuple[Tensor]:
        return (sigma_schedules.optimal_steps(model_type, steps, denoise),)


NODES = (BasicScheduler, KarrasScheduler, ExponentialScheduler, PolyexponentialScheduler, VPScheduler,
         BetaSamplingScheduler, LaplaceScheduler, SDTurboScheduler, AlignYourStepsScheduler, GITSScheduler,
         OptimalStepsScheduler)
