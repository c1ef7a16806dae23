"""Compositing nodes with ComfyUI's names, inputs and numbers: pasting one image or latent onto another through an
optional mask, joining and splitting an alpha channel, and the Porter-Duff operators.

A MASK here is ComfyUI's: 1 marks the region (for alpha inputs, 1 is transparent). No node writes into its inputs.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F

from nodes.context import RunContext
from nodes.inputs import MAX_RESOLUTION, Boolean, Combo, Int, Link
from nodes.registry import Node, Output
from nodes.tensor_ops import match_alpha, repeat_to_batch_size, upscale
from nodes.types import Latent


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None,
              multiplier: int, resize_source: bool) -> torch.Tensor:
    """ComfyUI's composite: `source` ([b, C, h, w]) over a copy of `destination` ([B, C, H, W]) with its top-left
    corner at (x, y) // multiplier, weighted by `mask` (resized to the source) where given. The source batch is
    repeated or cut to the destination's; parts outside the destination are dropped."""
    out = destination.clone()
    source = source.to(out.device, out.dtype)
    if resize_source:
        source = F.interpolate(source, size=(out.shape[-2], out.shape[-1]), mode="bilinear")
    source = repeat_to_batch_size(source, out.shape[0])
    x = max(-source.shape[-1] * multiplier, min(x, out.shape[-1] * multiplier))
    y = max(-source.shape[-2] * multiplier, min(y, out.shape[-2] * multiplier))
    left, top = x // multiplier, y // multiplier
    right, bottom = left + source.shape[-1], top + source.shape[-2]
    if mask is None:
        weight = torch.ones_like(source)
    else:
        weight = mask.to(out.device, out.dtype).reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        weight = F.interpolate(weight, size=(source.shape[-2], source.shape[-1]), mode="bilinear")
        weight = repeat_to_batch_size(weight, source.shape[0])
    visible_width = out.shape[-1] - left + min(0, x)
    visible_height = out.shape[-2] - top + min(0, y)
    weight = weight[..., :visible_height, :visible_width]
    region = out[..., top:bottom, left:right]
    out[..., top:bottom, left:right] = weight * source[..., :visible_height, :visible_width] + (1 - weight) * region
    return out


# `source` pasted onto `destination` at (x, y) in pixels (multiples of 8), through `mask` where given.
class LatentCompositeMasked(Node):
    category = "latent"
    v3_schema = True
    destination = Link("LATENT")
    source = Link("LATENT")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    resize_source = Boolean(False)
    mask = Link("MASK", optional=True)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, destination: Latent, source: Latent, x: int, y: int, resize_source: bool,
            mask: torch.Tensor | None = None) -> tuple[Latent]:
        samples = composite(destination.samples, source.samples, x, y, mask, 8, resize_source)
        return (destination.replace(samples=samples),)


# `source` pasted onto `destination` at (x, y), through `mask` where given.
class ImageCompositeMasked(Node):
    category = "image"
    v3_schema = True
    destination = Link("IMAGE")
    source = Link("IMAGE")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    resize_source = Boolean(False)
    mask = Link("MASK", optional=True)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, destination: torch.Tensor, source: torch.Tensor, x: int, y: int,
            resize_source: bool, mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        destination, source = match_alpha(destination, source)
        out = composite(destination.movedim(-1, 1), source.movedim(-1, 1), x, y, mask, 1, resize_source)
        return (out.movedim(1, -1),)


class JoinImageWithAlpha(Node):
    display_name = "Join Image with Alpha"
    category = "mask/compositing"
    v3_schema = True
    image = Link("IMAGE")
    alpha = Link("MASK")
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor]:
        batch = max(len(image), len(alpha))
        image = repeat_to_batch_size(image, batch)
        alpha = repeat_to_batch_size(alpha.reshape((-1, alpha.shape[-2], alpha.shape[-1])), batch)
        alpha = F.interpolate(alpha.to(image).unsqueeze(1), size=(image.shape[1], image.shape[2]),
                              mode="bilinear").squeeze(1)
        return (torch.cat((image[..., :3], (1.0 - alpha).unsqueeze(-1)), dim=-1),)


class SplitImageWithAlpha(Node):
    display_name = "Split Image with Alpha"
    category = "mask/compositing"
    v3_schema = True
    image = Link("IMAGE")
    outputs = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return image[..., :3], 1.0 - alpha


class PorterDuffMode(Enum):
    ADD = 0
    CLEAR = 1
    DARKEN = 2
    DST = 3
    DST_ATOP = 4
    DST_IN = 5
    DST_OUT = 6
    DST_OVER = 7
    LIGHTEN = 8
    MULTIPLY = 9
    OVERLAY = 10
    SCREEN = 11
    SRC = 12
    SRC_ATOP = 13
    SRC_IN = 14
    SRC_OUT = 15
    SRC_OVER = 16
    XOR = 17


