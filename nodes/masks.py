"""Mask nodes with ComfyUI's names, inputs and numbers: masks from images and colours, solid, invert, crop,
composite, feather, grow/shrink, threshold, and the mask preview.

MASK is [B, H, W] float in [0, 1] (a single [H, W] mask is accepted wherever ComfyUI accepts one); IMAGE is
[B, H, W, C]. No node writes into its input.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.ndimage
import torch

from nodes.context import RunContext
from nodes.image import PREVIEW_COMPRESS_LEVEL, PREVIEW_SUFFIX_LETTERS, save_images
from nodes.inputs import MAX_RESOLUTION, Boolean, Combo, Float, Int, Link
from nodes.registry import Node, Output, Result
from nodes.tensor_ops import as_mask_batch

CHANNELS = ("red", "green", "blue", "alpha")
OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


# 1 where a pixel's 8-bit colour (rounded) equals `color` (0xRRGGBB), else 0.
class ImageColorToMask(Node):
    category = "mask"
    v3_schema = True
    image = Link("IMAGE")
    color = Int(0, min=0, max=0xFFFFFF, step=1, display="number")
    outputs = (Output("MASK"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, color: int) -> tuple[torch.Tensor]:
        rgb = (torch.clamp(image, 0, 1.0) * 255.0).round().to(torch.int)
        packed = (rgb[..., 0] << 16) + (rgb[..., 1] << 8) + rgb[..., 2]
        return (torch.where(packed == color, 1.0, 0.0).float(),)


class ImageToMask(Node):
    display_name = "Convert Image to Mask"
    category = "mask"
    v3_schema = True
    image = Link("IMAGE")
    channel = Combo(CHANNELS)
    outputs = (Output("MASK"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"channel {channel!r}: the image has {image.shape[-1]} channels (no alpha)")
        return (image[..., index],)


class MaskToImage(Node):
    display_name = "Convert Mask to Image"
    category = "mask"
    v3_schema = True
    mask = Link("MASK")
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (as_mask_batch(mask).unsqueeze(-1).expand(-1, -1, -1, 3),)


# A [1, height, width] mask filled with `value`.
class SolidMask(Node):
    category = "mask"
    v3_schema = True
    value = Float(1.0, min=0.0, max=1.0, step=0.01)
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    outputs = (Output("MASK"),)

    @classmethod
    def run(cls, ctx: RunContext, value: float, width: int, height: int) -> tuple[torch.Tensor]:
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask(Node):
    category = "mask"
    v3_schema = True
    mask = Link("MASK")
    outputs = (Output("MASK"),)

    @classmethod
    def run(cls, ctx: RunContext, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - mask,)


# The width x height region at (x, y), cut at the mask's borders.
class CropMask(Node):
    category = "mask"
    v3_schema = True
    mask = Link("MASK")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    outputs = (Output("MASK"),)

    @classmethod
    def run(cls, ctx: RunContext, mask: torch.Tensor, x: int, y: int, width: int, height: int
            ) -> tuple[torch.Tensor]:
        return (as_mask_batch(mask)[:, y:y + height, x:x + width],)


# `source` combined into `destination` with its top-left corner at (x, y); the result is clamped to [0, 1]
# ("and"/"or"/"xor" read masks as on where >= 0.5).
class MaskComposite(Node):
    category = "mask"
    v3_schema = True
    destination = Link("MASK")
    source = Link("MASK")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    operation = Combo(OPERATIONS)
    outputs = (Output("MASK"),)

    @classmethod
    def run(cls, ctx: RunContext, destination: torch.Tensor, source: torch.Tensor, x: int, y: int,
            operation: str) -> tuple[torch.Tensor]:
        output = as_mask_batch(destination).clone()
        source = as_mask_batch(source)
        right = min(x + source.shape[-1], output.shape[-1])
        bottom = min(y + source.shape[-2], output.shape[-2])
        if right <= x or bottom <= y:  # placed entirely outside the destination
            return (torch.clamp(output, 0.0, 1.0),)
        region = output[:, y:bottom, x:right]
        part = source[:, :bottom - y, :right - x].to(output)
        if operation == "multiply":
            combined = region * part
        elif operation == "add":
            combined = region + part
        elif operation == "subtract":
            combined = region - part
        elif operation in ("and", "or", "xor"):
            logic = {"and": torch.bitwise_and, "or": torch.bitwise_or, "xor": torch.bitwise_xor}[operation]
            combined = logic(region.round().bool(), part.round().bool()).float()
        else:
            raise ValueError(f"operation {operation!r} is not one of {', '.join(OPERATIONS)}")
        if combined.shape[0] != output.shape[0]:
            if combined.shape[0] > output.shape[0]:
                raise ValueError(f"source has {source.shape[0]} masks, more than destination's {output.shape[0]}")
            combined = combined.expand(output.shape[0], -1, -1)
        output[:, y:bottom, x:right] = combined
        return (torch.clamp(output, 0.0, 1.0),)


# Fades the mask towards each side over that many pixels. As ComfyUI's loop, the right and bottom ramps scale the
# first column/row too (index -0 is 0) and stop one pixel short of the edge.
class FeatherMask(Node):
    category = "mask"
    v3_schema = True
    mask = Link("MASK")
    left = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    top = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    right = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    bottom = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    outputs = (Output("MASK"),)

    @classmethod
    def run(cls, ctx: RunContext, mask: torch.Tensor, left: int, top: int, right: int, bottom: int
            ) -> tuple[torch.Tensor]:
        output = as_mask_batch(mask).clone()
        height, width = output.shape[-2:]
        left, right, top, bottom = min(left, width), min(right, width), min(top, height), min(bottom, height)
        for x in range(left):
            output[:, :, x] *= (x + 1.0) / left
        for x in range(right):
            output[:, :, -x] *= (x + 1) / right
        for y in range(top):
            output[:, y, :] *= (y + 1) / top
        for y in range(bottom):
            output[:, -y, :] *= (y + 1) / bottom
        return (output,)


# Grows (expand > 0) or shrinks (< 0) the mask one pixel per step: grey dilation/erosion with a cross (tapered
# corners) or a 3x3 square, borders mirrored (scipy.ndimage, as ComfyUI).
class GrowMask(Node):
    display_name = "Grow Mask"
    category = "mask"
    v3_schema = True
    mask = Link("MASK")
    expand = Int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1)
    tapered_corners = Boolean(True)
    outputs = (Output("MASK"),)

    @classmethod
    def run(cls, ctx: RunContext, mask: torch.Tensor, expand: int, tapered_corners: bool) -> tuple[torch.Tensor]:
        corner = 0 if tapered_corners else 1
        footprint = np.array([[corner, 1, corner], [1, 1, 1], [corner, 1, corner]])
        step = scipy.ndimage.grey_erosion if expand < 0 else scipy.ndimage.grey_dilation
        grown = []
        for plane in as_mask_batch(mask):
            values = plane.detach().cpu().numpy()
            for _ in range(abs(expand)):
                values = step(values, footprint=footprint)
            grown.append(torch.from_numpy(np.ascontiguousarray(values)))
        return (torch.stack(grown, dim=0),)


# 1 where the mask is above `value`, else 0.
class ThresholdMask(Node):
    category = "mask"
    v3_schema = True
    mask = Link("MASK")
    value = Float(0.5, min=0.0, max=1.0, step=0.01)
    outputs = (Output("MASK"),)

    @classmethod
    def run(cls, ctx: RunContext, mask: torch.Tensor, value: float) -> tuple[torch.Tensor]:
        return ((mask > value).float(),)


class MaskPreview(Node):
    # ComfyUI's description of this node, word for word (it previews in the temp folder).
    description = "Saves the input images to your ComfyUI output directory."
    display_name = "Preview Mask"
    category = "mask"
    v3_schema = True
    output_node = True
    hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    mask = Link("MASK")

    @classmethod
    def run(cls, ctx: RunContext, mask: torch.Tensor, prompt: Mapping[str, Any] | None = None,
            extra_pnginfo: Mapping[str, Any] | None = None) -> Result:
        preview = as_mask_batch(mask).unsqueeze(-1).expand(-1, -1, -1, 3)
        suffix = "".join(random.Random().choice(PREVIEW_SUFFIX_LETTERS) for _ in range(5))
        saved = save_images(preview, ctx.services.folders.directory("temp"), "ComfyUI_temp_" + suffix, kind="temp",
                            compress_level=PREVIEW_COMPRESS_LEVEL)
        return Result(ui={"images": saved, "animated": (False,)})


NODES = (ImageColorToMask, ImageToMask, MaskToImage, SolidMask, InvertMask, CropMask, MaskComposite, FeatherMask,
         GrowMask, ThresholdMask, MaskPreview)
