"""Image geometry and batch nodes with ComfyUI's names, inputs and numbers: size, scaling to a pixel budget or a
longest side, resize-and-pad, stitching, crop, flip, rotate, outpaint padding, batch picking and repeating, noise,
and loading an image from the output folder.

Images are [B, H, W, C] float tensors in [0, 1]; no node writes into its input. Node classes carry comments rather
than docstrings where ComfyUI's description is empty (a docstring would become the description).
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F

from diffusion.noise import SEED_MAX, cpu_generator
from nodes.context import RunContext
from nodes.image import UPSCALE_METHODS, LoadImage, resize_images
from nodes.inputs import MAX_RESOLUTION, Boolean, Combo, Float, Int, Link
from nodes.registry import Node, Output
from nodes.special_inputs import RemoteImages

TRANSFORM = "image/transform"
STITCH_COLORS: dict[str, tuple[float, ...]] = {"white": (1.0,), "black": (0.0,), "red": (1.0, 0.0, 0.0),
                                               "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class GetImageSize(Node):
    """Returns width and height of the image, and passes it through unchanged."""

    display_name = "Get Image Size"
    category = "image"
    v3_schema = True
    hidden = {"unique_id": "UNIQUE_ID"}
    image = Link("IMAGE")
    outputs = (Output("INT", name="width"), Output("INT", name="height"), Output("INT", name="batch_size"))

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, unique_id: str | None = None) -> tuple[int, int, int]:
        return int(image.shape[2]), int(image.shape[1]), int(image.shape[0])


# Scales to about `megapixels` (x 1024²) keeping the aspect ratio; each side rounds to a multiple of
# resolution_steps.
class ImageScaleToTotalPixels(Node):
    category = "image/upscaling"
    v3_schema = True
    image = Link("IMAGE")
    upscale_method = Combo(UPSCALE_METHODS)
    megapixels = Float(1.0, min=0.01, max=16.0, step=0.01)
    resolution_steps = Int(1, min=1, max=256)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, upscale_method: str, megapixels: float,
            resolution_steps: int) -> tuple[torch.Tensor]:
        height, width = image.shape[1], image.shape[2]
        scale = math.sqrt(megapixels * 1024 * 1024 / (width * height))
        new_width = round(width * scale / resolution_steps) * resolution_steps
        new_height = round(height * scale / resolution_steps) * resolution_steps
        if new_width < 1 or new_height < 1:
            raise ValueError(f"resolution_steps {resolution_steps} rounds a {width}x{height} image at {megapixels} "
                             f"megapixels to {new_width}x{new_height}")
        return (resize_images(image, int(new_width), int(new_height), upscale_method, "disabled"),)


# The longer side becomes largest_size, the other keeps the aspect ratio. (ComfyUI lists "bilinear" twice.)
class ImageScaleToMaxDimension(Node):
    category = "image/upscaling"
    v3_schema = True
    image = Link("IMAGE")
    upscale_method = Combo(("area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"))
    largest_size = Int(512, min=0, max=MAX_RESOLUTION, step=1)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, upscale_method: str, largest_size: int
            ) -> tuple[torch.Tensor]:
        width, height = longer_side_size(int(image.shape[2]), int(image.shape[1]), largest_size)
        return (resize_images(image, width, height, upscale_method, "disabled"),)


def longer_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the longer side set to `size` and the aspect ratio kept (ComfyUI's rounding)."""
    if height > width:
        return round(width / height * size), size
    if width > height:
        return size, round(height / width * size)
    return size, size


# Fits the image inside target_width x target_height (aspect kept, sizes truncated) and centres it on a white or
# black canvas of exactly that size.
class ResizeAndPadImage(Node):
    category = TRANSFORM
    v3_schema = True
    image = Link("IMAGE")
    target_width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    target_height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    padding_color = Combo(("white", "black"))
    interpolation = Combo(("area", "bicubic", "nearest-exact", "bilinear", "lanczos"))
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, target_width: int, target_height: int, padding_color: str,
            interpolation: str) -> tuple[torch.Tensor]:
        batch, height, width, channels = image.shape
        scale = min(target_width / width, target_height / height)
        new_width, new_height = int(width * scale), int(height * scale)
        if new_width < 1 or new_height < 1:
            raise ValueError(f"a {width}x{height} image fitted into {target_width}x{target_height} would have no "
                             f"pixels left")
        resized = resize_images(image, new_width, new_height, interpolation, "disabled")
        canvas = torch.full((batch, target_height, target_width, channels), 0.0 if padding_color == "black" else 1.0,
                            dtype=image.dtype, device=image.device)
        top, left = (target_height - new_height) // 2, (target_width - new_width) // 2
        canvas[:, top:top + new_height, left:left + new_width, :] = resized.to(image.dtype)
        return (canvas,)


