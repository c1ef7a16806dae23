"""KSampler and KSamplerAdvanced: denoise a latent with a model and conditioning (nodes/ksampler.py)."""

from __future__ import annotations

from diffusion.handles import Model
from diffusion.samplers import SAMPLER_NAMES
from diffusion.schedules import SCHEDULER_NAMES, advanced_sigmas, sampler_sigmas
from nodes.context import RunContext
from nodes.ksampler import SamplingRequest, sample
from nodes.inputs import SEED_MAX, Combo, Float, Int, Link
from nodes.registry import Node, Output
from nodes.types import Conditioning, Latent


def _sample(ctx: RunContext, model: Model, latent: Latent, positive: Conditioning, negative: Conditioning,
            request: SamplingRequest) -> tuple[Latent]:
    settings = ctx.services.settings
    return (sample(models=ctx.services.models, model=model, latent=latent, positive=positive, negative=negative,
                   request=request, progress=ctx.progress, preview_max_size=settings.preview_max_size,
                   previews=settings.preview_method != "none"),)


class KSampler(Node):
    """Uses the model, the positive and negative conditioning to denoise the latent image."""

    description = "Uses the provided model, positive and negative conditioning to denoise the latent image."
    category = "sampling"
    model = Link("MODEL", tooltip="The model used for denoising the input latent.")
    seed = Int(0, min=0, max=SEED_MAX, control_after_generate=True,
               tooltip="The random seed used for creating the noise.")
    steps = Int(20, min=1, max=10000, tooltip="The number of steps used in the denoising process.")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                tooltip="The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher "
                        "values result in images more closely matching the prompt however too high values will "
                        "negatively impact quality.")
    sampler_name = Combo(SAMPLER_NAMES, tooltip="The algorithm used when sampling, this can affect the quality, "
                                                "speed, and style of the generated output.")
    scheduler = Combo(SCHEDULER_NAMES,
                      tooltip="The scheduler controls how noise is gradually removed to form the image.")
    positive = Link("CONDITIONING",
                    tooltip="The conditioning describing the attributes you want to include in the image.")
    negative = Link("CONDITIONING",
                    tooltip="The conditioning describing the attributes you want to exclude from the image.")
    latent_image = Link("LATENT", tooltip="The latent image to denoise.")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="The amount of denoising applied, lower values will maintain the structure of the "
                            "initial image allowing for image to image sampling.")
    outputs = (Output("LATENT", tooltip="The denoised latent."),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
            positive: Conditioning, negative: Conditioning, latent_image: Latent, denoise: float = 1.0
            ) -> tuple[Latent]:
        sigmas = sampler_sigmas(model.sampling, scheduler, steps, denoise=denoise, sampler_name=sampler_name)
        request = SamplingRequest(seed=seed, cfg=cfg, sampler_name=sampler_name, sigmas=sigmas)
        return _sample(ctx, model, latent_image, positive, negative, request)


class KSamplerAdvanced(Node):
    """KSampler with control over the step range and the noise: for multi-pass (base + refiner) sampling."""

    description = ""
    display_name = "KSampler (Advanced)"
    category = "sampling"
    model = Link("MODEL")
    add_noise = Combo(("enable", "disable"))
    noise_seed = Int(0, min=0, max=SEED_MAX, control_after_generate=True)
    steps = Int(20, min=1, max=10000)
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01)
    sampler_name = Combo(SAMPLER_NAMES)
    scheduler = Combo(SCHEDULER_NAMES)
    positive = Link("CONDITIONING")
    negative = Link("CONDITIONING")
    latent_image = Link("LATENT")
    start_at_step = Int(0, min=0, max=10000)
    end_at_step = Int(10000, min=0, max=10000)
    return_with_leftover_noise = Combo(("disable", "enable"))
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, add_noise: str, noise_seed: int, steps: int, cfg: float,
            sampler_name: str, scheduler: str, positive: Conditioning, negative: Conditioning, latent_image: Latent,
            start_at_step: int, end_at_step: int, return_with_leftover_noise: str) -> tuple[Latent]:
        sigmas = advanced_sigmas(model.sampling, scheduler, steps, sampler_name=sampler_name,
                                 start_at_step=start_at_step, end_at_step=end_at_step,
                                 force_full_denoise=return_with_leftover_noise == "disable")
        request = SamplingRequest(seed=noise_seed, cfg=cfg, sampler_name=sampler_name, sigmas=sigmas,
                                  add_noise=add_noise == "enable")
        return _sample(ctx, model, latent_image, positive, negative, request)


NODES = (KSampler, KSamplerAdvanced)
