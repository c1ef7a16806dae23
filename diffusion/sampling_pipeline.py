"""One KSampler run on a latent: noise scaling, guidance, inpainting and the sampler, as ComfyUI's
``KSAMPLER.sample`` / ``CFGGuider`` / ``KSamplerX0Inpaint`` do it.

The caller owns the latent format: ``latent`` is already in the model's space (raw VAE latent × the family's
scale factor; ComfyUI applies that only to a nonzero latent, so an empty latent stays 0), and the result is in the
same space.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusion.guidance import ExtraConds, GuidedDenoiser, prepare_conditioning
from diffusion.model_options import NO_OPTIONS, ModelOptions, PatchFn, with_sample_sigmas
from diffusion.model_sampling import ApplyModel, Denoiser, DiscreteSampling
from diffusion.noise import SEED_MAX, initial_noise
from diffusion.samplers import DenoiserFn, StepCallback, get_sampler, run_sampler
from diffusion.timeline import SamplingObserver, observed_callback
from diffusion.values import Conditioning


class SamplingInputError(ValueError):
    """Inputs of a sampling run that do not fit together (shapes, mask, sigmas)."""


def prepare_denoise_mask(mask: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """A noise mask ([h, w], [M, h, w] or [M, 1, h, w], any resolution) as [B, C, H, W] for a latent of ``shape``.

    Bilinear resize to the latent size, repeated over channels and (cyclically) over the batch.
    """
    if mask.ndim < 2:
        raise SamplingInputError(f"denoise mask must have height and width, got shape {tuple(mask.shape)}")
    batch, channels, height, width = shape
    m = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])  # (M, 1, h, w)
    m = F.interpolate(m, size=(height, width), mode="bilinear")  # (M, 1, H, W)
    m = m.repeat(1, channels, 1, 1)  # (M, C, H, W)
    if m.shape[0] > batch:
        return m[:batch]
    return m.repeat(math.ceil(batch / m.shape[0]), 1, 1, 1)[:batch]


@dataclass(frozen=True, eq=False)
class InpaintDenoiser:
    """Keeps the unmasked latent: before each model call the region outside the mask is replaced by the original
    latent noised to the current sigma, and the prediction there by the original latent (ComfyUI KSamplerX0Inpaint).

    Attributes:
        inner: the guided denoiser.
        mask: [B, C, H, W], 1 where the latent is resampled.
        latent: the original latent (model space).
        noise: the unit noise used to re-noise the kept region.
        mask_function: a MODEL's denoise_mask_function (model_options.py; e.g. DifferentialDiffusion), which
            gives each step's mask from (sigma, mask, extra_options={"model", "sigmas"}); None keeps ``mask``.
        sampling / sigmas: what mask_function sees (the model view's model_sampling, the run's sigmas).
    """

    inner: DenoiserFn
    mask: Tensor
    latent: Tensor
    noise: Tensor
    mask_function: PatchFn | None = None
    sampling: DiscreteSampling | None = None
    sigmas: Tensor | None = None

    def keep(self, x: Tensor, sigma: Tensor | float, mask: Tensor | None = None) -> Tensor:
        """x inside the mask, the original latent at noise ``sigma`` outside it (ComfyUI's scale_latent_inpaint:
        the model's noise_scaling, latent + σ·noise, or (1 − σ)·latent + σ·noise for a flow model)."""
        mask = self.mask if mask is None else mask
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        if self.sampling is not None and getattr(self.sampling, "prediction", None) == "flow":
            return x * mask + self.sampling.noise_scaling(s, self.noise, self.latent) * (1.0 - mask)
        return x * mask + (self.latent + self.noise * s) * (1.0 - mask)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        mask = self.mask
        if self.mask_function is not None:
            sigma_b = torch.as_tensor(sigma, device=x.device).reshape(-1).expand(x.shape[0])  # (B,)
            mask = self.mask_function(sigma_b, mask, extra_options={"model": MaskModelView(self.sampling),
                                                                    "sigmas": self.sigmas})
        out = self.inner(self.keep(x, sigma, mask), sigma)
        return out * mask + self.latent * (1.0 - mask)

    def restore_kept(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Where the mask is 0, exactly the original latent (noised to ``sigma`` when stopping early).

        Why: the solver's last step reproduces it only up to float rounding (x − (x − latent)); pixels with a
        partial mask are left as sampled, as in ComfyUI.
        """
        return torch.where(self.mask > 0, x, self.keep(x, sigma))


@dataclass(frozen=True, eq=False)
class SamplingDenoiser:
    """The denoiser a sampler runs: ``inner`` with the model's noise table beside it as ``model_sampling``.

    Samplers read it (samplers.common.model_sampling_of) where ComfyUI's branch on ``model_sampling`` being CONST:
    the *_ancestral RF formulas and the flow log-SNR of the SDE samplers (diffusion/samplers/common.py).
    """

    inner: DenoiserFn
    model_sampling: DiscreteSampling

    def __call__(self, x: Tensor, sigma: Tensor, **extra: object) -> Tensor:
        return self.inner(x, sigma, **extra)


@dataclass(frozen=True)
class MaskModelView:
    """``extra_options["model"]`` of a denoise_mask_function: the model's noise table as ``model_sampling``."""

    model_sampling: DiscreteSampling | None


def sample_latent(
    *,
    apply_model: ApplyModel,
    sampling: DiscreteSampling,
    latent: Tensor,
    noise: Tensor,
    sigmas: Tensor,
    positive: Conditioning,
    negative: Conditioning,
    cfg: float,
    sampler_name: str,
    seed: int,
    extra_conds: ExtraConds,
    denoise_mask: Tensor | None = None,
    callback: StepCallback | None = None,
    max_batch: int | None = None,
    observer: SamplingObserver | None = None,
    options: ModelOptions = NO_OPTIONS,
) -> Tensor:
    """Sample a latent with classifier-free guidance.

    Args:
        apply_model: the raw network, ``apply_model(x_in, t, **model_inputs) -> eps or v`` (e.g. the UNet).
        sampling: the model's noise table and prediction type.
        latent: [B, C, H, W] start latent in model space (zeros for text-to-image).
        noise: [B, C, H, W] unit noise (noise.initial_noise), or zeros to add none (KSamplerAdvanced add_noise off).
        sigmas: from schedules.sampler_sigmas / advanced_sigmas; empty means nothing to do (latent returned).
        positive / negative: the conditioning.
        cfg: guidance scale (1 skips the negative pass).
        sampler_name: one of samplers.SAMPLER_NAMES.
        seed: the run's seed, for stochastic samplers and ddim's inpaint noise.
        extra_conds: (entry, latent) -> family-specific model inputs such as SDXL's {"y": ...}.
        denoise_mask: None, or a mask (1 = resample) of any resolution; the rest of the latent is kept exactly.
        callback: receives each step's SamplerStep; raise from it to stop (interrupt).
        max_batch: most conditioning entries per model call (None: all that fit one batch).
        observer: sees every evaluation's cond/uncond predictions and every step (timeline.TimelineRecorder);
            it only looks, so the result is the same with or without it.
        options: the MODEL's function patches (model_options.py), applied in every model call and guidance step.

    Returns:
        The sampled latent, float32, in model space, on the latent's device.
    """
    spec = get_sampler(sampler_name)
    latent, noise, sigmas = checked_inputs(latent, noise, sigmas)
    if len(sigmas) == 0:
        return latent.clone()
    entries = prepare_conditioning(positive, negative, latent=noise, sampling=sampling, extra_conds=extra_conds)
    options = with_sample_sigmas(options, sigmas)
    model: DenoiserFn = GuidedDenoiser(denoiser=Denoiser(apply_model=apply_model, sampling=sampling),
                                       entries=entries, cfg=cfg, max_batch=max_batch,
                                       observer=None if observer is None else observer.predictions, options=options)
    return run_denoiser(model, sampling=sampling, latent=latent, noise=noise, sigmas=sigmas, seed=seed,
                        run=functools.partial(run_sampler, spec.name), inpaint_noise=spec.inpaint_noise,
                        denoise_mask=denoise_mask, callback=observed_callback(callback, observer),
                        mask_function=options.denoise_mask_function)


def checked_inputs(latent: Tensor, noise: Tensor, sigmas: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """latent, noise and sigmas of one sampling run, checked and as float32 on the latent's device."""
    if noise.shape != latent.shape:
        raise SamplingInputError(f"noise shape {tuple(noise.shape)} does not match latent {tuple(latent.shape)}")
    if sigmas.ndim != 1:
        raise SamplingInputError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
    device = latent.device
    return (latent.float(), noise.to(device=device, dtype=torch.float32),
            sigmas.to(device=device, dtype=torch.float32))


class RunSampler(Protocol):
    def __call__(self, model: DenoiserFn, x: Tensor, sigmas: Tensor, *, seed: int,
                 callback: StepCallback | None) -> Tensor: ...


def run_denoiser(model: DenoiserFn, *, sampling: DiscreteSampling, latent: Tensor, noise: Tensor, sigmas: Tensor,
                 seed: int, run: RunSampler, inpaint_noise: str, denoise_mask: Tensor | None,
                 callback: StepCallback | None, mask_function: PatchFn | None = None) -> Tensor:
    """What every sampling run does once its (guided) denoiser is built: keep the unmasked latent when inpainting,
    scale the noise in, run the sampler, scale back. Inputs as checked_inputs returns them; sigmas not empty."""
    inpaint: InpaintDenoiser | None = None
    if denoise_mask is not None:
        kept_noise = noise
        if inpaint_noise == "random":
            # ddim re-noises the kept region with a separate draw from seed + 1 (ComfyUI's "random" option).
            kept_noise = initial_noise(noise.shape, (seed + 1) % (SEED_MAX + 1)).to(latent.device)
        inpaint = InpaintDenoiser(inner=model, mask=prepare_denoise_mask(denoise_mask, latent.shape).to(latent.device),
                                  latent=latent, noise=kept_noise, mask_function=mask_function, sampling=sampling,
                                  sigmas=sigmas)
        model = inpaint

    max_denoise = sampling.reaches_max(float(sigmas[0]))
    x = sampling.noise_scaling(sigmas[0], noise, latent, max_denoise=max_denoise)
    out = run(SamplingDenoiser(inner=model, model_sampling=sampling), x, sigmas, seed=seed, callback=callback)
    out = sampling.inverse_noise_scaling(sigmas[-1], out)
    if inpaint is not None:
        out = inpaint.restore_kept(out, sigmas[-1])
    return out.float()
