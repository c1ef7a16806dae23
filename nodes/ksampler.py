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
from torch import Tensor, nn

from diffusion.concat_cond import CONCAT_LATENT_IMAGE, CONCAT_MASK, concat_kind, inpaint_concat, ip2p_concat
from diffusion.controlnet import control_modules
from diffusion.families import sdxl_adm, sdxl_refiner_adm
from diffusion.unclip import UNCLIP_CONDITIONING, unclip_adm
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
def model_ready(models: ModelManager, model: Model, *extra: nn.Module) -> Iterator[torch.device]:
    """The UNet (and `extra` modules, e.g. the conditioning's ControlNets) on the compute device with this handle's
    patches (LoRA) applied, for the duration of the block."""
    with ExitStack() as stack:
        device = stack.enter_context(models.on_device(model.unet, *extra))
        stack.enter_context(applied_to_model(model))
        yield device


def extra_conds_for(model: Model, *, latent_image: Tensor | None = None, denoise_mask: Tensor | None = None,
                    seed: int = 0) -> Callable[[CondEntry, Tensor], Mapping[str, Any]]:
    """The extra UNet inputs per conditioning entry: the family's (SDXL's "y"; unCLIP's image-embedding "y", noised
    with `seed`) and, for an inpainting or InstructPix2Pix UNet, "c_concat" (diffusion/concat_cond.py) from the
    entry's concat_latent_image / concat_mask, else from `denoise_mask` (the latent's noise mask) and `latent_image`
    (the start latent, model space)."""
    family_conds = _unclip_conds(model, seed) if model.family.adm == "unclip" else _family_conds(model)
    config = getattr(model.unet, "config", None)
    in_channels = getattr(config, "in_channels", None)
    kind = "none" if in_channels is None else concat_kind(in_channels, model.family.latent_channels)
    if kind == "none":
        return family_conds
    scale = model.family.latent_scale_factor

    def with_concat(entry: CondEntry, latent: Tensor) -> Mapping[str, Any]:
        image = entry.extra.get(CONCAT_LATENT_IMAGE)
        if kind == "inpaint":
            concat = inpaint_concat(latent, concat_latent_image=image, concat_mask=entry.extra.get(CONCAT_MASK),
                                    latent_image=latent_image, denoise_mask=denoise_mask, latent_scale=scale)
        else:  # ComfyUI scales the image for SDXL's InstructPix2Pix, not for SD1's
            concat = ip2p_concat(latent, concat_latent_image=image,
                                 latent_scale=scale if model.family.adm == "sdxl" else None)
        return {**family_conds(entry, latent), "c_concat": concat}

    return with_concat


def _unclip_conds(model: Model, seed: int) -> Callable[[CondEntry, Tensor], Mapping[str, Any]]:
    """SD 2.1 unCLIP: y from the entry's unCLIPConditioning image embeddings (zeros without any)."""
    adm_channels = model.unet.config.adm_in_channels

    def conds(entry: CondEntry, latent: Tensor) -> Mapping[str, Any]:
        return {"y": unclip_adm(entry.extra.get(UNCLIP_CONDITIONING), adm_channels=adm_channels, seed=seed,
                                device=latent.device)}

    return conds


def _family_conds(model: Model) -> Callable[[CondEntry, Tensor], Mapping[str, Any]]:
    """The family's extra UNet inputs per conditioning entry (SDXL's "y"); none for SD1/SD2."""
    adm = model.family.adm
    if adm == "none":
        return lambda entry, latent: {}
    if adm in ("flux", "sd3"):
        return flow_extra_conds(adm)

    def sdxl(entry: CondEntry, latent: Tensor) -> Mapping[str, Any]:
        if entry.pooled is None:
            raise ValueError("SDXL conditioning needs a pooled text embedding (use this model's CLIP)")
        height, width = int(latent.shape[-2]) * 8, int(latent.shape[-1]) * 8
        extra = entry.extra
        sizes = {"height": int(extra.get("height", height)), "width": int(extra.get("width", width)),
                 "crop_h": int(extra.get("crop_h", 0)), "crop_w": int(extra.get("crop_w", 0))}
        pooled = entry.pooled.float()
        if adm == "sdxl_refiner":
            # ComfyUI's default score: 6 for the positive prompt, 2.5 for a negative one (prompt_type).
            default = 2.5 if extra.get("prompt_type") == "negative" else 6.0
            score = float(extra.get("aesthetic_score", default))
            return {"y": sdxl_refiner_adm(pooled, **sizes, aesthetic_score=score)}
        return {"y": sdxl_adm(pooled, **sizes, target_height=int(extra.get("target_height", sizes["height"])),
                              target_width=int(extra.get("target_width", sizes["width"])))}

    return sdxl


