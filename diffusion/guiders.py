"""GUIDER: a model with its conditioning and guidance, which turns (noise, latent, SAMPLER, SIGMAS) into a sample
(ComfyUI's CFGGuider and its subclasses), and the one sampling run every guider makes.

``sample_guided`` is KSampler's run (sampling_pipeline.sample_latent) with the two parts custom sampling makes
pluggable: the guided denoiser comes from the guider and the sampler is a SAMPLER with bound options. The steps
are the same, in the same order, so CFGGuider + a plain sampler gives KSampler's latent bit for bit (tested).

Guiders:
  CFGGuider       classifier-free guidance, D = D_neg + (D_pos − D_neg)·cfg (guidance.GuidedDenoiser)
  basic_guider    one conditioning, no guidance (CFGGuider with an empty negative and cfg 1)
  DualCFGGuider   two prompts and a negative, each with its own scale ("regular" or "nested")
  PerpNegGuider   Perp-Neg (Armandpour et al. 2023): the negative's component perpendicular to the positive
A MODEL may carry a sampler cfg function (ComfyUI's ``set_model_sampler_cfg_function``; the PerpNeg model node
sets one) that replaces CFG's combination of the two predictions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from diffusion.guidance import ExtraConds, GuidedDenoiser, PreparedCond, prepare_conditioning
from diffusion.handles import Model
from diffusion.model_options import NO_OPTIONS, ModelOptions, with_sample_sigmas
from diffusion.model_sampling import Denoiser, DiscreteSampling
from diffusion.sampling_pipeline import checked_inputs, run_denoiser
from diffusion.samplers import DenoiserFn, StepCallback
from diffusion.samplers.cfg_pp import publish_uncond, uncond_wanted
from diffusion.sampling_values import Sampler
from diffusion.timeline import SamplingObserver, observed_callback
from diffusion.values import Conditioning

_NO_CONDITIONING = Conditioning(())
DualCfgStyle = Literal["regular", "nested"]


# ---- the model's sampler cfg function ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CfgArgs:
    """What a sampler cfg function sees at one model evaluation (ComfyUI's args dict, denoised form).

    cond / uncond are the positive and negative x0 predictions; uncond is zeros when cfg is 1 (ComfyUI skips the
    negative pass then and hands the function zeros).
    """

    x: Tensor
    sigma: Tensor
    cond: Tensor
    uncond: Tensor
    cond_scale: float


GroupPredictor = Callable[[Tensor, Tensor], Tensor]
"""(x, sigma) -> the x0 prediction of one conditioning (weighted over its entries)."""
PreparePrediction = Callable[[Conditioning], GroupPredictor]
"""Resolves a conditioning for this run's latent and returns its predictor."""


class SamplerCfgFunction(Protocol):
    """Replaces CFG's combination: prepared once per run, then called at every model evaluation. Returns what
    ComfyUI's function returns, x − (the guided x0)."""

    def prepare(self, predictor_for: PreparePrediction) -> Callable[[CfgArgs], Tensor]: ...


@dataclass(frozen=True, eq=False)
class ModelWithCfgFunction(Model):
    """A MODEL whose sampling combines cond and uncond with ``sampler_cfg_function`` instead of plain CFG."""

    sampler_cfg_function: SamplerCfgFunction | None = None


def with_sampler_cfg_function(model: Model, function: SamplerCfgFunction) -> ModelWithCfgFunction:
    """A new MODEL handle over the same weights with this cfg function (replacing one it had)."""
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(Model)}
    return ModelWithCfgFunction(**{**fields, "sampler_cfg_function": function})


def sampler_cfg_function(model: Model) -> SamplerCfgFunction | None:
    return getattr(model, "sampler_cfg_function", None)


def perp_neg(pos: Tensor, neg: Tensor, empty: Tensor, *, neg_scale: float, cond_scale: float) -> Tensor:
    """Perp-Neg guidance on x0 predictions: the negative direction minus its projection on the positive one, so the
    negative removes only what the positive does not ask for. The projection is over the whole batch (ComfyUI's)."""
    pos_dir = pos - empty
    neg_dir = neg - empty
    perp = neg_dir - (torch.mul(neg_dir, pos_dir).sum() / (torch.norm(pos_dir) ** 2)) * pos_dir
    return empty + cond_scale * (pos_dir - perp * neg_scale)


