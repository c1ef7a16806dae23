"""CFG++ samplers (Chung et al. 2024, "CFG++: Manifold-Constrained Classifier Free Guidance for Diffusion
Models") and how a sampler sees the unconditional prediction they need.

A CFG++ step moves the latent along the guided x0 estimate but re-noises it along the *unconditional* one, which keeps
the sample on the data manifold at low guidance scales (ComfyUI's ``*_cfg_pp`` samplers are used with cfg ~ 1-2).
The unconditional x0 is not what the denoiser returns, so it travels beside it, as ComfyUI's post-CFG hook does:

- the sampler evaluates the model inside ``with capture_uncond() as uncond:`` and reads ``uncond.latest(like)``
  right after a model call (the value from the latest call, as ComfyUI's hook variable holds it);
- a guided denoiser calls ``publish_uncond(uncond_x0)`` after each evaluation (``guidance.GuidedDenoiser`` does; a
  custom guider combining predictions itself should too). ``uncond_wanted()`` tells it to evaluate the negative
  even at cfg 1, where plain CFG skips it (ComfyUI's ``disable_cfg1_optimization``).

Nothing changes for other samplers: outside ``capture_uncond`` publishing is a no-op and cfg 1 still skips the
negative. A model that publishes nothing (a bare denoiser, a guider without a negative) gives zeros, which is what
ComfyUI's hook receives from a guider with no negative conditioning.

Files: the Euler and DPM-Solver++ CFG++ samplers are here; ``res_multistep.py`` and ``gradient_estimation.py`` hold
their families' CFG++ variants.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

from diffusion.noise import NoiseSampler
from diffusion.samplers.common import (
    DenoiserFn,
    StepCallback,
    ancestral_step,
    call_model,
    exp_neg,
    half_log_snr,
    model_sampling_of,
    neg_log,
    report,
    step_noise,
    to_d,
)


class UncondCapture:
    """The unconditional x0 prediction published by the latest model evaluation (None until one publishes)."""

    def __init__(self) -> None:
        self._latest: Tensor | None = None

    def record(self, uncond: Tensor) -> None:
        self._latest = uncond

    def latest(self, like: Tensor) -> Tensor:
        """The latest unconditional prediction, or zeros shaped like ``like`` when none was published."""
        return self._latest if self._latest is not None else torch.zeros_like(like)


_active: ContextVar[UncondCapture | None] = ContextVar("chisel_uncond_capture", default=None)


@contextmanager
def capture_uncond() -> Iterator[UncondCapture]:
    """Collect the unconditional predictions that model evaluations inside the block publish."""
    capture = UncondCapture()
    token = _active.set(capture)
    try:
        yield capture
    finally:
        _active.reset(token)


def uncond_wanted() -> bool:
    """Whether a CFG++ sampler is listening: a guided denoiser then evaluates the negative even at cfg 1."""
    return _active.get() is not None


def publish_uncond(uncond: Tensor) -> None:
    """Hand the unconditional x0 prediction of this evaluation to a listening CFG++ sampler (no-op otherwise)."""
    capture = _active.get()
    if capture is not None:
        capture.record(uncond)


def alpha_of(sigma: Tensor, model_sampling: object | None = None) -> Tensor:
    """alpha = sigma·exp(lambda): 1 for VE models, 1 − σ for flow ones, computed the way ComfyUI does (float32
    rounding included; lambda is common.half_log_snr)."""
    return sigma * half_log_snr(sigma, model_sampling).exp()


@torch.no_grad()
def sample_euler_ancestral_cfg_pp(
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
    """Ancestral Euler with CFG++: the DDIM step lands on the guided x0 but re-noises along the unconditional
    prediction's noise direction (Chung et al. 2024, Algorithm 2 with the ancestral eta of Song et al. 2021)."""
    adds_noise = eta > 0 and s_noise > 0
    noise_sampler = step_noise(x, noise_sampler, seed) if adds_noise else None
    sampling = model_sampling_of(model)  # a flow model's alpha is 1 − σ (ComfyUI's lambda_fn of the model sampling)
    steps = len(sigmas) - 1
    with capture_uncond() as uncond:
        for i in range(steps):
            denoised = call_model(model, x, sigmas[i], extra_args)
            uncond_denoised = uncond.latest(denoised)
            report(callback, i, steps, x, sigmas[i], denoised)
            if sigmas[i + 1] == 0:
                x = denoised
                continue
            alpha_s, alpha_t = alpha_of(sigmas[i], sampling), alpha_of(sigmas[i + 1], sampling)
            d = to_d(x, sigmas[i], alpha_s * uncond_denoised)  # the unconditional noise direction
            sigma_down, sigma_up = ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta)
            x = alpha_t * denoised + (alpha_t * sigma_down) * d
            if noise_sampler is not None:
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_euler_cfg_pp(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Euler with CFG++ (Chung et al. 2024, Algorithm 2): the deterministic (eta 0) ancestral CFG++ step."""
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=extra_args, callback=callback, eta=0.0,
                                         s_noise=0.0)


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(
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
    """DPM-Solver++(2S) ancestral with CFG++, as ComfyUI 0.8.0 runs it.

    Each exponential-integrator stage starts from x shifted by the guidance difference (guided − unconditional
    x0) of the latest evaluation, so the second stage uses the midpoint's unconditional prediction with the first
    evaluation's guided one; the last step to sigma 0 returns the guided x0.
    """
    noise_sampler = step_noise(x, noise_sampler, seed)
    steps = len(sigmas) - 1
    with capture_uncond() as uncond:
        for i in range(steps):
            denoised = call_model(model, x, sigmas[i], extra_args)
            report(callback, i, steps, x, sigmas[i], denoised)
            sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
            if sigma_down == 0:
                x = denoised + to_d(x, sigmas[i], uncond.latest(denoised)) * sigma_down
            else:
                t, t_next = neg_log(sigmas[i]), neg_log(sigma_down)
                h = t_next - t
                s = t + 0.5 * h
                x_2 = (exp_neg(s) / exp_neg(t)) * (x + (denoised - uncond.latest(denoised))) \
                    - (-h * 0.5).expm1() * denoised
                denoised_2 = call_model(model, x_2, exp_neg(s), extra_args)
                x = (exp_neg(t_next) / exp_neg(t)) * (x + (denoised - uncond.latest(denoised))) \
                    - (-h).expm1() * denoised_2
            if sigmas[i + 1] > 0:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """DPM-Solver++(2M) with CFG++: the multistep update of Lu et al. 2022b on the unconditional x0 history, plus
    the current guidance difference."""
    steps = len(sigmas) - 1
    old_uncond: Tensor | None = None
    with capture_uncond() as uncond:
        for i in range(steps):
            denoised = call_model(model, x, sigmas[i], extra_args)
            uncond_denoised = uncond.latest(denoised)
            report(callback, i, steps, x, sigmas[i], denoised)
            t, t_next = neg_log(sigmas[i]), neg_log(sigmas[i + 1])
            h = t_next - t
            mix = -torch.exp(-h) * uncond_denoised
            if old_uncond is not None and sigmas[i + 1] != 0:
                r = (t - neg_log(sigmas[i - 1])) / h
                mix = mix - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
            x = denoised + mix + torch.exp(-h) * x
            old_uncond = uncond_denoised
    return x
