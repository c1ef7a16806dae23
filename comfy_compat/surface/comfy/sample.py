"""ComfyUI's `comfy.sample`: noise for a latent and one sampling pass, on Chisel's sampling pipeline.

`prepare_noise(latent, seed, noise_inds)` is the draw KSampler makes for that seed (diffusion/noise.py, ComfyUI's
numbers); `sample(...)` runs the same pass as the KSampler node with the given noise tensor and returns raw latents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from comfy_compat import host
from diffusion.noise import initial_noise


def prepare_noise(latent_image: torch.Tensor, seed: int, noise_inds: Any = None) -> torch.Tensor:
    """Unit noise shaped like `latent_image` for `seed` (noise_inds: the images' batch positions)."""
    batch_index = None if noise_inds is None else [int(i) for i in noise_inds]
    return initial_noise(tuple(latent_image.shape), seed, batch_index=batch_index)


def fix_empty_latent_channels(model: Any, latent_image: torch.Tensor) -> torch.Tensor:
    """An all-zero latent with the wrong channel count becomes one with the model's."""
    handle = model.to_handle() if hasattr(model, "to_handle") else model
    channels = getattr(handle.family, "latent_channels", latent_image.shape[1])
    if latent_image.shape[1] != channels and torch.count_nonzero(latent_image) == 0:
        latent_image = latent_image[:, :1].repeat_interleave(channels, dim=1) if latent_image.shape[1] else \
            torch.zeros((latent_image.shape[0], channels, *latent_image.shape[2:]))
    return latent_image


def sample(model: Any, noise: torch.Tensor, steps: int, cfg: float, sampler_name: str, scheduler: str,
           positive: Any, negative: Any, latent_image: torch.Tensor, denoise: float = 1.0,
           disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
           force_full_denoise: bool = False, noise_mask: torch.Tensor | None = None, sigmas: torch.Tensor | None = None,
           callback: Callable[..., Any] | None = None, disable_pbar: bool = False, seed: int | None = None
           ) -> torch.Tensor:
    """One sampling pass as KSampler (or KSamplerAdvanced with start/last step) runs it, from this noise."""
    from diffusion.sampling_pipeline import sample_latent
    from diffusion.schedules import advanced_sigmas, sampler_sigmas
    from nodes.ksampler import extra_conds_for, sample_on_model
    from nodes.legacy import from_comfy_conditioning
    from nodes.types import Latent

    handle = model.to_handle() if hasattr(model, "to_handle") else model
    if sigmas is None:
        if start_step is not None or last_step is not None or force_full_denoise:
            sigmas = advanced_sigmas(handle.sampling, scheduler, steps, sampler_name=sampler_name,
                                     start_at_step=start_step or 0,
                                     end_at_step=last_step if last_step is not None else 10000,
                                     force_full_denoise=force_full_denoise)
        else:
            sigmas = sampler_sigmas(handle.sampling, scheduler, steps, denoise=denoise, sampler_name=sampler_name)
    pos = from_comfy_conditioning(positive)
    neg = from_comfy_conditioning(negative)
    noise = torch.zeros_like(latent_image, dtype=torch.float32) if disable_noise else noise.float()
    ctx = host.current_run()
    progress = ctx.progress if ctx is not None and not disable_pbar else (lambda value, total, preview: None)
    latent = Latent(samples=latent_image, noise_mask=noise_mask)
    total = max(len(sigmas) - 1, 0)

    def run(start: torch.Tensor, device: torch.device, on_step: Callable[[Any], None]) -> torch.Tensor:
        def step(info: Any) -> None:
            on_step(info)
            if callback is not None:
                callback(info.index, info.denoised, info.x, info.total or total)

        return sample_latent(apply_model=handle.unet, sampling=handle.sampling, latent=start,
                             noise=noise.to(device), sigmas=sigmas.to(device), positive=pos, negative=neg, cfg=cfg,
                             sampler_name=sampler_name, seed=seed if seed is not None else 0,
                             extra_conds=extra_conds_for(handle), denoise_mask=noise_mask, callback=step,
                             options=handle.options)

    out = sample_on_model(models=host.services().models, model=handle, latent=latent, total_steps=total, run=run,
                          progress=progress)
    return out.output.samples.cpu()


def sample_custom(model: Any, noise: torch.Tensor, cfg: float, sampler: Any, sigmas: torch.Tensor, positive: Any,
                  negative: Any, latent_image: torch.Tensor, noise_mask: torch.Tensor | None = None,
                  callback: Callable[..., Any] | None = None, disable_pbar: bool = False, seed: int | None = None
                  ) -> torch.Tensor:
    """SamplerCustom's pass: this SAMPLER over these sigmas, from this noise."""
    from comfy_compat.surface.comfy.samplers import CFGGuider

    guider = CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider.sample(noise, latent_image, sampler, sigmas, denoise_mask=noise_mask, callback=callback,
                         disable_pbar=disable_pbar, seed=seed)


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('comfy.sample', name)