@dataclass(frozen=True, eq=False)
class PerpNegCfg:
    """The PerpNeg model node's cfg function: Perp-Neg against the empty prompt's prediction, evaluated separately."""

    empty: Conditioning
    neg_scale: float

    def prepare(self, predictor_for: PreparePrediction) -> Callable[[CfgArgs], Tensor]:
        predict_empty = predictor_for(self.empty)

        def combine(args: CfgArgs) -> Tensor:
            empty = predict_empty(args.x, args.sigma)
            guided = perp_neg(args.cond, args.uncond, empty, neg_scale=self.neg_scale, cond_scale=args.cond_scale)
            return args.x - guided

        return combine


# ---- shared denoiser pieces --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class GuidanceRun:
    """What a guider needs to resolve conditioning for one run."""

    base: Denoiser
    noise: Tensor
    sampling: DiscreteSampling
    extra_conds: ExtraConds
    max_batch: int | None
    observer: SamplingObserver | None = None  # sees the guider's main cond/uncond predictions (CFGGuider's)
    options: ModelOptions = NO_OPTIONS  # the MODEL's function patches (its transformer patches reach every call)

    def prepare(self, positive: Conditioning, negative: Conditioning = _NO_CONDITIONING) -> tuple[PreparedCond, ...]:
        return prepare_conditioning(positive, negative, latent=self.noise, sampling=self.sampling,
                                    extra_conds=self.extra_conds)

    def group(self, entries: Sequence[PreparedCond]) -> GroupPredictor:
        """The x0 prediction of one group of entries (all in the "cond" slot)."""
        guided = GuidedDenoiser(denoiser=self.base, entries=tuple(entries), cfg=1.0, max_batch=self.max_batch,
                                options=self.options.network_only())
        return lambda x, sigma: guided.predictions(x, sigma)["cond"]

    def predictor_for(self, conditioning: Conditioning) -> GroupPredictor:
        """The prediction of one conditioning; an empty one predicts zeros (ComfyUI's for an empty list)."""
        return self.group(self.prepare(conditioning) if len(conditioning) else ())

    def combiner(self, model: Model) -> Callable[[CfgArgs], Tensor] | None:
        function = sampler_cfg_function(model)
        return None if function is None else function.prepare(self.predictor_for)


def _cfg(combine: Callable[[CfgArgs], Tensor] | None, x: Tensor, sigma: Tensor, cond: Tensor, uncond: Tensor,
         scale: float) -> Tensor:
    """ComfyUI's cfg_function: plain CFG, or x − the model's cfg function."""
    if combine is None:
        return uncond + (cond - uncond) * scale
    return x - combine(CfgArgs(x=x, sigma=sigma, cond=cond, uncond=uncond, cond_scale=scale))


@dataclass(frozen=True, eq=False)
class _CfgFunctionDenoiser:
    """CFG whose combination is the model's cfg function (cond and uncond from one batched GuidedDenoiser)."""

    guided: GuidedDenoiser
    combine: Callable[[CfgArgs], Tensor]

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        preds = self.guided.predictions(x, sigma)
        uncond = preds["uncond"] if "uncond" in preds else torch.zeros_like(x)
        out = _cfg(self.combine, x, sigma, preds["cond"], uncond, self.guided.cfg)
        publish_uncond(uncond)  # last, after any prediction the cfg function made
        return out


def _area_counterparts(groups: list[list[PreparedCond]]) -> None:
    """Give every area entry a counterpart over the same area in each other group: that group's smallest entry
    enclosing the area, re-cut to it (ComfyUI's create_cond_with_same_area_if_none over all of a guider's
    conditionings; guidance.prepare_conditioning does the same for two)."""
    for index, group in enumerate(groups):
        for entry in list(group):  # entries added to this group later are visited too, as in ComfyUI
            if entry.area is None:
                continue
            for other_index, other in enumerate(groups):
                if other_index == index:
                    continue
                smallest: PreparedCond | None = None
                for candidate in other:
                    if candidate.area is None:
                        smallest = candidate if smallest is None else smallest
                    elif entry.area.inside(candidate.area):
                        if smallest is None or smallest.area is None or smallest.area.size > candidate.area.size:
                            smallest = candidate
                if smallest is not None and smallest.area != entry.area:
                    other.append(dataclasses.replace(entry, slot="cond", model_inputs=smallest.model_inputs))


def _prepare_groups(run: GuidanceRun, conditionings: Sequence[Conditioning]) -> list[list[PreparedCond]]:
    groups = [list(run.prepare(c)) if len(c) else [] for c in conditionings]
    _area_counterparts(groups)
    return groups