FLUX_DEFAULT_GUIDANCE = 3.5
"""The guidance Flux dev is given without a FluxGuidance node (ComfyUI's model_base.Flux.extra_conds)."""


def flow_extra_conds(adm: str) -> Callable[[CondEntry, Tensor], Mapping[str, Any]]:
    """Flux: y = pooled CLIP-L [1, 768] and the guidance scale (entry.extra["guidance"], default 3.5; None after
    FluxDisableGuidance); SD3: y = pooled CLIP-L ⊕ CLIP-G [1, 2048]. Missing pooled output: zeros."""
    width = 768 if adm == "flux" else 2048

    def conds(entry: CondEntry, latent: Tensor) -> Mapping[str, Any]:
        pooled = entry.pooled.float() if entry.pooled is not None else torch.zeros((1, width))
        out: dict[str, Any] = {"y": pooled}
        if adm == "flux":
            guidance = entry.extra.get("guidance", FLUX_DEFAULT_GUIDANCE)
            if guidance is not None:
                out["guidance"] = torch.tensor([float(guidance)], dtype=torch.float32)
        return out

    return conds


@dataclass(frozen=True)
class SampledLatents:
    """What one sampling run gives: the sampled LATENT and the last step's x0 prediction (None when no step ran),
    both in raw VAE space with the input's noise mask and batch index."""

    output: Latent
    denoised: Latent | None


def to_model_space(model: Model, raw: Tensor) -> Tensor:
    """Raw VAE latent -> the model's latent space: raw · scale, or (raw − shift) · scale for Flux / SD3
    (ComfyUI's latent_format.process_in; sampling skips it for an all-zero latent)."""
    family = model.family
    if family.latent_shift_factor:
        return (raw - family.latent_shift_factor) * family.latent_scale_factor
    return raw * family.latent_scale_factor


def to_raw_space(model: Model, x: Tensor) -> Tensor:
    """The model's latent space -> raw VAE latent (process_out: x / scale (+ shift))."""
    family = model.family
    if family.latent_shift_factor:
        return x / family.latent_scale_factor + family.latent_shift_factor
    return x / family.latent_scale_factor


StepRun = Callable[[Tensor, torch.device, Callable[[SamplerStep], None]], Tensor]
"""(start latent in model space on the device, the device, the step callback) -> the sampled latent (model space)."""


def sample_on_model(*, models: ModelManager, model: Model, latent: Latent, total_steps: int, run: StepRun,
                    progress: ProgressFn, preview_max_size: int = 512, previews: bool = True,
                    extra_modules: tuple[nn.Module, ...] = ()) -> SampledLatents:
    """The frame of every sampler node: the UNet ready on its device, the latent into model space (a zero latent
    stays unscaled), per-step progress and throttled previews, and the result back to raw VAE space."""
    samples = latent.samples
    with torch.inference_mode(), model_ready(models, model, *extra_modules) as device:
        start = samples.to(device=device, dtype=torch.float32)
        nonzero = bool(torch.count_nonzero(start))
        if nonzero:
            start = to_model_space(model, start)
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
        denoised = latent.replace(samples=to_raw_space(model, last[0])) if last else None
        return SampledLatents(output=latent.replace(samples=to_raw_space(model, out)), denoised=denoised)


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
        extra_conds = extra_conds_for(model, latent_image=start, denoise_mask=latent.noise_mask, seed=request.seed)
        if sampler_cfg_function(model) is not None:
            # A MODEL with its own cfg function (the PerpNeg node's) samples through its guider, which applies it;
            # sample_latent knows plain CFG only.
            guider = CFGGuider(model=model, positive=positive, negative=negative, cfg=request.cfg)
            return guider.sample(noise, start, Sampler.named(request.sampler_name), request.sigmas.to(device),
                                 seed=request.seed, extra_conds=extra_conds,
                                 denoise_mask=latent.noise_mask, callback=on_step, observer=observer)
        return sample_latent(
            apply_model=model.unet, sampling=model.sampling, latent=start, noise=noise,
            sigmas=request.sigmas.to(device), positive=positive, negative=negative, cfg=request.cfg,
            sampler_name=request.sampler_name, seed=request.seed, extra_conds=extra_conds,
            denoise_mask=latent.noise_mask, callback=on_step, observer=observer, options=model.options)

    return sample_on_model(models=models, model=model, latent=latent, total_steps=max(len(request.sigmas) - 1, 0),
                           run=run, progress=progress, preview_max_size=preview_max_size,
                           previews=previews, extra_modules=control_modules(positive, negative)).output
