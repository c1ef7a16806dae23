"""What every sampler shares: the denoiser and callback types, the step report, and small pieces of math."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from diffusion.noise import BrownianNoiseSampler, NoiseSampler, StepNoiseSampler


class DenoiserFn(Protocol):
    """The k-diffusion model interface: D(x, sigma, **extra) -> x0, with sigma of shape (B,)."""

    def __call__(self, x: Tensor, sigma: Tensor, **extra: Any) -> Tensor: ...


@dataclass(frozen=True, eq=False)
class SamplerStep:
    """What a sampler reports after the model call of each step (for progress, previews and interrupts).

    Attributes:
        index: 0-based step number.
        total: number of steps, or None where the sampler chooses its steps as it goes (dpm_adaptive).
        x: the sampler's current latent (before this step's update).
        sigma: the noise level the model was evaluated at.
        denoised: the model's x0 estimate at this step.
    """

    index: int
    total: int | None
    x: Tensor
    sigma: float
    denoised: Tensor


# The caller stops sampling by raising from the callback (e.g. on an interrupt).
StepCallback = Callable[[SamplerStep], None]


class MissingNoiseError(ValueError):
    """A stochastic sampler was given neither a noise_sampler nor a seed to build one."""


def report(callback: StepCallback | None, index: int, total: int | None, x: Tensor, sigma: Tensor | float,
           denoised: Tensor) -> None:
    if callback is not None:
        callback(SamplerStep(index=index, total=total, x=x, sigma=float(sigma), denoised=denoised))


def call_model(model: DenoiserFn, x: Tensor, sigma: Tensor, extra_args: Mapping[str, Any] | None) -> Tensor:
    """D(x, sigma) with sigma repeated over the batch, as the model interface expects."""
    return model(x, sigma * x.new_ones([x.shape[0]]), **(extra_args or {}))


def per_sample(value: Tensor | float, like: Tensor) -> Tensor:
    """A scalar or (B,) value broadcastable against a (B, ...) tensor."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value if value.ndim == 0 else value.reshape(value.shape[:1] + (1,) * (like.ndim - 1))


def to_d(x: Tensor, sigma: Tensor | float, denoised: Tensor) -> Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x − D(x, sigma)) / sigma (Karras et al. 2022, eq. 3)."""
    return (x - denoised) / per_sample(sigma, x)


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split a step sigma_from -> sigma_to into a deterministic step down to sigma_down plus fresh noise sigma_up.

    sigma_down² + sigma_up² = sigma_to², and eta = 1 gives the DDPM posterior variance (Ho et al. 2020); eta = 0
    is the deterministic (DDIM-like) step.
    """
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    # Python's min(sigma_to, sigma_up), as k-diffusion takes it: sigma_to unless sigma_up is smaller, so a NaN
    # sigma_up (sigma_from infinite: euler_ancestral_cfg_pp at a flow model's σ 1, where alpha is 0) gives sigma_to.
    sigma_up = torch.where(sigma_up < sigma_to, sigma_up, sigma_to)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def churn(x: Tensor, sigma: Tensor, *, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float, steps: int,
          noise_sampler: NoiseSampler | None) -> tuple[Tensor, Tensor]:
    """Karras et al. (2022), Algorithm 2 lines 4-6: raise the noise level to sigma_hat = sigma·(1 + gamma).

    Returns (x, sigma_hat); with s_churn = 0 (the default everywhere in ComfyUI) both come back unchanged.
    """
    gamma = min(s_churn / steps, math.sqrt(2.0) - 1) if s_tmin <= float(sigma) <= s_tmax else 0.0
    if gamma <= 0:
        return x, sigma
    if noise_sampler is None:
        raise MissingNoiseError("s_churn > 0 adds noise: pass a noise_sampler or a seed")
    sigma_hat = sigma * (gamma + 1)
    eps = noise_sampler(sigma, sigma_hat) * s_noise
    return x + eps * (sigma_hat**2 - sigma**2) ** 0.5, sigma_hat


def step_noise(x: Tensor, noise_sampler: NoiseSampler | None, seed: int | None) -> NoiseSampler:
    """The given noise sampler, or the seeded per-step CPU noise (ComfyUI's default for ancestral samplers)."""
    if noise_sampler is not None:
        return noise_sampler
    if seed is None:
        raise MissingNoiseError("this sampler adds noise each step: pass a noise_sampler or a seed")
    return StepNoiseSampler(x, seed)


