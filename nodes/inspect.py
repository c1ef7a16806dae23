"""Inspect nodes: see the denoising. A model trained to predict the noise in an image generates by running the
noising film backwards from pure static; these nodes show that film and how steps, scheduler, sampler and CFG cut it.

  DenoisingTimeline  KSampler (same inputs, same latent bit for bit) plus, per step, x_t, x̂₀, ε̂ and CFG's parts
  NoiseToTimestep    the forward process: an image or latent noised to every step of a schedule (clean -> noise)
  DenoiseOnce        one model prediction at a chosen step: what the model thinks the clean image is
  SchedulePlot       the sigmas of every scheduler on one log chart (eps / v: SD's table; flow: rectified flow)
  TrainingStep       the training objective on an image: noise it at t, predict the noise, the error and its MSE

Each inspect node is an output node: its frames (nodes/inspect_frames.py: how x_t, x̂₀ and ε̂ become images) are saved
to the temp folder as PreviewImage saves them and listed in its `ui` with the numbers; the editor's widgets read
them (the keys are documented on each node's run). Frames are of the first item of a batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffusion.guidance import GuidedDenoiser, prepare_conditioning
from diffusion.handles import Model, Vae
from diffusion.model_sampling import Denoiser, DiscreteSampling, FlowSampling
from diffusion.noise import initial_noise
from diffusion.samplers import SAMPLER_NAMES
from diffusion.schedules import SCHEDULER_NAMES, sampler_sigmas, scheduler_sigmas
from diffusion.timeline import StepRecord, TimelineRecorder, eps_from, visited_sigmas
from nodes.context import RunContext
from nodes.inputs import SEED_MAX, Combo, Float, Int, Link
from nodes.inspect_frames import (InspectInputError, crop_to_multiple, decode_latents, eps_image, eps_images,
                                  error_image, temp_refs, viewable)
from nodes.ksampler import SamplingRequest, extra_conds_for, model_ready, sample, to_model_space, to_raw_space
from nodes.registry import Node, Output, Result
from nodes.schedule_chart import draw_sigma_chart
from nodes.types import Conditioning, Latent
from nodes.vae_ops import encode_images

CATEGORY = "sampling/inspect"
MODEL_SAMPLINGS = ("eps", "v", "flow")
MAX_SCHEDULE_STEPS = 10_000  # the most steps a plotted schedule may have (steps / denoise)
MAX_FRAMES = 200  # NoiseToTimestep decodes one frame per step

__all__ = ["MODEL_SAMPLINGS", "NODES", "SAMPLER_NAMES", "SCHEDULER_NAMES", "InspectInputError", "sigma_curve"]


# ---- schedules -----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def noise_table(model_sampling: str) -> DiscreteSampling | FlowSampling:
    """The default table of a kind of model: SD's 1000-step scaled-linear table for eps and v models (SD1.x, SD2.x,
    SDXL share it), the rectified-flow table (shift 1) for flow models."""
    if model_sampling == "flow":
        return FlowSampling()
    if model_sampling in ("eps", "v"):
        return DiscreteSampling.linear(prediction=model_sampling)  # type: ignore[arg-type]
    raise InspectInputError(f"unknown model sampling {model_sampling!r}; expected one of {', '.join(MODEL_SAMPLINGS)}")


def sigma_curve(scheduler: str, steps: int, denoise: float = 1.0, model_sampling: str = "eps",
                sampler_name: str = "euler") -> list[float]:
    """The sigmas KSampler runs for these settings on the default table of ``model_sampling`` (see noise_table):
    the schedule, the discard-penultimate rule of ``sampler_name`` and partial denoising, as floats. Serves
    GET /chisel/sigmas (the editor's KSampler sigma curve) and SchedulePlot."""
    if steps < 1:
        raise InspectInputError(f"steps must be at least 1, got {steps}")
    if not 0.0 <= denoise <= 1.0:
        raise InspectInputError(f"denoise must be between 0 and 1, got {denoise}")
    if denoise > 0 and steps / denoise > MAX_SCHEDULE_STEPS:
        raise InspectInputError(f"steps / denoise must be at most {MAX_SCHEDULE_STEPS}, got {steps / denoise:g}")
    table = noise_table(model_sampling)
    sigmas = sampler_sigmas(table, scheduler, steps, denoise=denoise,  # type: ignore[arg-type]
                            sampler_name=sampler_name)
    return [float(s) for s in sigmas]


def _schedule(model: Model, scheduler: str, steps: int) -> Tensor:
    """The plain schedule (no sampler rule, full denoise): N + 1 decreasing sigmas ending in 0."""
    return scheduler_sigmas(model.sampling, scheduler, steps).float().cpu()


# ---- the nodes -----------------------------------------------------------------------------------------------------
def _seed() -> Int:
    return Int(0, min=0, max=SEED_MAX, control_after_generate=True, tooltip="The random seed used for creating the "
               "noise (the same draw as KSampler's for this seed).")


def _model() -> Link:
    return Link("MODEL", tooltip="The model used for denoising the input latent.")


def _steps(tooltip: str = "The number of steps used in the denoising process.") -> Int:
    return Int(20, min=1, max=10000, tooltip=tooltip)


def _cfg() -> Float:
    return Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale: x̂₀ = "
                 "uncond + cfg·(cond − uncond). At 1 the negative prompt is not evaluated.")


