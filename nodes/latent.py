"""Latent nodes: empty latents, VAE encode/decode, noise masks for inpainting, upscaling and batch handling."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from diffusion.handles import Vae
from nodes.context import RunContext
from nodes.vae_ops import decode_images, encode_images
from nodes.inputs import MAX_RESOLUTION, Combo, Float, Int, Link
from nodes.registry import Node, Output
from nodes.resize import crop_to_aspect
from nodes.types import Latent

LatentUpscaleMethod = Literal["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
LATENT_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS = ("disabled", "center")


class EmptyLatentImage(Node):
    """A batch of empty latent images to start text-to-image sampling from."""

    description = "Create a new batch of empty latent images to be denoised via sampling."
    display_name = "Empty Latent Image"
    category = "latent"
    width = Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The width of the latent images in pixels.")
    height = Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="The height of the latent images in pixels.")
    batch_size = Int(1, min=1, max=4096, tooltip="The number of latent images in the batch.")
    outputs = (Output("LATENT", tooltip="The empty latent image batch."),)

    @classmethod
    def run(cls, ctx: RunContext, width: int, height: int, batch_size: int) -> tuple[Latent]:
        device = ctx.services.models.device
        return (Latent(torch.zeros((batch_size, 4, height // 8, width // 8), device=device)),)


class VAEDecode(Node):
    """Decodes latent images back into pixel space images."""

    description = "Decodes latent images back into pixel space images."
    display_name = "VAE Decode"
    category = "latent"
    samples = Link("LATENT", tooltip="The latent to be decoded.")
    vae = Link("VAE", tooltip="The VAE model used for decoding the latent.")
    outputs = (Output("IMAGE", tooltip="The decoded image."),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, vae: Vae) -> tuple[torch.Tensor]:
        return (decode_images(ctx.services.models, vae, samples.samples, check_interrupted=ctx.check_interrupted),)


class VAEEncode(Node):
    """Encodes images into latents (image-to-image)."""

    description = ""
    display_name = "VAE Encode"
    category = "latent"
    pixels = Link("IMAGE")
    vae = Link("VAE")
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, pixels: torch.Tensor, vae: Vae) -> tuple[Latent]:
        pixels = _crop_to_multiple(pixels, vae.downscale)
        return (Latent(encode_images(ctx.services.models, vae, pixels)),)


class VAEEncodeForInpaint(Node):
    """Encodes an image for inpainting: the masked area is blanked to grey and becomes the latent's noise mask."""

    description = ""
    display_name = "VAE Encode (for Inpainting)"
    category = "latent/inpaint"
    pixels = Link("IMAGE")
    vae = Link("VAE")
    mask = Link("MASK")
    grow_mask_by = Int(6, min=0, max=64, step=1)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, pixels: torch.Tensor, vae: Vae, mask: torch.Tensor,
            grow_mask_by: int) -> tuple[Latent]:
        height, width = pixels.shape[1], pixels.shape[2]
        mask = F.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(), size=(height, width),
                             mode="bilinear")  # [M, 1, H, W]
        pixels, mask = _crop_to_multiple(pixels, vae.downscale), _crop_to_multiple(mask.movedim(1, -1),
                                                                                    vae.downscale).movedim(-1, 1)
        hard = mask.round()
        if grow_mask_by == 0:
            grown = hard
        else:
            # Grow the mask a few pixels so the repainted region blends in latent space (ComfyUI's dilation).
            kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by), dtype=hard.dtype)
            grown = F.conv2d(hard, kernel, padding=math.ceil((grow_mask_by - 1) / 2)).clamp(0, 1)
            grown = grown[..., :hard.shape[-2], :hard.shape[-1]]
        keep = (1.0 - hard).movedim(1, -1)  # [M, H, W, 1]
        blanked = (pixels[..., :3] - 0.5) * keep + 0.5  # masked pixels -> 0.5 grey
        return (Latent(encode_images(ctx.services.models, vae, blanked), noise_mask=grown.round()),)


class SetLatentNoiseMask(Node):
    """Restricts sampling to the masked area of a latent (the rest is kept)."""

    description = ""
    display_name = "Set Latent Noise Mask"
    category = "latent/inpaint"
    samples = Link("LATENT")
    mask = Link("MASK")
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, mask: torch.Tensor) -> tuple[Latent]:
        return (samples.replace(noise_mask=mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])),)


class LatentUpscale(Node):
    """Resizes latents to a size in pixels (0 keeps the aspect ratio); for hires-fix second passes."""

    description = ""
    display_name = "Upscale Latent"
    category = "latent"
    samples = Link("LATENT")
    upscale_method = Combo(LATENT_UPSCALE_METHODS)
    width = Int(512, min=0, max=MAX_RESOLUTION, step=8)
    height = Int(512, min=0, max=MAX_RESOLUTION, step=8)
    crop = Combo(CROP_METHODS)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, upscale_method: LatentUpscaleMethod, width: int, height: int,
            crop: str) -> tuple[Latent]:
        if width == 0 and height == 0:
            return (samples,)
        lh, lw = samples.samples.shape[-2:]
        if width == 0:
            height = max(64, height)
            width = max(64, round(lw * height / lh))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(lh * width / lw))
        else:
            width, height = max(64, width), max(64, height)
        return (samples.replace(samples=resize_latent(samples.samples, width // 8, height // 8, upscale_method,
                                                      crop)),)


