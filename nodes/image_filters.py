"""Pixel filters with ComfyUI's names, inputs and numbers: blend modes, Gaussian blur and unsharp-mask sharpen
(reflect borders), palette quantization with Floyd-Steinberg or Bayer dithering (Pillow, as ComfyUI), grey-scale
morphology with a flat square kernel (kornia's, with its "geodesic" border), and the RGB <-> YCbCr split.

Images are [B, H, W, C] float tensors in [0, 1]; no node writes into its input.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nodes.context import RunContext
from nodes.inputs import Combo, Float, Int, Link
from nodes.registry import Node, Output
from nodes.tensor_ops import filter_reflect, gaussian_kernel, match_alpha, sharpen_kernel, upscale

POSTPROCESSING = "image/postprocessing"
BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")
DITHERS = ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")
MORPHOLOGY = ("erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat")
KORNIA_MAX_VAL = 1e4  # kornia's "geodesic" border: padding that never wins a max (dilation) or min (erosion)


# image1 mixed with blend_mode(image1, image2) by blend_factor; image2 is resized (bicubic, centre crop) to
# image1's size when the shapes differ.
class ImageBlend(Node):
    category = POSTPROCESSING
    v3_schema = True
    image1 = Link("IMAGE")
    image2 = Link("IMAGE")
    blend_factor = Float(0.5, min=0.0, max=1.0, step=0.01)
    blend_mode = Combo(BLEND_MODES)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image1: torch.Tensor, image2: torch.Tensor, blend_factor: float,
            blend_mode: str) -> tuple[torch.Tensor]:
        image1, image2 = match_alpha(image1, image2.to(image1.device))
        if image1.shape != image2.shape:
            image2 = upscale(image2.movedim(-1, 1), int(image1.shape[2]), int(image1.shape[1]), "bicubic",
                             "center").movedim(1, -1)
        blended = blend(image1, image2, blend_mode)
        return (torch.clamp(image1 * (1 - blend_factor) + blended * blend_factor, 0, 1),)


def blend(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "normal":
        return b
    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":
        g = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
        return torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))
    if mode == "difference":
        return a - b
    raise ValueError(f"blend_mode {mode!r} is not one of {', '.join(BLEND_MODES)}")


# Gaussian blur over a (2·blur_radius + 1)² window; sigma is relative to the window's half-width.
class ImageBlur(Node):
    category = POSTPROCESSING
    v3_schema = True
    image = Link("IMAGE")
    blur_radius = Int(1, min=1, max=31, step=1)
    sigma = Float(1.0, min=0.1, max=10.0, step=0.1)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, blur_radius: int, sigma: float) -> tuple[torch.Tensor]:
        kernel = gaussian_kernel(blur_radius * 2 + 1, sigma, device=image.device)
        return (filter_reflect(image.movedim(-1, 1), kernel, blur_radius, name="blur_radius").movedim(1, -1),)


# Unsharp mask: the image minus alpha·10 x its Gaussian blur (the kernel's centre keeps it summing to 1), clamped.
class ImageSharpen(Node):
    category = POSTPROCESSING
    v3_schema = True
    image = Link("IMAGE")
    sharpen_radius = Int(1, min=1, max=31, step=1)
    sigma = Float(1.0, min=0.1, max=10.0, step=0.01)
    alpha = Float(1.0, min=0.0, max=5.0, step=0.01)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, sharpen_radius: int, sigma: float, alpha: float
            ) -> tuple[torch.Tensor]:
        kernel = sharpen_kernel(sharpen_radius, sigma, alpha, device=image.device)
        sharpened = filter_reflect(image.movedim(-1, 1), kernel, sharpen_radius, name="sharpen_radius")
        return (torch.clamp(sharpened.movedim(1, -1), 0, 1),)


# At most `colors` colours (Pillow's median-cut palette of the image), mapped without dithering, with
# Floyd-Steinberg, or with an ordered Bayer matrix.
class ImageQuantize(Node):
    category = POSTPROCESSING
    v3_schema = True
    image = Link("IMAGE")
    colors = Int(256, min=1, max=256, step=1)
    dither = Combo(DITHERS)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, colors: int, dither: str) -> tuple[torch.Tensor]:
        if image.shape[-1] != 3:
            raise ValueError(f"image: ImageQuantize takes RGB images, got {image.shape[-1]} channels")
        frames = []
        for frame in image:
            picture = Image.fromarray((frame * 255).to(torch.uint8).cpu().numpy())
            palette = picture.quantize(colors=colors)  # Pillow needs a palette image to quantize with dithering
            if dither == "none":
                quantized = picture.quantize(palette=palette, dither=Image.Dither.NONE)
            elif dither == "floyd-steinberg":
                quantized = picture.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
            else:
                quantized = _bayer(picture, palette, int(dither.split("-")[-1]))
            frames.append(torch.from_numpy(np.array(quantized.convert("RGB"))).float() / 255)
        return (torch.stack(frames).to(image.device, image.dtype),)


def _bayer_matrix(n: int) -> np.ndarray:
    """The normalised 2^n x 2^n Bayer threshold matrix (values centred on 0, spread ±0.5)."""
    if n == 0:
        return np.zeros((1, 1), dtype=np.float32)
    q = 4 ** n
    m = q * _bayer_matrix(n - 1)
    return np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q


def _bayer(picture: Image.Image, palette: Image.Image, order: int) -> Image.Image:
    spread = 2 * 256 / (len(palette.getpalette()) // 3)
    matrix = torch.from_numpy(spread * _bayer_matrix(int(math.log2(order))) + 0.5)
    pixels = torch.from_numpy(np.array(picture).astype(np.float32))
    tiles_y, tiles_x = math.ceil(pixels.shape[0] / matrix.shape[0]), math.ceil(pixels.shape[1] / matrix.shape[1])
    threshold = matrix.tile(tiles_y, tiles_x).unsqueeze(-1)[:pixels.shape[0], :pixels.shape[1]]
    dithered = (pixels + threshold).clamp(0, 255).to(torch.uint8)
    return Image.fromarray(dithered.numpy()).quantize(palette=palette, dither=Image.Dither.NONE)


class Morphology(Node):
    display_name = "ImageMorphology"
    category = POSTPROCESSING
    v3_schema = True
    image = Link("IMAGE")
    operation = Combo(MORPHOLOGY)
    kernel_size = Int(3, min=3, max=999, step=1)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, operation: str, kernel_size: int) -> tuple[torch.Tensor]:
        return (morphology(image.movedim(-1, 1), operation, kernel_size).movedim(1, -1),)


def morphology(images: torch.Tensor, operation: str, size: int) -> torch.Tensor:
    """[B, C, H, W] under kornia.morphology's operation with a flat size x size kernel (origin at size // 2)."""
    if operation == "erode":
        return _erode(images, size)
    if operation == "dilate":
        return _dilate(images, size)
    if operation == "open":
        return _dilate(_erode(images, size), size)
    if operation == "close":
        return _erode(_dilate(images, size), size)
    if operation == "gradient":
        return _dilate(images, size) - _erode(images, size)
    if operation == "top_hat":
        return images - _dilate(_erode(images, size), size)
    if operation == "bottom_hat":
        return _erode(_dilate(images, size), size) - images
    raise ValueError(f"operation {operation!r} is not one of {', '.join(MORPHOLOGY)}")


