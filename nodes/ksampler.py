"""What a sampler node does with a MODEL: the glue between handles, the model manager and sampling_pipeline.

``sample_on_model`` is the frame every sampler node shares (KSampler here, SamplerCustom/SamplerCustomAdvanced in
nodes/custom_sampling.py): the UNet ready on its device, latent scaling, per-step progress and previews, and the
last step's x0 prediction; ``sample`` is KSampler's run inside it.

Latent format: LATENT values hold raw VAE latents; the UNet works on latents × the family's scale factor. As in
ComfyUI, an all-zero latent (text-to-image) is passed through unscaled, so it stays zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffusion.families import sdxl_adm, sdxl_refiner_adm
from diffusion.guiders import CFGGuider, sampler_cfg_function
from diffusion.handles import Model
from diffusion.memory import ModelManager
from diffusion.noise import initial_noise
from diffusion.patches import applied_to_model
from diffusion.previews import PreviewThrottle, encode_preview
from diffusion.samplers import SamplerStep
from diffusion.sampling_pipeline import sample_latent
from diffusion.sampling_values import Sampler
from diffusion.timeline import SamplingObserver
from diffusion.values import CondEntry, Conditioning, Latent, Preview

ProgressFn = Callable[[int, int, Preview | None], None]


@dataclass(frozen=True)
class SamplingRequest:
    """The settings of one sampling run (KSampler / KSamplerAdvanced widgets, already turned into sigmas)."""

    seed: int
    cfg: float
    sampler_name: str
    sigmas: Tensor
    add_noise: bool = True


@contextmanager
def model_ready(models: ModelManager, model: Model) -> Iterator[torch.device]:
    """The UNet on the compute device with this handle's patches (LoRA) applied, for the duration of the block."""
    with ExitStack() as stack:
        device = stack.enter_context(models.on_device(model.unet))
        stack.enter_context(applied_to_model(model))
        yield device


def extra_conds_for(model: Model) -> Callable[[CondEntry, Tensor], Mapping[str, Any]]:
    """The family's extra UNet inputs per conditioning entry (SDXL's "y"); none for SD1/SD2."""
    adm = model.family.adm
    if adm == "none":
        return lambda entry, latent: {}

    def sdxl(entry: CondEntry, latent: Tensor) -> Mapping[str, Any]:
        if entry.pooled is None:
            raise ValueError("SDXL conditioning needs a pooled text embedding (use this model's CLIP)")
        height, width = int(latent.shape[-2]) * 8, int(latent.shape[-1]) * 8
        extra = entry.extra
        sizes = {"height": int(extra.get("height", height)), "width": int(extra.get("width", width)),
                 "crop_h": int(extra.get("crop_h", 0)), "crop_w": int(extra.get("crop_w", 0))}
        pooled = entry.pooled.float()
        if adm == "sdxl_refiner":
            return {"y": sdxl_refiner_adm(pooled, **sizes, aesthetic_score=float(extra.get("aesthetic_score", 6.0)))}
        return {"y": sdxl_adm(pooled, **sizes, target_height=int(extra.get("target_height", sizes["height"])),
                              target_width=int(extra.get("target_width", sizes["width"])))}

    return sdxl


@dataclass(frozen=True)
class SampledLatents:
    """What one sampling run gives: the sampled LATENT and the last step's x0 prediction (None when no step ran),
    both in raw VAE space with the input's noise mask and batch index."""

    output: Latent
    denoised: Latent | None


StepRun = Callable[[Tensor, torch.device, Callable[[SamplerStep], None]], Tensor]
"""(start latent in model space on the device, the device, the step callback) -> the sampled latent (model space)."""


def sample_on_model(*, models: ModelManager, model: Model, latent: Latent, total_steps: int, run: StepRun,
                    progress: ProgressFn, preview_max_size: int = 512, previews: bool = True) -> SampledLatents:
    """The frame of every sampler node: the UNet ready on its device, the latent into model space (a zero latent
    stays unscaled), per-step progress and throttled previews, and the result back to raw VAE space."""
    samples = latent.samples
    scale = model.family.latent_scale_factor
    with torch.inference_mode(), model_ready(models, model) as device:
        start = samples.to(device=device, dtype=torch.float32)
        nonzero = bool(torch.count_nonzero(start))
        if nonzero:
            start = start * scale
        throttle = PreviewThrottle()
        to_rgb = model.latent_rgb if previews else None
        last: list[Tensor] = []

        def on_step(step: SamplerStep) -> None:
            last[:] = [step.denoised]
            preview = None
            if to_rgb is not None and throttle.ready(step.index, step.total):
                preview = encode_preview(to_rgb.image(step.denoised[0]), max_size=preview_max_size)
            progress(step.index + 1, step.total or total_steps, preview)

        out = run(start, device, on_step)
        # Always back to raw VAE space: a zero start latent has become a real sample.
        denoised = latent.replace(samples=last[0] / scale) if last else None
        return SampledLatents(output=latent.replace(samples=out / scale), denoised=denoised)


def sample(*, models: ModelManager, model: Model, latent: Latent, positive: Conditioning, negative: Conditioning,
           request: SamplingRequest, progress: ProgressFn, preview_max_size: int = 512,
           previews: bool = True, observer: SamplingObserver | None = None) -> Latent:
    """Run one sampling pass; returns a new LATENT (noise mask and batch index kept).

    ``observer`` (diffusion/timeline.py; the DenoisingTimeline node's recorder) sees every step and the cond/uncond
    predictions; it only looks, so the latent is bit for bit the one KSampler gives without it."""
    samples = latent.samples
    noise = (initial_noise(tuple(samples.shape), request.seed, batch_index=latent.batch_index)
             if request.add_noise else torch.zeros(samples.shape, dtype=torch.float32))

    def run(start: Tensor, device: torch.device, on_step: Callable[[SamplerStep], None]) -> Tensor:
        if sampler_cfg_function(model) is not None:
            # A MODEL with its own cfg function (the PerpNeg node's) samples through its guider, which applies it;
            # sample_latent knows plain CFG only.
            guider = CFGGuider(model=model, positive=positive, negative=negative, cfg=request.cfg)
            return guider.sample(noise, start, Sampler.named(request.sampler_name), request.sigmas.to(device),
                                 seed=request.seed, extra_conds=extra_conds_for(model),
                                 denoise_mask=latent.noise_mask, callback=on_step, observer=observer)
        return sample_latent(
            apply_model=model.unet, sampling=model.sampling, latent=start, noise=noise,
            sigmas=request.sigmas.to(device), positive=positive, negative=negative, cfg=request.cfg,
            sampler_name=request.sampler_name, seed=request.seed, extra_conds=extra_conds_for(model),
            denoise_mask=latent.noise_mask, callback=on_step, observer=observer)

    return sample_on_model(models=models, model=model, latent=latent, total_steps=max(len(request.sigmas) - 1, 0),
                           run=run, progress=progress, preview_max_size=preview_max_size,
                           previews=previews).output
