"""Model patches that change classifier-free guidance: each returns a new MODEL whose ModelOptions carries one more
pre-CFG, cfg or post-CFG function (diffusion/model_patches.py), as ComfyUI's nodes do with
set_model_sampler_*_cfg_function. The weights are shared, never copied.

Node classes carry comments rather than docstrings: a docstring would become the description, which ComfyUI leaves
empty for most of these.
"""

from __future__ import annotations

from collections.abc import Callable

from diffusion import model_patches as mp
from diffusion.handles import Model
from nodes.context import RunContext
from nodes.inputs import Float, Int, Link
from nodes.registry import Node, Output

GUIDANCE = "advanced/guidance"


def _post_cfg(model: Model, fn: Callable, *, disable_cfg1_optimization: bool = False) -> Model:
    return model.with_options(model.options.with_post_cfg_function(
        fn, disable_cfg1_optimization=disable_cfg1_optimization))


def _pre_cfg(model: Model, fn: Callable) -> Model:
    return model.with_options(model.options.with_pre_cfg_function(fn))


# Perturbed-Attention Guidance: guide away from a prediction whose middle-block self-attention is the identity.
class PerturbedAttentionGuidance(Node):
    category = "model_patches/unet"
    v3_schema = True
    model = Link("MODEL")
    scale = Float(3.0, min=0.0, max=100.0, step=0.01, round=0.01)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, scale: float) -> tuple[Model]:
        return (_post_cfg(model, mp.PerturbedAttentionGuidance(scale=scale), disable_cfg1_optimization=True),)


# Self-Attention Guidance: guide away from the negative re-evaluated on an attention-masked blur of its x0.
class SelfAttentionGuidance(Node):
    display_name = "Self-Attention Guidance"
    category = "_for_testing"
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    scale = Float(0.5, min=-2.0, max=5.0, step=0.01)
    blur_sigma = Float(2.0, min=0.0, max=10.0, step=0.1)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, scale: float, blur_sigma: float) -> tuple[Model]:
        sag = mp.SelfAttentionGuidance(scale=scale, blur_sigma=blur_sigma)
        options = model.options.with_post_cfg_function(sag.post_cfg, disable_cfg1_optimization=True)
        return (model.with_options(options.with_patch_replace(sag.record, "attn1", "middle", 0, 0)),)


# CFG rescale (Lin et al. 2024): the guided prediction's std matched to the positive's, mixed by multiplier.
class RescaleCFG(Node):
    category = "advanced/model"
    model = Link("MODEL")
    multiplier = Float(0.7, min=0.0, max=1.0, step=0.01)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, multiplier: float) -> tuple[Model]:
        return (model.with_options(model.options.with_sampler_cfg_function(mp.RescaleCFG(multiplier=multiplier))),)


# CFG-Zero*: the negative scaled by the optimised projection coefficient before guiding.
class CFGZeroStar(Node):
    category = GUIDANCE
    v3_schema = True
    model = Link("MODEL")
    outputs = (Output("MODEL", "patched_model"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model) -> tuple[Model]:
        return (_post_cfg(model, mp.cfg_zero_star),)


# The guided x0's channel norm clamped to the positive's, times strength.
class CFGNorm(Node):
    category = GUIDANCE
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    strength = Float(1.0, min=0.0, max=100.0, step=0.01)
    outputs = (Output("MODEL", "patched_model"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, strength: float) -> tuple[Model]:
        return (_post_cfg(model, mp.CFGNorm(strength=strength)),)


# Adaptive Projected Guidance: the guidance's part parallel to the positive scaled by eta.
class APG(Node):
    display_name = "Adaptive Projected Guidance"
    category = "sampling/custom_sampling"
    v3_schema = True
    model = Link("MODEL")
    eta = Float(1.0, min=-10.0, max=10.0, step=0.01,
                tooltip="Controls the scale of the parallel guidance vector. Default CFG behavior at a setting of 1.")
    norm_threshold = Float(5.0, min=0.0, max=50.0, step=0.1,
                           tooltip="Normalize guidance vector to this value, normalization disable at a setting of 0.")
    momentum = Float(0.0, min=-5.0, max=1.0, step=0.01,
                     tooltip="Controls a running average of guidance during diffusion, disabled at a setting of 0.")
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, eta: float, norm_threshold: float, momentum: float
            ) -> tuple[Model]:
        return (_pre_cfg(model, mp.AdaptiveProjectedGuidance(eta=eta, norm_threshold=norm_threshold,
                                                             momentum=momentum)),)


class Mahiro(Node):
    display_name = "Mahiro CFG"
    description = ("Modify the guidance to scale more on the 'direction' of the positive prompt rather than the "
                   "difference between the negative prompt.")
    category = "_for_testing"
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    outputs = (Output("MODEL", "patched_model"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model) -> tuple[Model]:
        return (_post_cfg(model, mp.mahiro),)


class TCFG(Node):
    display_name = "Tangential Damping CFG"
    description = ("TCFG – Tangential Damping CFG (2503.18137)\n\nRefine the uncond (negative) to align with the "
                   "cond (positive) for improving quality.")
    category = GUIDANCE
    v3_schema = True
    model = Link("MODEL")
    outputs = (Output("MODEL", "patched_model"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model) -> tuple[Model]:
        return (_pre_cfg(model, mp.tangential_damping_cfg),)


class FreSca(Node):
    display_name = "FreSca"
    description = "Applies frequency-dependent scaling to the guidance"
    category = "_for_testing"
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    scale_low = Float(1.0, min=0, max=10, step=0.01, tooltip="Scaling factor for low-frequency components")
    scale_high = Float(1.25, min=0, max=10, step=0.01, tooltip="Scaling factor for high-frequency components")
    freq_cutoff = Int(20, min=1, max=10000, step=1,
                      tooltip="Number of frequency indices around center to consider as low-frequency")
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, scale_low: float, scale_high: float, freq_cutoff: int
            ) -> tuple[Model]:
        return (_pre_cfg(model, mp.FreSca(scale_low=scale_low, scale_high=scale_high, freq_cutoff=freq_cutoff)),)


# A LATENT_OPERATION applied to the guidance (cond − uncond) at every step.
class LatentApplyOperationCFG(Node):
    category = "latent/advanced/operations"
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    operation = Link("LATENT_OPERATION")
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, operation: Callable) -> tuple[Model]:
        return (_pre_cfg(model, mp.LatentOperationCFG(operation=operation)),)


NODES = (PerturbedAttentionGuidance, SelfAttentionGuidance, RescaleCFG, CFGZeroStar, CFGNorm, APG, Mahiro, TCFG,
         FreSca, LatentApplyOperationCFG)