def _zeros_or(predict: GroupPredictor | None, x: Tensor, sigma: Tensor) -> Tensor:
    """A group's prediction, or zeros for a skipped one (ComfyUI's calc_cond_batch result for a None cond)."""
    return torch.zeros_like(x) if predict is None else predict(x, sigma)


# ---- the guiders -------------------------------------------------------------------------------------------------
class BaseGuider:
    """The run every guider shares; subclasses build the guided denoiser."""

    model: Model

    def denoiser(self, run: GuidanceRun) -> DenoiserFn:
        raise NotImplementedError

    def sample(self, noise: Tensor, latent: Tensor, sampler: Sampler, sigmas: Tensor, *, seed: int,
               extra_conds: ExtraConds, denoise_mask: Tensor | None = None, callback: StepCallback | None = None,
               max_batch: int | None = None, observer: SamplingObserver | None = None) -> Tensor:
        """Sample ``latent`` (model space, on the UNet's device, which the caller has made ready) from ``noise``."""
        return sample_guided(self, noise=noise, latent=latent, sampler=sampler, sigmas=sigmas, seed=seed,
                             extra_conds=extra_conds, denoise_mask=denoise_mask, callback=callback,
                             max_batch=max_batch, observer=observer)


@dataclass(frozen=True, eq=False)
class CFGGuider(BaseGuider):
    """Classifier-free guidance over a positive and a negative conditioning (KSampler's guidance)."""

    model: Model
    positive: Conditioning
    negative: Conditioning
    cfg: float

    def denoiser(self, run: GuidanceRun) -> DenoiserFn:
        guided = GuidedDenoiser(denoiser=run.base, entries=run.prepare(self.positive, self.negative), cfg=self.cfg,
                                max_batch=run.max_batch,
                                observer=None if run.observer is None else run.observer.predictions,
                                options=run.options)
        combine = run.combiner(self.model)
        return guided if combine is None else _CfgFunctionDenoiser(guided=guided, combine=combine)


def basic_guider(model: Model, conditioning: Conditioning) -> CFGGuider:
    """BasicGuider: the conditioning alone (ComfyUI's Guider_Basic is a CFGGuider with no negative at cfg 1)."""
    return CFGGuider(model=model, positive=conditioning, negative=_NO_CONDITIONING, cfg=1.0)


@dataclass(frozen=True, eq=False)
class _DualCfgDenoiser:
    positive: GroupPredictor
    middle: GroupPredictor
    negative: GroupPredictor
    cfg_conds: float
    cfg_cond2_negative: float
    nested: bool
    combine: Callable[[CfgArgs], Tensor] | None

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        skip_negative = skip_middle = False
        if not self.nested and not uncond_wanted() and math.isclose(self.cfg_cond2_negative, 1.0):
            # ComfyUI's cfg-1 shortcut (off while a CFG++ sampler wants the unconditional prediction): these
            # predictions are not evaluated and zeros stand in for them.
            skip_negative = True
            skip_middle = math.isclose(self.cfg_conds, 1.0)
        neg = _zeros_or(None if skip_negative else self.negative, x, sigma)
        mid = _zeros_or(None if skip_middle else self.middle, x, sigma)
        pos = self.positive(x, sigma)
        if self.nested:
            text = _cfg(self.combine, x, sigma, pos, mid, self.cfg_conds)
            out = neg + self.cfg_cond2_negative * (text - neg)
        else:
            out = _cfg(self.combine, x, sigma, mid, neg, self.cfg_cond2_negative) + (pos - mid) * self.cfg_conds
        publish_uncond(mid if self.nested else neg)  # the uncond of its (inner) CFG, as ComfyUI's post-CFG hook
        return out


@dataclass(frozen=True, eq=False)
class DualCFGGuider(BaseGuider):
    """Two prompts and a negative: "regular" D = CFG(cond2 vs negative, cfg_cond2_negative) + (cond1 − cond2)·
    cfg_conds; "nested" D = neg + cfg_cond2_negative·(CFG(cond1 vs cond2, cfg_conds) − neg)."""

    model: Model
    cond1: Conditioning
    cond2: Conditioning
    negative: Conditioning
    cfg_conds: float
    cfg_cond2_negative: float
    style: DualCfgStyle = "regular"

    def denoiser(self, run: GuidanceRun) -> DenoiserFn:
        positive, middle, negative = _prepare_groups(run, (self.cond1, self.cond2, self.negative))
        return _DualCfgDenoiser(
            positive=run.group(positive), middle=run.group(middle), negative=run.group(negative),
            cfg_conds=self.cfg_conds, cfg_cond2_negative=self.cfg_cond2_negative, nested=self.style == "nested",
            combine=run.combiner(self.model))


