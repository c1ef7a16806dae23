"""Conditioning nodes: encode prompts with CLIP, choose the CLIP layer, and combine, average, place or blank
conditionings."""

from __future__ import annotations

import logging
from contextlib import ExitStack

import torch

from diffusion.handles import Clip
from diffusion.patches import applied_to_clip
from diffusion.text_encode import encode_text, folder_embedding_lookup
from nodes.context import RunContext
from nodes.inputs import MAX_RESOLUTION, Combo, Float, Int, Link, String
from nodes.registry import Node, Output
from nodes.types import Area, CondEntry, Conditioning

log = logging.getLogger(__name__)


def encode_prompt(ctx: RunContext, clip: Clip, text: str) -> Conditioning:
    """Encode a prompt (ComfyUI weighting syntax, embedding:name) with this CLIP handle's layer and patches."""
    models = ctx.services.models
    lookup = folder_embedding_lookup(ctx.services.folders.search_dirs("embeddings"))
    if clip.family.prediction == "flow":  # Flux / SD3: T5 + CLIP (nodes/model_parts.py)
        from nodes.model_parts import encode_flow

        return encode_flow(ctx, clip, {"clip_l": text, "clip_g": text, "t5xxl": text})
    with torch.inference_mode(), ExitStack() as stack:
        if not clip.cpu_only:
            stack.enter_context(models.on_device(*clip.modules))
        stack.enter_context(applied_to_clip(clip))
        encoded = encode_text(text, encoders=[(e.slot, e.module) for e in clip.encoders], tokenizer=clip.tokenizer,
                              stop_at_clip_layer=clip.stop_at_clip_layer, embedding_lookup=lookup)
    return Conditioning((CondEntry(cross_attn=encoded.cond, pooled=encoded.pooled),))


class CLIPTextEncode(Node):
    """Encodes a text prompt with a CLIP model into conditioning that guides the diffusion model."""

    description = ("Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion "
                   "model towards generating specific images.")
    display_name = "CLIP Text Encode (Prompt)"
    category = "conditioning"
    text = String(None, multiline=True, dynamic_prompts=True, tooltip="The text to be encoded.")
    clip = Link("CLIP", tooltip="The CLIP model used for encoding the text.")
    outputs = (Output("CONDITIONING",
                      tooltip="A conditioning containing the embedded text used to guide the diffusion model."),)

    @classmethod
    def run(cls, ctx: RunContext, text: str, clip: Clip) -> tuple[Conditioning]:
        return (encode_prompt(ctx, clip, text),)


class CLIPSetLastLayer(Node):
    """Chooses the CLIP layer whose output conditions the model (-1 last, -2 penultimate, ...: "clip skip")."""

    description = ""
    display_name = "CLIP Set Last Layer"
    category = "conditioning"
    clip = Link("CLIP")
    stop_at_clip_layer = Int(-1, min=-24, max=-1, step=1)
    outputs = (Output("CLIP"),)

    @classmethod
    def run(cls, ctx: RunContext, clip: Clip, stop_at_clip_layer: int) -> tuple[Clip]:
        return (clip.with_layer(stop_at_clip_layer),)


class ConditioningCombine(Node):
    """Joins two conditionings; where both apply, sampling averages their predictions."""

    description = ""
    display_name = "Conditioning (Combine)"
    category = "conditioning"
    conditioning_1 = Link("CONDITIONING")
    conditioning_2 = Link("CONDITIONING")
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple[Conditioning]:
        return (conditioning_1 + conditioning_2,)


class ConditioningAverage(Node):
    """Blends the embeddings of two conditionings (conditioning_to_strength of `to`, the rest of `from`)."""

    description = ""
    category = "conditioning"
    conditioning_to = Link("CONDITIONING")
    conditioning_from = Link("CONDITIONING")
    conditioning_to_strength = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning_to: Conditioning, conditioning_from: Conditioning,
            conditioning_to_strength: float) -> tuple[Conditioning]:
        if len(conditioning_from) > 1:
            log.warning("ConditioningAverage: conditioning_from has %d entries; only the first is used",
                        len(conditioning_from))
        source = conditioning_from.entries[0]
        weight = conditioning_to_strength

        def blend(entry: CondEntry) -> CondEntry:
            target = entry.cross_attn
            other = source.cross_attn[:, :target.shape[1]].to(target)
            if other.shape[1] < target.shape[1]:  # pad the shorter prompt with zero tokens
                pad = torch.zeros((1, target.shape[1] - other.shape[1], target.shape[2]), dtype=target.dtype,
                                  device=target.device)
                other = torch.cat([other, pad], dim=1)
            pooled = entry.pooled
            if source.pooled is not None and pooled is not None:
                pooled = pooled * weight + source.pooled.to(pooled) * (1.0 - weight)
            elif source.pooled is not None:
                pooled = source.pooled
            return entry.replace(cross_attn=target * weight + other * (1.0 - weight), pooled=pooled)

        return (conditioning_to.map(blend),)