def brownian_noise(x: Tensor, sigmas: Tensor, noise_sampler: NoiseSampler | None, seed: int | None) -> NoiseSampler:
    """The given noise sampler, or a seeded Brownian tree over the schedule's positive sigma range (SDE samplers)."""
    if noise_sampler is not None:
        return noise_sampler
    if seed is None:
        raise MissingNoiseError("this SDE sampler needs a noise_sampler or a seed for its Brownian tree")
    return BrownianNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed)


# ---- the model's sampling kind (ComfyUI branches on ``isinstance(model_sampling, CONST)``) ------------------------
# A denoiser may carry its noise table as ``model.model_sampling`` (sampling_pipeline.run_denoiser's SamplingDenoiser
# does; ComfyUI reads ``model.inner_model.model_patcher.get_model_object("model_sampling")``). A bare denoiser
# function has none and is treated as a discrete (VE: eps / v) model, so such callers see no change.
FIRST_SIGMA_OFFSET_PERCENT = 1e-4
"""ComfyUI's offset_first_sigma_for_snr: a flow schedule starting at sigma 1 (log-SNR −inf) starts at this percent."""


def model_sampling_of(model: object) -> Any | None:
    """The noise table a denoiser carries (``model.model_sampling``), or None for a bare denoiser function."""
    return getattr(model, "model_sampling", None)


def is_flow(model_sampling: object | None) -> bool:
    """Whether the model is a rectified-flow one (ComfyUI's CONST model sampling: x_σ = (1 − σ)·x0 + σ·noise)."""
    return getattr(model_sampling, "prediction", None) == "flow"


def half_log_snr(sigma: Tensor, model_sampling: object | None = None) -> Tensor:
    """lambda = log(alpha / sigma): −log σ for discrete (VE) models, log((1 − σ) / σ) = −logit σ for flow ones
    (ComfyUI's sigma_to_half_log_snr)."""
    if is_flow(model_sampling):
        return sigma.logit().neg()
    return sigma.log().neg()


def sigma_of_half_log_snr(lam: Tensor, model_sampling: object | None = None) -> Tensor:
    """The inverse of half_log_snr: e^−lambda, or sigmoid(−lambda) for flow models (half_log_snr_to_sigma)."""
    if is_flow(model_sampling):
        return lam.neg().sigmoid()
    return lam.neg().exp()


def offset_first_sigma(sigmas: Tensor, model_sampling: object | None,
                       percent_offset: float = FIRST_SIGMA_OFFSET_PERCENT) -> Tensor:
    """A flow schedule whose first sigma is >= 1 (infinite log-SNR) starts at percent_to_sigma(1e-4) instead; other
    schedules come back as they are (ComfyUI's offset_first_sigma_for_snr; a copy, the input is not changed)."""
    if len(sigmas) <= 1 or not is_flow(model_sampling) or not sigmas[0] >= 1:
        return sigmas
    sigmas = sigmas.clone()
    sigmas[0] = model_sampling.percent_to_sigma(percent_offset)  # type: ignore[union-attr]
    return sigmas


def flow_ancestral_step(sigma: Tensor, sigma_next: Tensor, eta: float) -> tuple[Tensor, Tensor, Tensor]:
    """The rectified-flow ancestral split of a step sigma -> sigma_next (ComfyUI's *_ancestral_RF samplers).

    Returns (sigma_down, alpha_ratio, renoise): step deterministically down to sigma_down = sigma_next·(1 +
    (sigma_next/sigma − 1)·eta), then x ← alpha_ratio·x + renoise·noise with alpha_ratio = (1 − sigma_next) /
    (1 − sigma_down) lands back on the straight path at sigma_next.
    """
    sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    alpha_next = 1 - sigma_next
    alpha_down = 1 - sigma_down
    renoise = (sigma_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2) ** 0.5
    return sigma_down, alpha_next / alpha_down, renoise


def neg_log(sigma: Tensor) -> Tensor:
    """t = −log sigma, the DPM-Solver time variable (half the log-SNR for sigma_data 1)."""
    return sigma.log().neg()


def exp_neg(t: Tensor) -> Tensor:
    """sigma = exp(−t), the inverse of neg_log."""
    return t.neg().exp()