def porter_duff(src: torch.Tensor, src_alpha: torch.Tensor, dst: torch.Tensor, dst_alpha: torch.Tensor,
                mode: PorterDuffMode) -> tuple[torch.Tensor, torch.Tensor]:
    """One Porter-Duff operator on [H, W, C] images with [H, W, 1] MASK-convention alphas (1 = transparent);
    returns (image, mask) in the same conventions."""
    sa, da = 1 - src_alpha, 1 - dst_alpha
    s, d = src * sa, dst * da  # premultiplied
    if mode == PorterDuffMode.ADD:
        alpha, image = torch.clamp(sa + da, 0, 1), torch.clamp(s + d, 0, 1)
    elif mode == PorterDuffMode.CLEAR:
        alpha, image = torch.zeros_like(da), torch.zeros_like(d)
    elif mode == PorterDuffMode.DARKEN:
        alpha, image = sa + da - sa * da, (1 - da) * s + (1 - sa) * d + torch.min(s, d)
    elif mode == PorterDuffMode.DST:
        alpha, image = da, d
    elif mode == PorterDuffMode.DST_ATOP:
        alpha, image = sa, sa * d + (1 - da) * s
    elif mode == PorterDuffMode.DST_IN:
        alpha, image = sa * da, d * sa
    elif mode == PorterDuffMode.DST_OUT:
        alpha, image = (1 - sa) * da, (1 - sa) * d
    elif mode == PorterDuffMode.DST_OVER:
        alpha, image = da + (1 - da) * sa, d + (1 - da) * s
    elif mode == PorterDuffMode.LIGHTEN:
        alpha, image = sa + da - sa * da, (1 - da) * s + (1 - sa) * d + torch.max(s, d)
    elif mode == PorterDuffMode.MULTIPLY:
        alpha, image = sa * da, s * d
    elif mode == PorterDuffMode.OVERLAY:
        alpha = sa + da - sa * da
        image = torch.where(2 * d < da, 2 * s * d, sa * da - 2 * (da - s) * (sa - d))
    elif mode == PorterDuffMode.SCREEN:
        alpha, image = sa + da - sa * da, s + d - s * d
    elif mode == PorterDuffMode.SRC:
        alpha, image = sa, s
    elif mode == PorterDuffMode.SRC_ATOP:
        alpha, image = da, da * s + (1 - sa) * d
    elif mode == PorterDuffMode.SRC_IN:
        alpha, image = sa * da, s * da
    elif mode == PorterDuffMode.SRC_OUT:
        alpha, image = (1 - da) * sa, (1 - da) * s
    elif mode == PorterDuffMode.SRC_OVER:
        alpha, image = sa + (1 - sa) * da, s + (1 - sa) * d
    else:  # XOR
        alpha, image = (1 - da) * sa + (1 - sa) * da, (1 - da) * s + (1 - sa) * d
    image = torch.where(alpha > 1e-5, image / alpha, torch.zeros_like(image))
    return torch.clamp(image, 0, 1), 1 - alpha


class PorterDuffImageComposite(Node):
    display_name = "Porter-Duff Image Composite"
    category = "mask/compositing"
    v3_schema = True
    source = Link("IMAGE")
    source_alpha = Link("MASK")
    destination = Link("IMAGE")
    destination_alpha = Link("MASK")
    mode = Combo(tuple(m.name for m in PorterDuffMode), default=PorterDuffMode.DST.name)
    outputs = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def run(cls, ctx: RunContext, source: torch.Tensor, source_alpha: torch.Tensor, destination: torch.Tensor,
            destination_alpha: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        source_alpha, destination_alpha = (a.reshape((-1, a.shape[-2], a.shape[-1]))
                                           for a in (source_alpha, destination_alpha))
        batch = min(len(source), len(source_alpha), len(destination), len(destination_alpha))
        images, alphas = [], []
        for i in range(batch):
            src, dst = source[i], destination[i]
            if src.shape[2] != dst.shape[2]:
                raise ValueError(f"source has {src.shape[2]} channels and destination {dst.shape[2]}: they must "
                                 f"have the same number")
            src_alpha, dst_alpha = source_alpha[i].unsqueeze(2), destination_alpha[i].unsqueeze(2)
            if dst_alpha.shape[:2] != dst.shape[:2]:
                dst_alpha = _fit(dst_alpha, dst.shape[1], dst.shape[0])
            if src.shape != dst.shape:
                src = _fit(src, dst.shape[1], dst.shape[0])
            if src_alpha.shape != dst_alpha.shape:
                src_alpha = _fit(src_alpha, dst_alpha.shape[1], dst_alpha.shape[0])
            image, alpha = porter_duff(src, src_alpha, dst, dst_alpha, PorterDuffMode[mode])
            images.append(image)
            alphas.append(alpha.squeeze(2))
        return torch.stack(images), torch.stack(alphas)


def _fit(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[H, W, C] resized (bicubic, centre crop) to width x height."""
    return upscale(image.permute(2, 0, 1).unsqueeze(0), width, height, "bicubic", "center")[0].permute(1, 2, 0)


NODES = (ImageCompositeMasked, LatentCompositeMasked, JoinImageWithAlpha, SplitImageWithAlpha,
         PorterDuffImageComposite)
