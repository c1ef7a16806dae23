"""Model sampling of rectified-flow models (SD3/SD3.5, AuraFlow, Flux.1): their noise tables, the sigma <-> timestep
conversions and the CONST wrapper that turns a velocity-predicting network into a denoiser.

Rectified flow (Liu et al. 2022; Esser et al. 2024, "Scaling Rectified Flow Transformers") trains on the straight
path x_σ = (1 − σ)·x0 + σ·noise, σ in (0, 1], and the network predicts the velocity v = noise − x0, so
x0 = x_σ − σ·v. The samplers' interface ``D(x, sigma) -> x0`` (model_sampling.Denoiser) then works unchanged: these
classes offer the same methods as ``model_sampling.DiscreteSampling`` (calculate_input, timestep, denoised,
noise_scaling, inverse_noise_scaling, percent_to_sigma, the sigmas table), so every sampler and scheduler runs on
them.

The numbers are ComfyUI's (``comfy/model_sampling.py``): ``ModelSamplingDiscreteFlow`` (SD3: shift 3, timestep =
σ·1000; AuraFlow: multiplier 1) and ``ModelSamplingFlux`` (σ(t) = e^μ / (e^μ + 1/t − 1), timestep = σ, 10,000
table entries), with the ``CONST`` formulas. Tables are built in float32 from ``torch.arange`` as there, so the
schedules agree with ComfyUI's to float32 rounding (tests/fixtures/comfyui_numerics_flow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from diffusion.model_sampling import ModelSamplingError, _per_sample

SD3_SHIFT = 3.0
"""SD3 / SD3.5's default shift (ComfyUI's supported_models.SD3)."""
FLOW_TIMESTEPS = 1000
FLOW_MULTIPLIER = 1000.0
AURAFLOW_MULTIPLIER = 1.0
"""ModelSamplingAuraFlow: ModelSamplingSD3's table with timestep = σ (multiplier 1)."""
FLUX_TIMESTEPS = 10000
FLUX_DEV_SHIFT = 1.15
"""Flux dev's default μ (ComfyUI's supported_models.Flux), the ModelSamplingFlux node's max_shift."""
FLUX_SCHNELL_SHIFT = 1.0
"""Flux schnell's default μ (FluxSchnell.sampling_settings). flux_time_shift(1.0, ...) is *not* the identity."""
FLUX_BASE_SHIFT = 0.5
FLUX_BASE_TOKENS = 256
FLUX_MAX_TOKENS = 4096
"""The ModelSamplingFlux node interpolates μ linearly between base_shift at 256 and max_shift at 4096 latent
tokens ((w·h)/(8·8·2·2); ComfyUI 0.8.0's x2 = 4096, so 1024² gives exactly max_shift)."""