@dataclass(frozen=True, eq=False)
class _PerpNegDenoiser:
    positive: GroupPredictor
    negative: GroupPredictor
    empty: GroupPredictor
    cfg: float
    neg_scale: float

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        skip_negative = skip_empty = False
        if not uncond_wanted() and math.isclose(self.neg_scale, 0.0):
            # ComfyUI's shortcut (off while a CFG++ sampler listens): zeros stand in for these predictions.
            skip_negative = True
            skip_empty = math.isclose(self.cfg, 1.0)
        pos = self.positive(x, sigma)
        neg = _zeros_or(None if skip_negative else self.negative, x, sigma)
        empty = _zeros_or(None if skip_empty else self.empty, x, sigma)
        out = perp_neg(pos, neg, empty, neg_scale=self.neg_scale, cond_scale=self.cfg)
        publish_uncond(neg)
        return out


@dataclass(frozen=True, eq=False)
class PerpNegGuider(BaseGuider):
    """Perp-Neg guidance with an empty prompt as the reference: at neg_scale 0 the negative is not evaluated, and
    also the empty prompt at cfg 1 (ComfyUI's shortcuts: zeros stand in for them)."""

    model: Model
    positive: Conditioning
    negative: Conditioning
    empty: Conditioning
    cfg: float
    neg_scale: float

    def denoiser(self, run: GuidanceRun) -> DenoiserFn:
        positive, empty, negative = _prepare_groups(run, (self.positive, self.empty, self.negative))
        return _PerpNegDenoiser(positive=run.group(positive), negative=run.group(negative), empty=run.group(empty),
                                cfg=self.cfg, neg_scale=self.neg_scale)


# ---- the run -----------------------------------------------------------------------------------------------------
def sample_guided(
    guider: BaseGuider,
    *,
    noise: Tensor,
    latent: Tensor,
    sampler: Sampler,
    sigmas: Tensor,
    seed: int,
    extra_conds: ExtraConds,
    denoise_mask: Tensor | None = None,
    callback: StepCallback | None = None,
    max_batch: int | None = None,
    observer: SamplingObserver | None = None,
) -> Tensor:
    """Sample a latent with a guider and a sampler: sampling_pipeline.sample_latent's steps, in its order.

    Args:
        guider: gives the model (its UNet already on the compute device, patches applied) and the guidance.
        noise: [B, C, H, W] unit noise (NOISE.generate_noise), zeros for none.
        latent: [B, C, H, W] start latent in model space (zeros for text-to-image).
        sampler: the SAMPLER.
        sigmas: 1-D; empty means nothing to do (the latent is returned).
        seed: the NOISE's seed, for the sampler's step noise and ddim's inpaint noise.
        extra_conds: (entry, latent) -> family-specific model inputs (SDXL's "y").
        denoise_mask: None, or a mask (1 = resample) of any resolution; the rest of the latent is kept exactly.
        callback: receives each step's SamplerStep; raise from it to stop.
        max_batch: most conditioning entries per model call.
        observer: sees the guider's cond/uncond predictions (CFGGuider only) and every step; changes nothing.

    Returns:
        The sampled latent, float32, in model space, on the latent's device.
    """
    latent, noise, sigmas = checked_inputs(latent, noise, sigmas)
    if len(sigmas) == 0:
        return latent.clone()
    sampling = guider.model.sampling
    options = with_sample_sigmas(guider.model.options, sigmas)
    run = GuidanceRun(base=Denoiser(apply_model=guider.model.unet, sampling=sampling), noise=noise,
                      sampling=sampling, extra_conds=extra_conds, max_batch=max_batch, observer=observer,
                      options=options)
    return run_denoiser(guider.denoiser(run), sampling=sampling, latent=latent, noise=noise, sigmas=sigmas,
                        seed=seed, run=sampler.run, inpaint_noise=sampler.inpaint_noise, denoise_mask=denoise_mask,
                        callback=observed_callback(callback, observer),
                        mask_function=options.denoise_mask_function)
