"""The extra input channels of inpainting and InstructPix2Pix UNets (ComfyUI's ``concat_cond``, model_base.py).

A UNet whose input has more channels than the latent takes extra images concatenated to the noisy latent (after the
sampler's c_in scaling, before the first conv):

- inpainting (latent + 1 + latent channels, SD's 9): [mask, masked-image latent]. The mask is the conditioning's
  `concat_mask` (InpaintModelConditioning), else the latent's noise mask (VAEEncodeForInpaint), rounded, at the
  latent size; the image is `concat_latent_image` × the latent scale, else the start latent. Without any mask: a mask
  of ones and the latent of a black image (ComfyUI's blank_inpaint_image_like constants).
- InstructPix2Pix (2 × latent channels, 8): the `concat_latent_image` (zeros without one); raw for SD1, × the latent
  scale for SDXL (ComfyUI's process_ip2p_image_in).

For a 4-channel model the entries are ignored, as in ComfyUI. Images of another size are resized bilinearly with
ComfyUI's centre crop, and batches resized as its resize_to_batch_size.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

ConcatKind = Literal["none", "inpaint", "ip2p"]
CONCAT_LATENT_IMAGE = "concat_latent_image"
CONCAT_MASK = "concat_mask"
# The latent of an all-black image for SD's VAE (ComfyUI's blank_inpaint_image_like), per latent channel.
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


class ConcatError(ValueError):
    """A UNet whose extra input channels are neither an inpainting nor an InstructPix2Pix layout."""


def concat_kind(in_channels: int, latent_channels: int) -> ConcatKind:
    """What a UNet with `in_channels` inputs expects concatenated to a latent of `latent_channels`."""
    extra = in_channels - latent_channels
    if extra == 0:
        return "none"
    if extra == latent_channels + 1:
        return "inpaint"
    if extra == latent_channels:
        return "ip2p"
    raise ConcatError(f"a UNet with {in_channels} input channels for {latent_channels}-channel latents is neither an "
                      f"inpainting ({2 * latent_channels + 1}) nor an InstructPix2Pix ({2 * latent_channels}) model")


def _center_resize(image: Tensor, height: int, width: int) -> Tensor:
    """[B, C, h, w] -> [B, C, height, width]: centre-cropped to the aspect ratio, then bilinear (common_upscale)."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    old_h, old_w = image.shape[-2:]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    image = image.narrow(-2, y, old_h - 2 * y).narrow(-1, x, old_w - 2 * x)
    return F.interpolate(image, size=(height, width), mode="bilinear")


def resize_to_batch(tensor: Tensor, batch: int) -> Tensor:
    """ComfyUI's resize_to_batch_size: pick evenly spread items to shrink, repeat items in blocks to grow."""
    have = tensor.shape[0]
    if have == batch:
        return tensor
    if batch <= 1:
        return tensor[:batch]
    if batch < have:
        scale = (have - 1) / (batch - 1)
        index = [min(round(i * scale), have - 1) for i in range(batch)]
    else:
        scale = have / batch
        index = [min(math.floor((i + 0.5) * scale), have - 1) for i in range(batch)]
    return tensor[index]


def _image_like(image: Tensor, noise: Tensor) -> Tensor:
    image = image.to(device=noise.device, dtype=torch.float32)
    return resize_to_batch(_center_resize(image, noise.shape[-2], noise.shape[-1]), noise.shape[0])


def inpaint_concat(noise: Tensor, *, concat_latent_image: Tensor | None, concat_mask: Tensor | None,
                   latent_image: Tensor | None, denoise_mask: Tensor | None, latent_scale: float) -> Tensor:
    """[mask, masked-image latent] for an inpainting UNet: [B, 1 + C, H, W] (see the module docstring).

    Args:
        noise: the noise-shaped [B, C, H, W] tensor of the run (sizes and device).
        concat_latent_image: the conditioning's raw VAE latent of the masked image, or None.
        concat_mask: the conditioning's mask ([B or 1, 1, h, w] or [h, w], any size), or None.
        latent_image: the run's start latent, already in model space, or None.
        denoise_mask: the latent's noise mask (any size), or None.
        latent_scale: the family's latent scale factor (process_latent_in).
    """
    batch, channels, height, width = noise.shape
    mask = concat_mask if concat_mask is not None else denoise_mask
    if concat_latent_image is not None:
        image = _image_like(concat_latent_image, noise) * latent_scale
    elif latent_image is not None:
        image = _image_like(latent_image, noise)
    else:
        image = None
    if mask is None:
        blank = torch.tensor(BLANK_INPAINT_LATENT[:channels], device=noise.device, dtype=torch.float32)
        return torch.cat([torch.ones_like(noise[:, :1]), blank.reshape(1, -1, 1, 1).expand_as(noise)], dim=1)
    mask = mask.to(device=noise.device, dtype=torch.float32)
    if mask.ndim == 4:
        mask = mask[:, :1]
    mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    mask = resize_to_batch(_center_resize(mask, height, width).round(), batch)
    if image is None:
        image = torch.zeros_like(noise)
    return torch.cat([mask, image], dim=1)


def ip2p_concat(noise: Tensor, *, concat_latent_image: Tensor | None, latent_scale: float | None) -> Tensor:
    """The image latent of an InstructPix2Pix UNet: [B, C, H, W]; `latent_scale` None keeps it raw (SD1)."""
    if concat_latent_image is None:
        return torch.zeros_like(noise)
    image = _image_like(concat_latent_image, noise)
    return image * latent_scale if latent_scale is not None else image


__all__ = [
    "BLANK_INPAINT_LATENT",
    "CONCAT_LATENT_IMAGE",
    "CONCAT_MASK",
    "ConcatError",
    "ConcatKind",
    "concat_kind",
    "inpaint_concat",
    "ip2p_concat",
    "resize_to_batch",
]
