"""ComfyUI's custom sampling: SamplerCustom, SamplerCustomAdvanced, KSamplerSelect and the NOISE nodes.

A custom run is KSampler taken apart: NOISE (RandomNoise / DisableNoise) + GUIDER (nodes/guiders.py) + SAMPLER
(KSamplerSelect, nodes/sampler_options.py) + SIGMAS (nodes/schedulers.py, nodes/sigmas.py). The sampling itself is
diffusion.guiders.sample_guided inside nodes/ksampler.py's frame (device, latent scale, progress, previews), so the
same seed and settings give KSampler's latent exactly. Both sampler nodes also output the last step's x0
prediction ("denoised_output").

Schemas follow ComfyUI's /object_info entries (tests/nodes/test_object_info_parity.py); node classes carry comments
rather than docstrings because a docstring would become the node's description, which ComfyUI leaves empty.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffusion.guiders import BaseGuider, CFGGuider
from diffusion.handles import Model
from diffusion.samplers import SAMPLER_NAMES
from diffusion.sampling_values import DisableNoise as ZeroNoise
from diffusion.sampling_values import Noise, Sampler
from diffusion.sampling_values import RandomNoise as SeededNoise
from nodes.context import RunContext
from nodes.inputs import SEED_MAX, Boolean, Combo, Float, Int, Link
from nodes.ksampler import extra_conds_for, sample_on_model, to_model_space, to_raw_space
from nodes.registry import Node, Output
from nodes.types import Conditioning, Latent

CATEGORY = "sampling/custom_sampling"


def sample_custom(ctx: RunContext, *, noise: Noise, guider: BaseGuider, sampler: Sampler, sigmas: Tensor,
                  latent: Latent) -> tuple[Latent, Latent]:
    """(output, denoised_output) of one custom sampling run; no sigmas: the latent unchanged, twice (ComfyUI)."""
    if len(sigmas) == 0:
        return latent, latent
    noise_tensor = noise.generate_noise(latent)
    model = guider.model

    def run(start: Tensor, device: torch.device, on_step) -> Tensor:  # type: ignore[no-untyped-def]
        return guider.sample(noise_tensor, start, sampler, sigmas.to(device), seed=noise.seed,
                             extra_conds=extra_conds_for(model, latent_image=start, denoise_mask=latent.noise_mask,
                                                         seed=noise.seed),
                             denoise_mask=latent.noise_mask, callback=on_step)

    settings = ctx.services.settings
    result = sample_on_model(models=ctx.services.models, model=model, latent=latent, total_steps=len(sigmas) - 1,
                             run=run, progress=ctx.progress, preview_max_size=settings.preview_max_size,
                             previews=settings.preview_method != "none")
    return result.output, result.denoised if result.denoised is not None else result.output


# KSampler with the sampler and the sigmas as inputs.
class SamplerCustom(Node):
    category = CATEGORY
    v3_schema = True
    model = Link("MODEL")
    add_noise = Boolean(True)
    noise_seed = Int(0, min=0, max=SEED_MAX, control_after_generate=True)
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    positive = Link("CONDITIONING")
    negative = Link("CONDITIONING")
    sampler = Link("SAMPLER")
    sigmas = Link("SIGMAS")
    latent_image = Link("LATENT")
    outputs = (Output("LATENT", name="output"), Output("LATENT", name="denoised_output"))

    @classmethod
    def run(cls, ctx: RunContext, model: Model, add_noise: bool, noise_seed: int, cfg: float,
            positive: Conditioning, negative: Conditioning, sampler: Sampler, sigmas: Tensor,
            latent_image: Latent) -> tuple[Latent, Latent]:
        # Without noise the seed still drives the sampler's step noise, as in ComfyUI.
        noise = SeededNoise(noise_seed) if add_noise else ZeroNoise(seed=noise_seed)
        guider = CFGGuider(model=model, positive=positive, negative=negative, cfg=cfg)
        return sample_custom(ctx, noise=noise, guider=guider, sampler=sampler, sigmas=sigmas, latent=latent_image)


# NOISE + GUIDER + SAMPLER + SIGMAS -> a sampled latent.
class SamplerCustomAdvanced(Node):
    category = CATEGORY
    v3_schema = True
    noise = Link("NOISE")
    guider = Link("GUIDER")
    sampler = Link("SAMPLER")
    sigmas = Link("SIGMAS")
    latent_image = Link("LATENT")
    outputs = (Output("LATENT", name="output"), Output("LATENT", name="denoised_output"))

    @classmethod
    def run(cls, ctx: RunContext, noise: Noise, guider: BaseGuider, sampler: Sampler, sigmas: Tensor,
            latent_image: Latent) -> tuple[Latent, Latent]:
        return sample_custom(ctx, noise=noise, guider=guider, sampler=sampler, sigmas=sigmas, latent=latent_image)


# One of KSampler's samplers, as a SAMPLER.
class KSamplerSelect(Node):
    category = f"{CATEGORY}/samplers"
    v3_schema = True
    sampler_name = Combo(SAMPLER_NAMES)
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, sampler_name: str) -> tuple[Sampler]:
        return (Sampler.named(sampler_name),)


# Seeded initial noise, the draw KSampler makes for the same seed.
class RandomNoise(Node):
    category = f"{CATEGORY}/noise"
    v3_schema = True
    noise_seed = Int(0, min=0, max=SEED_MAX, control_after_generate=True)
    outputs = (Output("NOISE"),)

    @classmethod
    def run(cls, ctx: RunContext, noise_seed: int) -> tuple[Noise]:
        return (SeededNoise(noise_seed),)


# No initial noise (zeros), e.g. to continue a latent that already holds its noise.
class DisableNoise(Node):
    category = f"{CATEGORY}/noise"
    v3_schema = True
    outputs = (Output("NOISE"),)

    @classmethod
    def run(cls, ctx: RunContext) -> tuple[Noise]:
        return (ZeroNoise(),)


# Noise a latent to the level the sigmas span (|first − last|), as the first step of a sampler would.
class AddNoise(Node):
    category = "_for_testing/custom_sampling/noise"
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    noise = Link("NOISE")
    sigmas = Link("SIGMAS")
    latent_image = Link("LATENT")
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, noise: Noise, sigmas: Tensor, latent_image: Latent
            ) -> tuple[Latent]:
        if len(sigmas) == 0:
            return (latent_image,)
        samples = latent_image.samples
        sigma = torch.abs(sigmas[0] - sigmas[-1]) if len(sigmas) > 1 else sigmas[0]
        start = samples.float()
        if torch.count_nonzero(start) > 0:  # an empty latent stays as it is (ComfyUI skips process_latent_in)
            start = to_model_space(model, start)
        unit = noise.generate_noise(latent_image).to(device=start.device, dtype=torch.float32)
        noisy = to_raw_space(model, model.sampling.noise_scaling(sigma.to(start.device), unit, start,
                                                                 max_denoise=False))
        return (latent_image.replace(samples=torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)),)


NODES = (SamplerCustom, SamplerCustomAdvanced, KSamplerSelect, RandomNoise, DisableNoise, AddNoise)
