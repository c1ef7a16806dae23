"""ComfyUI's `comfy.samplers`: the sampler and scheduler names, sigma schedules, SAMPLER objects and CFGGuider.

The names are Chisel's tables (the same lists as ComfyUI: KSampler.SAMPLERS, KSampler.SCHEDULERS); a SAMPLER is
Chisel's (diffusion/sampling_values.Sampler, what KSamplerSelect gives); CFGGuider samples through Chisel's guider
with ComfyUI's set_conds / set_cfg / sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from comfy_compat import host
from diffusion.samplers import SAMPLER_NAMES as _SAMPLERS
from diffusion.sampling_values import Sampler
from diffusion.schedules import SCHEDULER_NAMES as _SCHEDULERS
from diffusion.schedules import scheduler_sigmas

KSAMPLER_NAMES = [n for n in _SAMPLERS if n not in ("ddim", "uni_pc", "uni_pc_bh2")]
SAMPLER_NAMES = list(_SAMPLERS)
SCHEDULER_NAMES = list(_SCHEDULERS)


def KSAMPLER(sampler_function: Callable[..., Any], extra_options: dict[str, Any] | None = None,  # noqa: N802
             inpaint_options: dict[str, Any] | None = None) -> Sampler:
    """ComfyUI's SAMPLER from a k-diffusion style function (what custom sampler packs return): the function is
    called as k-diffusion's samplers are, `extra_args["seed"]` carrying the seed, its callback dicts reported as
    Chisel's steps (progress, previews, interrupt)."""
    from comfy_compat.surface.comfy.k_diffusion.sampling import _Model, chisel_callback

    options = dict(extra_options or {})

    def run(model: Any, x: torch.Tensor, sigmas: torch.Tensor, *, extra_args: Any = None, callback: Any = None,
            seed: int | None = None) -> torch.Tensor:
        extra = {**dict(extra_args or {}), "seed": seed}
        return sampler_function(_Model(model), x, sigmas, extra_args=extra,
                                callback=chisel_callback(callback, max(len(sigmas) - 1, 0)), disable=True,
                                **options)

    return Sampler(name=getattr(sampler_function, "__name__", "custom"), function=run, noise="step",
                   options=options)


class _Handler:
    def __init__(self, name: str):
        self.name = name
        self.use_ms = True

    def handler(self, model_sampling: Any, steps: int) -> torch.Tensor:
        return scheduler_sigmas(model_sampling, self.name, steps)


SCHEDULER_HANDLERS = {name: _Handler(name) for name in _SCHEDULERS}


def calculate_sigmas(model_sampling: Any, scheduler_name: str, steps: int) -> torch.Tensor:
    """The named schedule's sigmas (steps + 1 values ending in 0) on a model's noise table."""
    if scheduler_name not in SCHEDULER_NAMES:
        raise ValueError(f"invalid scheduler {scheduler_name}")
    return scheduler_sigmas(model_sampling, scheduler_name, steps)


def sampler_object(name: str) -> Sampler:
    """The SAMPLER of this name (what the KSamplerSelect node gives)."""
    return Sampler.named(name)


def ksampler(sampler_name: str, extra_options: dict[str, Any] | None = None,
             inpaint_options: dict[str, Any] | None = None) -> Sampler:
    sampler = Sampler.named(sampler_name)
    return sampler.with_options(extra_options) if extra_options else sampler