def _dilate(images: torch.Tensor, size: int) -> torch.Tensor:
    before = size // 2
    padded = F.pad(images, (before, size - before - 1, before, size - before - 1), value=-KORNIA_MAX_VAL)
    return F.max_pool2d(padded, kernel_size=size, stride=1)


def _erode(images: torch.Tensor, size: int) -> torch.Tensor:
    return -_dilate(-images, size)


# Splits RGB into Y, Cb (U) and Cr (V) planes (kornia's rgb_to_ycbcr), each shown as a grey image.
class ImageRGBToYUV(Node):
    category = "image/batch"
    v3_schema = True
    image = Link("IMAGE")
    outputs = (Output("IMAGE", name="Y"), Output("IMAGE", name="U"), Output("IMAGE", name="V"))

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if image.shape[-1] != 3:
            raise ValueError(f"image: ImageRGBToYUV takes RGB images, got {image.shape[-1]} channels")
        r, g, b = image[..., 0:1], image[..., 1:2], image[..., 2:3]
        y = 0.299 * r + 0.587 * g + 0.114 * b
        u = (b - y) * 0.564 + 0.5
        v = (r - y) * 0.713 + 0.5
        return y.expand_as(image), u.expand_as(image), v.expand_as(image)


# Joins Y, U and V images (each averaged over its channels) back into RGB (kornia's ycbcr_to_rgb).
class ImageYUVToRGB(Node):
    category = "image/batch"
    v3_schema = True
    Y = Link("IMAGE")
    U = Link("IMAGE")
    V = Link("IMAGE")
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, Y: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor]:
        y, u, v = (plane.mean(dim=-1, keepdim=True) for plane in (Y, U, V))
        u, v = u - 0.5, v - 0.5
        return (torch.cat((y + 1.403 * v, y - 0.714 * v - 0.344 * u, y + 1.773 * u), dim=-1),)


NODES = (ImageBlend, ImageBlur, ImageSharpen, ImageQuantize, Morphology, ImageRGBToYUV, ImageYUVToRGB)