class ImageStitch(Node):
    description = ("Stitches image2 to image1 in the specified direction.\n"
                   "If image2 is not provided, returns image1 unchanged.\n"
                   "Optional spacing can be added between images.")
    display_name = "Image Stitch"
    category = TRANSFORM
    v3_schema = True
    image1 = Link("IMAGE")
    direction = Combo(("right", "down", "left", "up"), default="right")
    match_image_size = Boolean(True)
    spacing_width = Int(0, min=0, max=1024, step=2)
    spacing_color = Combo(tuple(STITCH_COLORS), default="white")
    image2 = Link("IMAGE", optional=True)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image1: torch.Tensor, direction: str, match_image_size: bool, spacing_width: int,
            spacing_color: str, image2: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        if image2 is None:
            return (image1,)
        batch = max(image1.shape[0], image2.shape[0])
        image1, image2 = _repeat_last(image1, batch), _repeat_last(image2, batch)
        horizontal = direction in ("left", "right")
        color = STITCH_COLORS[spacing_color]
        if match_image_size:
            h1, w1 = image1.shape[1:3]
            h2, w2 = image2.shape[1:3]
            aspect = w2 / h2
            width, height = (int(h1 * aspect), h1) if horizontal else (w1, int(w1 / aspect))
            image2 = resize_images(image2, width, height, "lanczos", "disabled")
        else:  # centre the smaller one across the stitch, padded with the spacing colour (black for a colour)
            pad_value = color[0] if len(color) == 1 else 0.0
            image1, image2 = _pad_across(image1, image2, horizontal, pad_value)
        image1, image2 = _same_channels(image1, image2)
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            spacing_width += spacing_width % 2
            parts.insert(1, _spacer(image1, image2, spacing_width, horizontal, color))
        return (torch.cat(parts, dim=2 if horizontal else 1),)


def _repeat_last(images: torch.Tensor, batch: int) -> torch.Tensor:
    """The batch extended to `batch` images by repeating its last one."""
    missing = batch - images.shape[0]
    return images if missing <= 0 else torch.cat((images, images[-1:].repeat(missing, 1, 1, 1)))


def _pad_across(image1: torch.Tensor, image2: torch.Tensor, horizontal: bool,
                value: float) -> tuple[torch.Tensor, torch.Tensor]:
    axis = 1 if horizontal else 2  # heights match for a side-by-side stitch, widths for a stacked one
    target = max(image1.shape[axis], image2.shape[axis])

    def pad(images: torch.Tensor) -> torch.Tensor:
        missing = target - images.shape[axis]
        if missing <= 0:
            return images
        before, after = missing // 2, missing - missing // 2
        widths = (0, 0, 0, 0, before, after) if horizontal else (0, 0, before, after)
        return F.pad(images, widths, mode="constant", value=value)

    return pad(image1), pad(image2)