class LatentUpscaleBy(Node):
    """Resizes latents by a factor."""

    description = ""
    display_name = "Upscale Latent By"
    category = "latent"
    samples = Link("LATENT")
    upscale_method = Combo(LATENT_UPSCALE_METHODS)
    scale_by = Float(1.5, min=0.01, max=8.0, step=0.01)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, upscale_method: LatentUpscaleMethod,
            scale_by: float) -> tuple[Latent]:
        lh, lw = samples.samples.shape[-2:]
        width, height = max(1, round(lw * scale_by)), max(1, round(lh * scale_by))
        return (samples.replace(samples=resize_latent(samples.samples, width, height, upscale_method,
                                                      "disabled")),)


class RepeatLatentBatch(Node):
    """Repeats a latent batch; each copy keeps its own noise (batch_index continues)."""

    description = ""
    display_name = "Repeat Latent Batch"
    category = "latent/batch"
    samples = Link("LATENT")
    amount = Int(1, min=1, max=64)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, amount: int) -> tuple[Latent]:
        batch = samples.batch_size
        mask = samples.noise_mask
        if mask is not None and mask.shape[0] > 1:
            mask = mask.repeat(math.ceil(batch * amount / mask.shape[0]), 1, 1, 1)[:batch * amount]
        base = samples.batch_index or tuple(range(batch))
        offset = max(base) - min(base) + 1
        index = tuple(i + k * offset for k in range(amount) for i in base)
        return (Latent(samples.samples.repeat(amount, 1, 1, 1), noise_mask=mask, batch_index=index),)


class LatentFromBatch(Node):
    """Picks images out of a latent batch, keeping their place in the seeded batch (same noise as in the batch)."""

    description = ""
    display_name = "Latent From Batch"
    category = "latent/batch"
    samples = Link("LATENT")
    batch_index = Int(0, min=0, max=63)
    length = Int(1, min=1, max=64)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, batch_index: int, length: int) -> tuple[Latent]:
        batch = samples.batch_size
        start = min(batch - 1, batch_index)
        length = min(batch - start, length)
        mask = samples.noise_mask
        if mask is not None:
            mask = mask[start:start + length] if mask.shape[0] > 1 else mask
        index = samples.batch_index or tuple(range(batch))
        return (Latent(samples.samples[start:start + length].clone(), noise_mask=mask,
                       batch_index=tuple(index[start:start + length])),)


def resize_latent(samples: torch.Tensor, width: int, height: int, method: LatentUpscaleMethod,
                  crop: str) -> torch.Tensor:
    """[B, C, h, w] -> [B, C, height, width] (latent pixels), centre-cropping to the new aspect ratio first."""
    if crop == "center":
        samples = crop_to_aspect(samples, width, height)
    if method == "bislerp":
        return bislerp(samples, width, height)
    return F.interpolate(samples.float(), size=(height, width), mode=method).to(samples.dtype)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors a -> b ([N, C]) by t ([N, 1]); magnitudes interpolate linearly."""
    norm_a, norm_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    unit_a, unit_b = a / norm_a.clamp_min(1e-8), b / norm_b.clamp_min(1e-8)
    dot = (unit_a * unit_b).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    # Nearly parallel vectors: slerp degenerates to lerp (and sin(omega) -> 0 would divide by zero).
    close = sin_omega.abs() < 1e-5
    wa = torch.where(close, 1.0 - t, torch.sin((1.0 - t) * omega) / sin_omega.clamp_min(1e-8))
    wb = torch.where(close, t, torch.sin(t * omega) / sin_omega.clamp_min(1e-8))
    direction = wa * unit_a + wb * unit_b
    return direction * ((1.0 - t) * norm_a + t * norm_b)


def _bislerp_axis(samples: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Resize one spatial axis (-1 or -2) of [B, C, H, W] by slerping neighbouring channel vectors."""
    old = samples.shape[axis]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) * old / size - 0.5  # align_corners=False
    coords = coords.clamp(0, old - 1)
    low = coords.floor().long()
    high = (low + 1).clamp(max=old - 1)
    t = (coords - low.float())
    moved = samples.movedim(axis, -1).movedim(1, -1)  # [B, other, old, C]
    a, b = moved[..., low, :], moved[..., high, :]  # [B, other, size, C]
    shape = a.shape
    out = _slerp(a.reshape(-1, shape[-1]), b.reshape(-1, shape[-1]),
                 t.reshape(1, 1, -1, 1).expand(shape[0], shape[1], -1, 1).reshape(-1, 1))
    return out.reshape(shape).movedim(-1, 1).movedim(-1, axis)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resize that slerps channel vectors instead of averaging them (keeps latent vector norms)."""
    out = _bislerp_axis(samples.float(), width, -1)
    return _bislerp_axis(out, height, -2).to(samples.dtype)


def _crop_to_multiple(pixels: torch.Tensor, multiple: int) -> torch.Tensor:
    """[B, H, W, C] centre-cropped so H and W are multiples of the VAE's downscale factor."""
    height, width = pixels.shape[1], pixels.shape[2]
    h, w = (height // multiple) * multiple, (width // multiple) * multiple
    if (h, w) == (height, width):
        return pixels
    y, x = (height % multiple) // 2, (width % multiple) // 2
    return pixels[:, y:y + h, x:x + w, :]


NODES = (EmptyLatentImage, VAEDecode, VAEEncode, VAEEncodeForInpaint, SetLatentNoiseMask, LatentUpscale,
         LatentUpscaleBy, RepeatLatentBatch, LatentFromBatch)
