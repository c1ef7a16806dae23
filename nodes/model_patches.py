"""Model patches that change the network or its noise table: FreeU, Deep Shrink, ToMe, HyperTile, Differential
Diffusion, the attention multipliers, ModelSamplingDiscrete, ModelComputeDtype, Epsilon Scaling and TSR.

Each returns a new MODEL (or CLIP) handle over the same weights: function patches go into its ModelOptions
(diffusion/model_options.py, implementations in diffusion/model_patches.py), weight scalings are WeightPatch values
applied for the duration of a run (diffusion/patches.py), and ModelSamplingDiscrete replaces the handle's noise table.
Node classes carry comments rather than docstrings (a docstring would become the description).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from diffusion import model_patches as mp
from diffusion.handles import Clip, Model
from diffusion.hypernetwork import HypernetworkPatch, load_hypernetwork
from diffusion.model_sampling import DiscreteSampling, Prediction
from diffusion.patches import WeightPatch
from nodes.context import RunContext
from nodes.inputs import Boolean, Combo, Files, Float, Int, Link
from nodes.loaders import file_identity
from nodes.registry import Node, Output
from nodes.tensor_ops import upscale

UNET_PATCHES = "model_patches/unet"
ATTENTION_EXPERIMENTS = "_for_testing/attention_experiments"
UPSCALE_METHODS = ("bicubic", "nearest-exact", "bilinear", "area", "bislerp")


def _model_channels(model: Model) -> int:
    return int(model.unet.config.model_channels)


class FreeU(Node):
    category = UNET_PATCHES
    v3_schema = True
    model = Link("MODEL")
    b1 = Float(1.1, min=0.0, max=10.0, step=0.01)
    b2 = Float(1.2, min=0.0, max=10.0, step=0.01)
    s1 = Float(0.9, min=0.0, max=10.0, step=0.01)
    s2 = Float(0.2, min=0.0, max=10.0, step=0.01)
    outputs = (Output("MODEL"),)
    version = 1

    @classmethod
    def run(cls, ctx: RunContext, model: Model, b1: float, b2: float, s1: float, s2: float) -> tuple[Model]:
        patch = mp.FreeU(model_channels=_model_channels(model), b1=b1, b2=b2, s1=s1, s2=s2, version=cls.version)
        return (model.with_options(model.options.with_patch("output_block_patch", patch)),)


class FreeU_V2(FreeU):  # noqa: N801 (ComfyUI's node name)
    b1 = Float(1.3, min=0.0, max=10.0, step=0.01)
    b2 = Float(1.4, min=0.0, max=10.0, step=0.01)
    s1 = Float(0.9, min=0.0, max=10.0, step=0.01)
    s2 = Float(0.2, min=0.0, max=10.0, step=0.01)
    version = 2


# Kohya's Deep Shrink: an early input block runs at a lower resolution during the first steps.
class PatchModelAddDownscale(Node):
    display_name = "PatchModelAddDownscale (Kohya Deep Shrink)"
    category = UNET_PATCHES
    v3_schema = True
    model = Link("MODEL")
    block_number = Int(3, min=1, max=32, step=1)
    downscale_factor = Float(2.0, min=0.1, max=9.0, step=0.001)
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001)
    end_percent = Float(0.35, min=0.0, max=1.0, step=0.001)
    downscale_after_skip = Boolean(True)
    downscale_method = Combo(UPSCALE_METHODS)
    upscale_method = Combo(UPSCALE_METHODS)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, block_number: int, downscale_factor: float, start_percent: float,
            end_percent: float, downscale_after_skip: bool, downscale_method: str, upscale_method: str
            ) -> tuple[Model]:
        shrink = mp.DeepShrink(block_number=block_number, downscale_factor=downscale_factor,
                               sigma_start=model.sampling.percent_to_sigma(start_percent),
                               sigma_end=model.sampling.percent_to_sigma(end_percent),
                               downscale_method=downscale_method, upscale_method=upscale_method, resize=upscale)
        where = "input_block_patch_after_skip" if downscale_after_skip else "input_block_patch"
        options = model.options.with_patch(where, shrink.input_patch).with_patch("output_block_patch",
                                                                                  shrink.output_patch)
        return (model.with_options(options),)


# Token merging (ToMe for SD) in the full-resolution self-attentions.
class TomePatchModel(Node):
    category = UNET_PATCHES
    v3_schema = True
    model = Link("MODEL")
    ratio = Float(0.3, min=0.0, max=1.0, step=0.01)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, ratio: float) -> tuple[Model]:
        tome = mp.TokenMerging(ratio=ratio)
        options = model.options.with_patch("attn1_patch", tome.merge).with_patch("attn1_output_patch", tome.unmerge)
        return (model.with_options(options),)


# Self-attention on tiles of about tile_size pixels.
class HyperTile(Node):
    category = UNET_PATCHES
    v3_schema = True
    model = Link("MODEL")
    tile_size = Int(256, min=1, max=2048)
    swap_size = Int(2, min=1, max=128)
    max_depth = Int(0, min=0, max=10)
    scale_depth = Boolean(False)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, tile_size: int, swap_size: int, max_depth: int, scale_depth: bool
            ) -> tuple[Model]:
        channels = _model_channels(model)
        tiles = mp.HyperTile(model_channels=channels,
                             apply_to=frozenset(channels * 2**i for i in range(max_depth + 1)),
                             latent_tile_size=max(32, tile_size) // 8, swap_size=swap_size, scale_depth=scale_depth)
        options = model.options.with_patch("attn1_patch", tiles.tile).with_patch("attn1_output_patch", tiles.untile)
        return (model.with_options(options),)


# Differential Diffusion: a soft inpainting mask decides per pixel how many of the steps change it.
class DifferentialDiffusion(Node):
    display_name = "Differential Diffusion"
    category = "_for_testing"
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    strength = Float(1.0, min=0.0, max=1.0, step=0.01, optional=True)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, strength: float = 1.0) -> tuple[Model]:
        return (model.with_options(model.options.with_denoise_mask_function(
            mp.DifferentialDiffusion(strength=strength))),)


class EpsilonScaling(Node):
    node_type = "Epsilon Scaling"
    category = UNET_PATCHES
    v3_schema = True
    model = Link("MODEL")
    scaling_factor = Float(1.005, min=0.5, max=1.5, step=0.001, display="number")
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, scaling_factor: float) -> tuple[Model]:
        return (model.with_options(model.options.with_post_cfg_function(
            mp.EpsilonScaling(scaling_factor=scaling_factor))),)


class TemporalScoreRescaling(Node):
    display_name = "TSR - Temporal Score Rescaling"
    description = ("[Post-CFG Function]\nTSR - Temporal Score Rescaling (2510.01184)\n\nRescaling the model's score "
                   "or noise to steer the sampling diversity.\n")
    category = UNET_PATCHES
    v3_schema = True
    model = Link("MODEL")
    tsr_k = Float(0.95, min=0.01, max=100.0, step=0.001, display="number",
                  tooltip="Controls the rescaling strength.\nLower k produces more detailed results; higher k produces "
                          "smoother results in image generation. Setting k = 1 disables rescaling.")
    tsr_sigma = Float(1.0, min=0.01, max=100.0, step=0.001, display="number",
                      tooltip="Controls how early rescaling takes effect.\nLarger values take effect earlier.")
    outputs = (Output("MODEL", "patched_model"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, tsr_k: float, tsr_sigma: float) -> tuple[Model]:
        return (model.with_options(model.options.with_post_cfg_function(
            mp.TemporalScoreRescaling(tsr_k=tsr_k, tsr_sigma=tsr_sigma))),)


# ---- noise table and compute dtype ---------------------------------------------------------------------------
_PREDICTIONS: Mapping[str, Prediction] = {"eps": "eps", "v_prediction": "v", "lcm": "lcm", "x0": "x0",
                                          "img_to_img": "img_to_img"}


# The noise table and prediction type the samplers use for this model (the weights are unchanged).
class ModelSamplingDiscrete(Node):
    category = "advanced/model"
    model = Link("MODEL")
    sampling = Combo(tuple(_PREDICTIONS))
    zsnr = Boolean(False)
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, sampling: str, zsnr: bool) -> tuple[Model]:
        family = model.family
        table = DiscreteSampling.linear(prediction=_PREDICTIONS[sampling], linear_start=family.linear_start,
                                        linear_end=family.linear_end, timesteps=family.num_timesteps, zsnr=zsnr)
        if sampling == "lcm":
            table = table.distilled()
        return (dataclasses.replace(model, sampling=table),)


_DTYPES: Mapping[str, torch.dtype | None] = {"default": None, "fp32": torch.float32, "fp16": torch.float16,
                                             "bf16": torch.bfloat16}


class _ComputeDtype:
    """model_function_wrapper: each model call under autocast to ``dtype`` (weights cast per op, never stored)."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __call__(self, apply_model: Callable[..., torch.Tensor], args: Mapping[str, Any]) -> torch.Tensor:
        x = args["input"]
        with torch.autocast(device_type=x.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return apply_model(args["input"], args["timestep"], **args["c"]).float()


class ModelComputeDtype(Node):
    category = "advanced/debug/model"
    model = Link("MODEL")
    dtype = Combo(tuple(_DTYPES))
    outputs = (Output("MODEL"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, dtype: str) -> tuple[Model]:
        target = _DTYPES[dtype]
        if target is None:
            return (model,)
        return (model.with_options(model.options.with_model_function_wrapper(_ComputeDtype(target))),)


# ---- attention weight multipliers ------------------------------------------------------------------------------
def _scaled(names: list[str], suffixes: Mapping[str, float], root: str, source: str) -> list[WeightPatch]:
    """W' = factor · W for every parameter ending in one of the suffixes (ComfyUI's add_patches(None, 0, factor));
    factor 1 is left out (it changes nothing)."""
    out = []
    for name in names:
        for suffix, factor in suffixes.items():
            if name.endswith(suffix) and factor != 1.0:
                out.append(WeightPatch(root=root, target=name, value=None, strength_patch=0.0,  # type: ignore[arg-type]
                                       strength_model=factor, source=source))
    return out


def _attention_suffixes(attn: str, q: float, k: float, v: float, out: float) -> dict[str, float]:
    return {f"{attn}.to_q.weight": q, f"{attn}.to_q.bias": q, f"{attn}.to_k.weight": k, f"{attn}.to_k.bias": k,
            f"{attn}.to_v.weight": v, f"{attn}.to_v.bias": v, f"{attn}.to_out.0.weight": out,
            f"{attn}.to_out.0.bias": out}


class UNetSelfAttentionMultiply(Node):
    category = ATTENTION_EXPERIMENTS
    v3_schema = True
    experimental = True
    model = Link("MODEL")
    q = Float(1.0, min=0.0, max=10.0, step=0.01)
    k = Float(1.0, min=0.0, max=10.0, step=0.01)
    v = Float(1.0, min=0.0, max=10.0, step=0.01)
    out = Float(1.0, min=0.0, max=10.0, step=0.01)
    outputs = (Output("MODEL"),)
    attention = "attn1"

    @classmethod
    def run(cls, ctx: RunContext, model: Model, q: float, k: float, v: float, out: float) -> tuple[Model]:
        names = [name for name, _ in model.unet.named_parameters()]
        patches = _scaled(names, _attention_suffixes(cls.attention, q, k, v, out), "unet", cls.__name__)
        return (model.with_patches(*patches),)


class UNetCrossAttentionMultiply(UNetSelfAttentionMultiply):
    attention = "attn2"


class CLIPAttentionMultiply(Node):
    category = ATTENTION_EXPERIMENTS
    v3_schema = True
    experimental = True
    clip = Link("CLIP")
    q = Float(1.0, min=0.0, max=10.0, step=0.01)
    k = Float(1.0, min=0.0, max=10.0, step=0.01)
    v = Float(1.0, min=0.0, max=10.0, step=0.01)
    out = Float(1.0, min=0.0, max=10.0, step=0.01)
    outputs = (Output("CLIP"),)

    @classmethod
    def run(cls, ctx: RunContext, clip: Clip, q: float, k: float, v: float, out: float) -> tuple[Clip]:
        suffixes = {"self_attn.q_proj.weight": q, "self_attn.q_proj.bias": q, "self_attn.k_proj.weight": k,
                    "self_attn.k_proj.bias": k, "self_attn.v_proj.weight": v, "self_attn.v_proj.bias": v,
                    "self_attn.out_proj.weight": out, "self_attn.out_proj.bias": out}
        patches = []
        for encoder in clip.encoders:
            names = [name for name, _ in encoder.module.named_parameters()]
            patches += _scaled(names, suffixes, encoder.slot.name, "CLIPAttentionMultiply")
        return (clip.with_patches(*patches),)


# A hypernetwork's MLPs added to the keys and values of the self- and cross-attentions.
class HypernetworkLoader(Node):
    category = "loaders"
    v3_schema = True
    model = Link("MODEL")
    hypernetwork_name = Combo(Files("hypernetworks"))
    strength = Float(1.0, min=-10.0, max=10.0, step=0.01)
    outputs = (Output("MODEL"),)

    @classmethod
    def fingerprint(cls, ctx: RunContext, hypernetwork_name: str, **_: Any) -> tuple[str, int, int] | None:
        return file_identity(ctx, "hypernetworks", hypernetwork_name)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, hypernetwork_name: str, strength: float) -> tuple[Model]:
        path = ctx.services.folders.model_path("hypernetworks", hypernetwork_name)
        network = ctx.services.models.load(path, "hypernetwork", lambda p, device, dtype: load_hypernetwork(p))
        patch = HypernetworkPatch(network=network, strength=strength)
        return (model.with_options(model.options.with_patch("attn1_patch", patch).with_patch("attn2_patch", patch)),)


NODES = (FreeU, FreeU_V2, PatchModelAddDownscale, TomePatchModel, HyperTile, DifferentialDiffusion, EpsilonScaling,
         TemporalScoreRescaling, ModelSamplingDiscrete, ModelComputeDtype, UNetSelfAttentionMultiply,
         UNetCrossAttentionMultiply, CLIPAttentionMultiply, HypernetworkLoader)