class ConditioningSetArea(Node):
    """Applies a conditioning only to a rectangle of the image (in pixels), with a strength."""

    description = ""
    display_name = "Conditioning (Set Area)"
    category = "conditioning"
    conditioning = Link("CONDITIONING")
    width = Int(64, min=64, max=MAX_RESOLUTION, step=8)
    height = Int(64, min=64, max=MAX_RESOLUTION, step=8)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning: Conditioning, width: int, height: int, x: int, y: int,
            strength: float) -> tuple[Conditioning]:
        area = Area(height // 8, width // 8, y // 8, x // 8)
        return (conditioning.map(lambda e: e.replace(area=area, strength=strength, set_area_to_bounds=False)),)


class ConditioningSetAreaPercentage(Node):
    """Applies a conditioning only to a rectangle given as fractions of the image size."""

    description = ""
    display_name = "Conditioning (Set Area with Percentage)"
    category = "conditioning"
    conditioning = Link("CONDITIONING")
    width = Float(1.0, min=0.0, max=1.0, step=0.01)
    height = Float(1.0, min=0.0, max=1.0, step=0.01)
    x = Float(0.0, min=0.0, max=1.0, step=0.01)
    y = Float(0.0, min=0.0, max=1.0, step=0.01)
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning: Conditioning, width: float, height: float, x: float, y: float,
            strength: float) -> tuple[Conditioning]:
        area = Area(height, width, y, x, unit="percent")
        return (conditioning.map(lambda e: e.replace(area=area, strength=strength, set_area_to_bounds=False)),)


class ConditioningSetMask(Node):
    """Applies a conditioning where a mask is set (optionally only inside the mask's bounding box)."""

    description = ""
    display_name = "Conditioning (Set Mask)"
    category = "conditioning"
    conditioning = Link("CONDITIONING")
    mask = Link("MASK")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01)
    set_cond_area = Combo(("default", "mask bounds"))
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning: Conditioning, mask: torch.Tensor, strength: float,
            set_cond_area: str) -> tuple[Conditioning]:
        mask = mask.reshape(-1, mask.shape[-2], mask.shape[-1]) if mask.ndim >= 2 else mask
        bounds = set_cond_area == "mask bounds"
        return (conditioning.map(lambda e: e.replace(mask=mask, mask_strength=strength,
                                                     set_area_to_bounds=bounds)),)


class ConditioningSetTimestepRange(Node):
    """Limits a conditioning to part of the sampling schedule (0 = first step, 1 = last)."""

    description = ""
    display_name = "ConditioningSetTimestepRange"
    category = "advanced/conditioning"
    conditioning = Link("CONDITIONING")
    start = Float(0.0, min=0.0, max=1.0, step=0.001)
    end = Float(1.0, min=0.0, max=1.0, step=0.001)
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning: Conditioning, start: float, end: float) -> tuple[Conditioning]:
        return (conditioning.map(lambda e: e.replace(start_percent=start, end_percent=end)),)


class ConditioningZeroOut(Node):
    """A conditioning of zeros with the same shape (an "empty" negative for models trained that way)."""

    description = ""
    category = "advanced/conditioning"
    conditioning = Link("CONDITIONING")
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning: Conditioning) -> tuple[Conditioning]:
        def zero(entry: CondEntry) -> CondEntry:
            pooled = None if entry.pooled is None else torch.zeros_like(entry.pooled)
            return entry.replace(cross_attn=torch.zeros_like(entry.cross_attn), pooled=pooled)

        return (conditioning.map(zero),)


NODES = (CLIPTextEncode, CLIPSetLastLayer, ConditioningCombine, ConditioningAverage, ConditioningSetArea,
         ConditioningSetAreaPercentage, ConditioningSetMask, ConditioningSetTimestepRange, ConditioningZeroOut)