def _scheduler(tooltip: str = "How the noise is removed across the steps.") -> Combo:
    return Combo(SCHEDULER_NAMES, tooltip=tooltip)


def _vae() -> Link:
    return Link("VAE", tooltip="The VAE used to decode the frames (and to encode an input image).")


class DenoisingTimeline(Node):
    """Samples exactly as KSampler does (the same latent, bit for bit) and records every step: the noisy latent
    x_t, the predicted clean image x̂₀, the predicted noise ε̂ = (x_t − x̂₀)/σ_t, and CFG's conditional and
    unconditional predictions it mixes. Frames are of the first image of the batch; x_t is shown divided by
    sqrt(1 + σ²), ε̂ as a map of the first three latent channels on a fixed ±3 scale. Samplers that call the model
    twice per step (heun, dpm_2, ...) show the step's call at σ_t; dpm_fast and dpm_adaptive show the steps they
    choose themselves between the schedule's ends."""

    display_name = "Denoising Timeline"
    category = CATEGORY
    output_node = True
    model = _model()
    seed = _seed()
    steps = _steps()
    cfg = _cfg()
    sampler_name = Combo(SAMPLER_NAMES, tooltip="The algorithm used when sampling.")
    scheduler = _scheduler()
    positive = Link("CONDITIONING", tooltip="What to include in the image.")
    negative = Link("CONDITIONING", tooltip="What to exclude from the image.")
    latent_image = Link("LATENT", tooltip="The latent image to denoise.")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="The amount of denoising applied; lower values keep more of the input (img2img).")
    vae = _vae()
    outputs = (Output("LATENT", tooltip="The denoised latent (equal to KSampler's)."),
               Output("IMAGE", "x_t", tooltip="Each step's noisy latent, decoded after dividing by sqrt(1 + σ²)."),
               Output("IMAGE", "x0", tooltip="Each step's predicted clean image x̂₀ (CFG applied), decoded."),
               Output("IMAGE", "eps", tooltip="Each step's predicted noise ε̂ as a map (first three latent "
                                              "channels, ±3 scale)."))

    @classmethod
    def run(cls, ctx: RunContext, model: Model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
            positive: Conditioning, negative: Conditioning, latent_image: Latent, denoise: float, vae: Vae) -> Result:
        sigmas = sampler_sigmas(model.sampling, scheduler, steps, denoise=denoise, sampler_name=sampler_name)
        request = SamplingRequest(seed=seed, cfg=cfg, sampler_name=sampler_name, sigmas=sigmas)
        recorder = TimelineRecorder(item=0)
        settings = ctx.services.settings
        latent = sample(models=ctx.services.models, model=model, latent=latent_image, positive=positive,
                        negative=negative, request=request, progress=ctx.progress,
                        preview_max_size=settings.preview_max_size, previews=settings.preview_method != "none",
                        observer=recorder)
        records = recorder.records
        frames = _timeline_frames(ctx, model, vae, records)
        # ui: {"timeline": [{steps: N, cfg, sampler, scheduler, sigmas: N + 1 floats (frame i is at sigmas[i]),
        #      frames: [{step, sigma, t, x_t, x0, eps, eps_cond, eps_uncond, x0_cond, x0_uncond}] x N}]} with temp
        #      image refs; the uncond refs are None at cfg 1 (the negative is not evaluated).
        refs = {kind: temp_refs(ctx, images, f"timeline_{kind}") for kind, images in frames.items()}
        has_uncond = bool(records) and all(r.x0_uncond is not None for r in records)
        ui_frames = []
        for i, record in enumerate(records):
            ui_frames.append({
                "step": record.index, "sigma": record.sigma, "t": float(model.sampling.timestep(record.sigma)),
                "x_t": refs["x_t"][i], "x0": refs["x0"][i], "eps": refs["eps"][i], "eps_cond": refs["eps_cond"][i],
                "eps_uncond": refs["eps_uncond"][i] if has_uncond else None, "x0_cond": refs["x0_cond"][i],
                "x0_uncond": refs["x0_uncond"][i] if has_uncond else None,
            })
        timeline = {"steps": len(records), "cfg": float(cfg), "sampler": sampler_name, "scheduler": scheduler,
                    "sigmas": visited_sigmas(records, sigmas), "frames": ui_frames}
        return Result(values=(latent, frames["x_t"], frames["x0"], frames["eps"]), ui={"timeline": [timeline]})