class KSampler:
    """ComfyUI's KSampler class: the name lists, and sigmas for a model / steps / scheduler / denoise."""

    SCHEDULERS = SCHEDULER_NAMES
    SAMPLERS = SAMPLER_NAMES
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}

    def __init__(self, model: Any, steps: int, device: Any, sampler: str | None = None,
                 scheduler: str | None = None, denoise: float | None = None, model_options: Any = None):
        self.model = model
        self.device = device
        self.scheduler = scheduler if scheduler in self.SCHEDULERS else self.SCHEDULERS[0]
        self.sampler = sampler if sampler in self.SAMPLERS else self.SAMPLERS[0]
        self.steps = steps
        self.denoise = denoise if denoise is not None else 1.0
        self.set_steps(steps, denoise)

    def _sampling(self) -> Any:
        return self.model.get_model_object("model_sampling")

    def calculate_sigmas(self, steps: int) -> torch.Tensor:
        from diffusion.schedules import sampler_sigmas

        return sampler_sigmas(self._sampling(), self.scheduler, steps, sampler_name=self.sampler)

    def set_steps(self, steps: int, denoise: float | None = None) -> None:
        from diffusion.schedules import sampler_sigmas

        self.steps = steps
        self.sigmas = sampler_sigmas(self._sampling(), self.scheduler, steps, denoise=denoise or 1.0,
                                     sampler_name=self.sampler)

    def sample(self, noise: torch.Tensor, positive: Any, negative: Any, cfg: float, latent_image: torch.Tensor,
               start_step: int | None = None, last_step: int | None = None, force_full_denoise: bool = False,
               denoise_mask: torch.Tensor | None = None, sigmas: torch.Tensor | None = None,
               callback: Callable[..., Any] | None = None, disable_pbar: bool = False, seed: int | None = None
               ) -> torch.Tensor:
        from comfy_compat.surface.comfy import sample

        return sample.sample(self.model, noise, self.steps, cfg, self.sampler, self.scheduler, positive, negative,
                             latent_image, denoise=self.denoise, start_step=start_step, last_step=last_step,
                             force_full_denoise=force_full_denoise, noise_mask=denoise_mask,
                             sigmas=sigmas if sigmas is not None else self.sigmas, callback=callback,
                             disable_pbar=disable_pbar, seed=seed)


class CFGGuider:
    """ComfyUI's CFGGuider over a ModelPatcher: set_conds(positive, negative), set_cfg(cfg), sample(...)."""

    def __init__(self, model_patcher: Any):
        self.model_patcher = model_patcher
        self.model_options = getattr(model_patcher, "model_options", {})
        self.original_conds: dict[str, Any] = {}
        self.cfg = 1.0

    def set_conds(self, positive: Any, negative: Any) -> None:
        self.inner_set_conds({"positive": positive, "negative": negative})

    def inner_set_conds(self, conds: dict[str, Any]) -> None:
        self.original_conds.update(conds)

    def set_cfg(self, cfg: float) -> None:
        self.cfg = cfg

    def to_guider(self) -> Any:
        """Chisel's guider (diffusion/guiders.py) for this guider's model, conditioning and cfg (a GUIDER value)."""
        from diffusion.guiders import CFGGuider as ChiselCFGGuider
        from nodes.legacy import from_comfy_conditioning

        handle = self.model_patcher.to_handle() if hasattr(self.model_patcher, "to_handle") else self.model_patcher
        positive = from_comfy_conditioning(self.original_conds.get("positive", []))
        negative = from_comfy_conditioning(self.original_conds.get("negative", []))
        return ChiselCFGGuider(model=handle, positive=positive, negative=negative, cfg=self.cfg)

    def sample(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler: Sampler, sigmas: torch.Tensor,
               denoise_mask: torch.Tensor | None = None, callback: Callable[..., Any] | None = None,
               disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
        from nodes.ksampler import extra_conds_for, sample_on_model
        from nodes.types import Latent

        guider = self.to_guider()
        handle = guider.model
        ctx = host.current_run()
        progress = ctx.progress if ctx is not None and not disable_pbar else (lambda value, total, preview: None)
        total = max(len(sigmas) - 1, 0)
        if total == 0:
            return latent_image

        def run(start: torch.Tensor, device: torch.device, on_step: Callable[[Any], None]) -> torch.Tensor:
            def step(info: Any) -> None:
                on_step(info)
                if callback is not None:
                    callback(info.index, info.denoised, info.x, info.total or total)

            return guider.sample(noise.float().to(device), start, sampler, sigmas.to(device),
                                 seed=seed if seed is not None else 0, extra_conds=extra_conds_for(handle),
                                 denoise_mask=denoise_mask, callback=step)

        out = sample_on_model(models=host.services().models, model=handle,
                              latent=Latent(samples=latent_image, noise_mask=denoise_mask), total_steps=total,
                              run=run, progress=progress)
        return out.output.samples.cpu()


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('comfy.samplers', name)