def _same_channels(image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both with the larger channel count; missing channels are filled with 1 (an opaque alpha)."""
    channels = max(image1.shape[-1], image2.shape[-1])

    def fill(images: torch.Tensor) -> torch.Tensor:
        missing = channels - images.shape[-1]
        if missing <= 0:
            return images
        return torch.cat((images, torch.ones(*images.shape[:-1], missing, dtype=images.dtype,
                                             device=images.device)), dim=-1)

    return fill(image1), fill(image2)


def _spacer(image1: torch.Tensor, image2: torch.Tensor, size: int, horizontal: bool,
            color: tuple[float, ...]) -> torch.Tensor:
    channels = image1.shape[-1]
    if horizontal:
        shape = (image1.shape[0], max(image1.shape[1], image2.shape[1]), size, channels)
    else:
        shape = (image1.shape[0], size, max(image1.shape[2], image2.shape[2]), channels)
    spacer = torch.zeros(shape, dtype=image1.dtype, device=image1.device)
    values = color * 3 if len(color) == 1 else color
    for index, value in enumerate(values[:min(3, channels)]):
        spacer[..., index] = value
    if channels == 4:
        spacer[..., 3] = 1.0
    return spacer


# The width x height region whose top-left corner is (x, y); x and y are clamped inside the image, the region is
# cut at its borders.
class ImageCrop(Node):
    display_name = "Image Crop"
    category = TRANSFORM
    v3_schema = True
    image = Link("IMAGE")
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, width: int, height: int, x: int, y: int
            ) -> tuple[torch.Tensor]:
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


# Mirrors images top-bottom ("x-axis: vertically") or left-right ("y-axis: horizontally").
class ImageFlip(Node):
    category = TRANSFORM
    v3_schema = True
    image = Link("IMAGE")
    flip_method = Combo(("x-axis: vertically", "y-axis: horizontally"))
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, flip_method: str) -> tuple[torch.Tensor]:
        return (torch.flip(image, dims=[1] if flip_method.startswith("x") else [2]),)


ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")


# Rotates images clockwise by quarter turns.
class ImageRotate(Node):
    category = TRANSFORM
    v3_schema = True
    image = Link("IMAGE")
    rotation = Combo(ROTATIONS)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, rotation: str) -> tuple[torch.Tensor]:
        return (torch.rot90(image, k=ROTATIONS.index(rotation), dims=[2, 1]),)


# `length` images of the batch from batch_index (both clamped to the batch).
class ImageFromBatch(Node):
    category = "image/batch"
    v3_schema = True
    image = Link("IMAGE")
    batch_index = Int(0, min=0, max=4095)
    length = Int(1, min=1, max=4096)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, batch_index: int, length: int) -> tuple[torch.Tensor]:
        start = min(image.shape[0] - 1, batch_index)
        length = min(image.shape[0] - start, length)
        return (image[start:start + length].clone(),)


# The whole batch `amount` times over.
class RepeatImageBatch(Node):
    category = "image/batch"
    v3_schema = True
    image = Link("IMAGE")
    amount = Int(1, min=1, max=4096)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, amount: int) -> tuple[torch.Tensor]:
        return (image.repeat((amount, 1, 1, 1)),)


# Adds strength x Gaussian noise drawn from the seed (one CPU draw for the whole batch), clamped to [0, 1].
class ImageAddNoise(Node):
    category = "image"
    v3_schema = True
    image = Link("IMAGE")
    seed = Int(0, min=0, max=SEED_MAX, control_after_generate=True,
               tooltip="The random seed used for creating the noise.")
    strength = Float(0.5, min=0.0, max=1.0, step=0.01)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, seed: int, strength: float) -> tuple[torch.Tensor]:
        noise = torch.randn(image.size(), generator=cpu_generator(seed), device="cpu").to(image)
        return (torch.clip(image + strength * noise, min=0.0, max=1.0),)


# Grey (0.5) borders for outpainting and a mask that is 1 on them, fading into the image over `feathering` pixels
# along the padded sides.
class ImagePadForOutpaint(Node):
    display_name = "Pad Image for Outpainting"
    category = "image"
    image = Link("IMAGE")
    left = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    top = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    right = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    bottom = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    feathering = Int(40, min=0, max=MAX_RESOLUTION, step=1)
    outputs = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, left: int, top: int, right: int, bottom: int,
            feathering: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch, height, width, channels = image.shape
        padded = torch.full((batch, height + top + bottom, width + left + right, channels), 0.5,
                            dtype=torch.float32, device=image.device)
        padded[:, top:top + height, left:left + width, :] = image
        mask = torch.ones((height + top + bottom, width + left + right), dtype=torch.float32)
        inner = torch.zeros((height, width), dtype=torch.float32)
        if 0 < feathering and feathering * 2 < height and feathering * 2 < width:
            rows = torch.arange(height, dtype=torch.float64)[:, None]
            cols = torch.arange(width, dtype=torch.float64)[None, :]
            # distance to each padded side (an unpadded side counts as far away)
            distance = torch.minimum(
                torch.minimum(rows if top else torch.full_like(rows, height),
                              height - rows if bottom else torch.full_like(rows, height)),
                torch.minimum(cols if left else torch.full_like(cols, width),
                              width - cols if right else torch.full_like(cols, width)))
            fade = (feathering - distance) / feathering
            inner = torch.where(distance < feathering, fade * fade, 0.0).to(torch.float32)
        mask[top:top + height, left:left + width] = inner
        return padded, mask.unsqueeze(0)


# LoadImage reading names the editor lists from the output folder ("x.png [output]").
class LoadImageOutput(LoadImage):
    description = ("Load an image from the output folder. When the refresh button is clicked, the node will update "
                   "the image list and automatically select the first image, allowing for easy iteration.")
    display_name = "Load Image (from Outputs)"
    category = "image"
    experimental = True
    image = RemoteImages(folder="output", route="/internal/files/output")


NODES = (GetImageSize, ImageScaleToTotalPixels, ImageScaleToMaxDimension, ResizeAndPadImage, ImageStitch, ImageCrop,
         ImageFlip, ImageRotate, ImageFromBatch, RepeatImageBatch, ImageAddNoise, ImagePadForOutpaint,
         LoadImageOutput)