def _timeline_frames(ctx: RunContext, model: Model, vae: Vae, records: Sequence[StepRecord]) -> dict[str, Tensor]:
    """The frame batches of a recorded run, by ui key (the uncond ones empty when cfg is 1)."""
    n = len(records)
    with_uncond = n > 0 and all(r.x0_uncond is not None for r in records)
    uncond = [r.x0_uncond for r in records if r.x0_uncond is not None] if with_uncond else []
    decoded = decode_latents(ctx, vae, model, [viewable(r.x, r.sigma) for r in records] + [r.x0 for r in records]
                             + [r.x0_cond for r in records] + uncond)
    down = vae.downscale
    return {
        "x_t": decoded[:n], "x0": decoded[n:2 * n], "x0_cond": decoded[2 * n:3 * n], "x0_uncond": decoded[3 * n:],
        "eps": eps_images([r.eps for r in records], down),
        "eps_cond": eps_images([r.eps_cond for r in records], down),
        "eps_uncond": eps_images([e for r in records if (e := r.eps_uncond) is not None] if with_uncond else [],
                                  down),
    }


class NoiseToTimestep(Node):
    """The forward process: the input image (or latent) with the seed's noise added to the noise level of a
    schedule step, x_t = x0 + σ·ε in the model's latent space, as KSampler adds it. Step k is the noise a sampler
    still has k steps to remove: step 0 is the clean input (σ = 0), step `steps` the schedule's first σ, pure noise,
    scaled as KSampler starts from it (x0 + sqrt(1 + σ²)·ε). Shows every step from clean to noise; the outputs are
    the chosen one (the LATENT continues in KSamplerAdvanced with add_noise off, starting at steps − step)."""

    display_name = "Noise To Timestep"
    category = CATEGORY
    output_node = True
    model = Link("MODEL", tooltip="The model whose noise table defines the schedule (and its latent scale).")
    seed = _seed()
    steps = Int(20, min=1, max=MAX_FRAMES, tooltip="The number of steps of the schedule (one frame per step).")
    scheduler = _scheduler("The schedule whose sigmas the steps use.")
    vae = _vae()
    step = Int(10, min=0, max=MAX_FRAMES, tooltip="Step k noises to the schedule's sigma with k steps still to go, "
               "sigmas[steps − k] of the decreasing schedule: 0 is clean (σ = 0), `steps` is the first and largest "
               "σ (pure noise).")
    sigma = Float(0.0, min=0.0, max=1000.0, step=0.01, round=False, tooltip="When above 0, noise to this σ "
                  "instead of the step's (the frames still show the schedule; the nearest frame is selected).")
    image = Link("IMAGE", optional=True, tooltip="The image to noise (encoded with the VAE). Give this or a latent.")
    latent = Link("LATENT", optional=True, tooltip="The latent to noise (used when both are given).")
    outputs = (Output("LATENT", tooltip="The noised latent x0 + σ·ε (what a sampler at that σ starts from)."),
               Output("IMAGE", tooltip="The noised latent decoded after dividing by sqrt(1 + σ²)."))

    @classmethod
    def run(cls, ctx: RunContext, model: Model, seed: int, steps: int, scheduler: str, vae: Vae, step: int,
            sigma: float = 0.0, image: Tensor | None = None, latent: Latent | None = None) -> Result:
        schedule = _schedule(model, scheduler, steps)
        n = len(schedule) - 1
        if step > n:
            raise InspectInputError(f"step {step} is past the schedule: {scheduler} with {steps} steps has steps "
                                    f"0..{n}")
        pixels = None
        if latent is None:
            if image is None:
                raise InspectInputError("NoiseToTimestep needs an image or a latent to noise")
            pixels = crop_to_multiple(image, vae.downscale)
            latent = Latent(encode_images(ctx.services.models, vae, pixels))
        clean = latent.samples.float().cpu()
        noise = initial_noise(tuple(clean.shape), seed, batch_index=latent.batch_index)
        sampling = model.sampling
        # KSampler's model space (scale, and Flux / SD3's shift); an all-zero latent stays zero, as there.
        model_clean = to_model_space(model, clean) if torch.count_nonzero(clean) > 0 else clean

        def noised_at(level: float) -> Tensor:  # model space: KSampler's noise_scaling of the clean latent
            return sampling.noise_scaling(level, noise, model_clean, max_denoise=sampling.reaches_max(level))

        levels = [float(s) for s in schedule.flip(0)]  # frame order: 0 (clean) .. the largest σ
        frames = decode_latents(ctx, vae, model, [viewable(noised_at(s)[0], s) for s in levels])
        if pixels is not None:
            frames[0] = pixels[0].cpu()  # the clean frame is the input image itself, not its VAE round trip
        used = float(sigma) if sigma > 0 else levels[step]
        selected = int(np.argmin([abs(s - used) for s in levels])) if sigma > 0 else step
        if used == 0.0:
            noised = latent.samples
            picture = pixels if pixels is not None else decode_latents(ctx, vae, model, list(model_clean))
        else:
            noised_model = noised_at(used)
            noised = to_raw_space(model, noised_model).to(latent.samples.device)
            picture = decode_latents(ctx, vae, model, [viewable(x, used) for x in noised_model])
        refs = temp_refs(ctx, frames, "noising")
        # ui: {"noising": [{steps: N, sigmas: N + 1 floats in frame order (0 first, the largest last), selected,
        #      frames: [{step: i, sigma: sigmas[i], image: ref}] for i in 0..N}]}
        ui = {"steps": n, "sigmas": levels, "selected": selected,
              "frames": [{"step": i, "sigma": s, "image": refs[i]} for i, s in enumerate(levels)]}
        return Result(values=(latent.replace(samples=noised), picture), ui={"noising": [ui]})