def time_snr_shift(shift: float, t: Tensor) -> Tensor:
    """σ = shift·t / (1 + (shift − 1)·t) (SD3's timestep shift; 1 is the identity)."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def flux_time_shift(mu: float, t: Tensor | float) -> Tensor | float:
    """σ = e^μ / (e^μ + (1/t − 1)) (Flux's resolution-dependent shift, with exponent 1)."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** 1.0)


def flux_shift_for(width: int, height: int, *, max_shift: float = FLUX_DEV_SHIFT,
                   base_shift: float = FLUX_BASE_SHIFT) -> float:
    """μ for an image of width × height pixels, as ComfyUI 0.8.0's ModelSamplingFlux node computes it."""
    slope = (max_shift - base_shift) / (FLUX_MAX_TOKENS - FLUX_BASE_TOKENS)
    intercept = base_shift - slope * FLUX_BASE_TOKENS
    return (width * height / (8 * 8 * 2 * 2)) * slope + intercept


class _ConstFlow:
    """ComfyUI's CONST formulas, shared by both flow tables (they need ``sigmas`` and ``sigma_max``)."""

    prediction = "flow"
    sigmas: Tensor

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def num_timesteps(self) -> int:
        return len(self.sigmas)

    def reaches_max(self, sigma0: float) -> bool:
        """Whether sampling starts from pure noise (ComfyUI's max_denoise test; CONST ignores it)."""
        return math.isclose(self.sigma_max, sigma0, rel_tol=1e-5) or sigma0 > self.sigma_max

    def calculate_input(self, sigma: Tensor | float, x: Tensor) -> Tensor:
        """The network input: x itself (no preconditioning on the flow path)."""
        return x

    def denoised(self, sigma: Tensor | float, model_output: Tensor, x: Tensor) -> Tensor:
        """x0 = x − σ·v."""
        return x - model_output * _per_sample(sigma, model_output)

    def noise_scaling(self, sigma0: Tensor | float, noise: Tensor, latent: Tensor, *, max_denoise: bool = False
                      ) -> Tensor:
        """x_σ = σ·noise + (1 − σ)·x0 (max_denoise changes nothing on the straight path)."""
        s = _per_sample(sigma0, noise)
        return s * noise + (1.0 - s) * latent

    def inverse_noise_scaling(self, sigma: Tensor | float, latent: Tensor) -> Tensor:
        """latent / (1 − σ): undoes noise_scaling's (1 − σ) at the last sigma (the identity at σ = 0)."""
        return latent / (1.0 - _per_sample(sigma, latent))


@dataclass(frozen=True, eq=False)
class ShiftedFlowSampling(_ConstFlow):
    """SD3 / SD3.5 / AuraFlow: σ(t) = time_snr_shift(shift, t / multiplier), timestep(σ) = σ·multiplier, a table of
    1000 entries σ((1..1000)/1000·multiplier) (ComfyUI's ModelSamplingDiscreteFlow + CONST)."""

    shift: float = SD3_SHIFT
    multiplier: float = FLOW_MULTIPLIER
    sigmas: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.shift > 0 and self.multiplier > 0):
            raise ModelSamplingError(f"shift and multiplier must be positive, got {self.shift}, {self.multiplier}")
        steps = (torch.arange(1, FLOW_TIMESTEPS + 1, 1) / FLOW_TIMESTEPS) * self.multiplier  # float32
        object.__setattr__(self, "sigmas", self.sigma(steps))

    def timestep(self, sigma: Tensor | float) -> Tensor:
        return torch.as_tensor(sigma, dtype=torch.float32) * self.multiplier

    def sigma(self, timestep: Tensor | float) -> Tensor:
        return time_snr_shift(self.shift, torch.as_tensor(timestep, dtype=torch.float32) / self.multiplier)

    def percent_to_sigma(self, percent: float) -> float:
        """σ after ``percent`` of the denoising: 1 at 0, 0 at 1 (for start/end_percent)."""
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(time_snr_shift(self.shift, 1.0 - percent))  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class FluxSampling(_ConstFlow):
    """Flux.1: σ(t) = flux_time_shift(μ, t), timestep(σ) = σ (the network scales it by 1000 itself), a table of
    10,000 entries σ((1..10000)/10000) (ComfyUI's ModelSamplingFlux + CONST)."""

    shift: float = FLUX_DEV_SHIFT
    sigmas: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.shift):
            raise ModelSamplingError(f"Flux's shift (mu) must be finite, got {self.shift}")
        steps = torch.arange(1, FLUX_TIMESTEPS + 1, 1) / FLUX_TIMESTEPS  # float32
        object.__setattr__(self, "sigmas", self.sigma(steps))

    def timestep(self, sigma: Tensor | float) -> Tensor:
        return torch.as_tensor(sigma, dtype=torch.float32)

    def sigma(self, timestep: Tensor | float) -> Tensor:
        return flux_time_shift(self.shift, torch.as_tensor(timestep, dtype=torch.float32))  # type: ignore[return-value]

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(flux_time_shift(self.shift, 1.0 - percent))


FlowModelSampling = ShiftedFlowSampling | FluxSampling
