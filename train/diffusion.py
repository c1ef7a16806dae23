"""The training side of SD1's diffusion: noising latents on the 1000-step scaled-linear table, the loss weights, and
a small Euler sampler with classifier-free guidance for checks during training.

The noise table is the library's (diffusion.model_sampling), so what is trained is what the samplers expect.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffusion.model_sampling import DiscreteSampling
from diffusion.schedules import normal


def alphas_cumprod(sampling: DiscreteSampling) -> Tensor:
    """ᾱ_t for t = 0..T-1 from the table's sigmas (sigma² = (1 - ᾱ) / ᾱ), float32 [T]."""
    return 1.0 / (1.0 + sampling.sigmas.double() ** 2).float()


def add_noise(x0: Tensor, noise: Tensor, t: Tensor, abar: Tensor) -> Tensor:
    """x_t = sqrt(ᾱ_t)·x0 + sqrt(1 - ᾱ_t)·eps (Ho et al. 2020, eq. 4)."""
    a = abar[t].reshape(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def min_snr_weight(t: Tensor, abar: Tensor, gamma: float) -> Tensor:
    """Per-sample weight of the eps loss, min(SNR, gamma) / SNR (Hang et al. 2023, "Efficient Diffusion Training
    via Min-SNR Weighting Strategy"); SNR_t = ᾱ_t / (1 - ᾱ_t)."""
    snr = abar[t] / (1 - abar[t])
    return torch.clamp(snr, max=gamma) / snr


EpsModel = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(x_in [B, C, H, W], timesteps [B], context [B, T, W]) -> eps [B, C, H, W]."""


@torch.no_grad()
def sample_euler_cfg(
    eps_model: EpsModel,
    cond: Tensor,
    uncond: Tensor,
    noise: Tensor,
    *,
    sampling: DiscreteSampling,
    steps: int,
    cfg: float,
) -> Tensor:
    """Euler steps on the "normal" schedule with classifier-free guidance (Karras et al. 2022, Algorithm 2 without
    churn; Ho & Salimans 2022 for the guidance), for quick checks while training. Returns scaled latents x0."""
    sigmas = normal(sampling, steps)
    x = noise * (1.0 + sigmas[0] ** 2) ** 0.5  # the eps model's x_T has variance 1 + sigma_max² in the VE form
    both = torch.cat([uncond, cond])  # (2B, T, W)
    for i in range(steps):
        sigma = sigmas[i]
        x_in = torch.cat([x, x]) / (sigma**2 + 1) ** 0.5  # (2B, C, H, W), c_in scaling
        t = sampling.timestep(sigma).expand(x_in.shape[0])
        eps_u, eps_c = eps_model(x_in, t, both).float().chunk(2)
        eps = eps_u + cfg * (eps_c - eps_u)
        denoised = x - sigma * eps
        d = (x - denoised) / sigma
        x = x + d * (sigmas[i + 1] - sigma)
    return x