class DenoiseOnce(Node):
    """One model prediction at one step: the latent (noised to the step's σ with the seed's noise, or taken as
    already noisy) goes through the model once, with CFG, and the node shows what the model thinks the clean image
    is (x̂₀) and the noise it sees, ε̂ = (x_t − x̂₀)/σ. Steps count as in NoiseToTimestep: step k is σ =
    sigmas[steps − k], `steps` the noisiest."""

    display_name = "Denoise Once"
    category = CATEGORY
    output_node = True
    model = _model()
    seed = _seed()
    steps = _steps("The number of steps of the schedule the step is taken from.")
    cfg = _cfg()
    scheduler = _scheduler("The schedule whose sigmas the steps use.")
    positive = Link("CONDITIONING", tooltip="What to include in the image.")
    negative = Link("CONDITIONING", tooltip="What to exclude from the image.")
    latent_image = Link("LATENT", tooltip="The clean latent to noise (add_noise enable), or a latent already at "
                                          "the step's σ, e.g. NoiseToTimestep's (add_noise disable).")
    vae = _vae()
    step = Int(10, min=1, max=10000, tooltip="Step k predicts at the schedule's σ with k steps still to go "
               "(sigmas[steps − k]); `steps` is the first, noisiest σ.")
    add_noise = Combo(("enable", "disable"), tooltip="enable: add the seed's noise to the latent first (as KSampler "
                      "does); disable: the latent is already noisy at that σ.")
    outputs = (Output("LATENT", tooltip="The predicted clean latent x̂₀."),
               Output("IMAGE", tooltip="The predicted clean image x̂₀, decoded."))

    @classmethod
    def run(cls, ctx: RunContext, model: Model, seed: int, steps: int, cfg: float, scheduler: str,
            positive: Conditioning, negative: Conditioning, latent_image: Latent, vae: Vae, step: int,
            add_noise: str) -> Result:
        schedule = _schedule(model, scheduler, steps)
        n = len(schedule) - 1
        if not 1 <= step <= n:
            raise InspectInputError(f"step must be between 1 and {n} ({scheduler} with {steps} steps), got {step}")
        level = float(schedule[n - step])
        # One Euler step from σ to 0 through KSampler's own path: its noise, guidance and patches; the recorder
        # keeps the model's x̂₀ of the whole batch (the Euler result is only x̂₀ up to rounding).
        request = SamplingRequest(seed=seed, cfg=cfg, sampler_name="euler", sigmas=torch.tensor([level, 0.0]),
                                  add_noise=add_noise == "enable")
        recorder = TimelineRecorder(item=None)
        sample(models=ctx.services.models, model=model, latent=latent_image, positive=positive, negative=negative,
               request=request, progress=ctx.progress, previews=False, observer=recorder)
        [record] = recorder.records
        x0 = latent_image.replace(samples=to_raw_space(model, record.x0).to(latent_image.samples.device))
        decoded = decode_latents(ctx, vae, model, [viewable(record.x[0], level)] + list(record.x0))
        eps_map = eps_image(record.eps[0], vae.downscale)[None]
        x0_refs = temp_refs(ctx, decoded[1:2], "denoise_once_x0")
        # ui: {"images": [x̂₀ ref], "denoise_once": [{sigma, input: ref (x_t / sqrt(1 + σ²)), x0: ref, eps: ref}]}
        ui = {"sigma": level, "input": temp_refs(ctx, decoded[:1], "denoise_once_input")[0], "x0": x0_refs[0],
              "eps": temp_refs(ctx, eps_map, "denoise_once_eps")[0]}
        return Result(values=(x0, decoded[1:]), ui={"images": x0_refs, "denoise_once": [ui]})


class SchedulePlot(Node):
    """The sigmas of every scheduler for the chosen steps, plotted together on a log axis: how normal, karras,
    exponential, beta... spend the steps between the largest and the smallest noise. eps and v models share SD's
    1000-step table; flow is the rectified-flow table (σ from 1 to 0). The final σ = 0 is off the log axis."""

    display_name = "Schedule Plot"
    category = CATEGORY
    output_node = True
    steps = Int(20, min=1, max=1000, tooltip="The number of sampling steps.")
    model_sampling = Combo(MODEL_SAMPLINGS, tooltip="Which noise table: eps / v (SD1.x, SD2.x, SDXL: the same "
                                                    "table) or flow (rectified flow, SD3/Flux-style).")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="As KSampler's denoise: below 1 only the last part "
                                                              "of a longer schedule is run.")
    outputs = (Output("IMAGE", tooltip="The chart."),)

    @classmethod
    def run(cls, ctx: RunContext, steps: int, model_sampling: str, denoise: float = 1.0) -> Result:
        curves = {name: sigma_curve(name, steps, denoise, model_sampling) for name in SCHEDULER_NAMES}
        title = f"sigma per step: {steps} steps, {model_sampling} table"
        if denoise < 1:
            title += f", denoise {denoise:g}"
        chart = draw_sigma_chart(curves, title=title)
        image = torch.from_numpy(np.asarray(chart, dtype=np.float32) / 255.0)[None]  # (1, H, W, 3)
        # ui: {"images": [chart ref], "schedule_plot": [{steps, model_sampling, curves: {scheduler: sigmas}}]}
        plot = {"steps": steps, "model_sampling": model_sampling, "curves": curves}
        return Result(values=(image,), ui={"images": temp_refs(ctx, image, "schedules"), "schedule_plot": [plot]})


class TrainingStep(Node):
    """The training objective on an image: pick a timestep t, add noise ε at its σ (x_t = x0 + σ·ε, which the model
    sees as sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·ε), let the model predict the noise from x_t and the prompt, and compare: the
    mean squared error of ε̂ against ε is the loss an eps model was trained on. Shows the noisy image, the true
    noise, the predicted noise (first three latent channels, ±3 scale) and the squared error (grey, white = the
    frame's largest); the MSE is over the whole batch, the images are of its first item."""

    display_name = "Training Step"
    category = CATEGORY
    output_node = True
    model = Link("MODEL", tooltip="The model whose noise prediction is tested (any loaded model).")
    seed = _seed()
    positive = Link("CONDITIONING", tooltip="The caption the model is given (an empty prompt is the unconditional "
                                            "branch).")
    vae = Link("VAE", tooltip="The VAE that encodes the image (and decodes the noisy frame).")
    image = Link("IMAGE", tooltip="The clean training image x0.")
    t = Int(500, min=0, max=999, tooltip="The DDPM timestep 0..999 (0 almost clean, 999 almost pure noise); "
                                         "σ is the model's table entry at t.")
    outputs = (Output("IMAGE", tooltip="Noisy image, true noise, predicted noise, error map."),
               Output("FLOAT", "mse", tooltip="Mean squared error of the predicted noise (the training loss)."))

    @classmethod
    def run(cls, ctx: RunContext, model: Model, seed: int, positive: Conditioning, vae: Vae, image: Tensor,
            t: int) -> Result:
        sampling = model.sampling
        if not 0 <= t < len(sampling.sigmas):
            raise InspectInputError(f"t must be between 0 and {len(sampling.sigmas) - 1}, got {t}")
        models = ctx.services.models
        clean = to_model_space(model, encode_images(models, vae, crop_to_multiple(image, vae.downscale)).float().cpu())
        noise = initial_noise(tuple(clean.shape), seed)
        level = float(sampling.sigmas[t])
        x = clean + level * noise
        predicted = _predict_noise(models, model, positive, x, level)
        error = (predicted - noise) ** 2
        mse = float(error.mean())
        frames = torch.cat([decode_latents(ctx, vae, model, [viewable(x[0], level)]),
                            torch.stack([eps_image(noise[0], vae.downscale), eps_image(predicted[0], vae.downscale),
                                         error_image(error[0], vae.downscale)])])
        refs = temp_refs(ctx, frames, "training_step")
        # ui: {"images": [4 refs], "training_step": [{t, sigma, mse, noisy, noise, predicted, error}]}
        ui = {"t": t, "sigma": level, "mse": mse, "noisy": refs[0], "noise": refs[1], "predicted": refs[2],
              "error": refs[3]}
        return Result(values=(frames, mse), ui={"images": refs, "training_step": [ui]})


def _predict_noise(models: Any, model: Model, positive: Conditioning, x: Tensor, level: float) -> Tensor:
    """ε̂ = (x − D(x, σ))/σ with D the model's x̂₀ for the positive conditioning alone (no guidance)."""
    with torch.inference_mode(), model_ready(models, model) as device:
        x_dev = x.to(device)
        entries = prepare_conditioning(positive, Conditioning(()), latent=x_dev, sampling=model.sampling,
                                       extra_conds=extra_conds_for(model))
        guided = GuidedDenoiser(denoiser=Denoiser(apply_model=model.unet, sampling=model.sampling), entries=entries,
                                cfg=1.0)
        sigma = torch.full((x.shape[0],), level, device=device)
        x0 = guided.predictions(x_dev, sigma)["cond"]
        return eps_from(x_dev, x0, level).float().cpu()


NODES = (DenoisingTimeline, NoiseToTimestep, DenoiseOnce, SchedulePlot, TrainingStep)
