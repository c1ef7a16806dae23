"""Small tensor helpers the image, mask, latent and compositing nodes share, each ComfyUI's own rule so the nodes
built on them give ComfyUI's numbers: batch repetition, alpha-channel matching, the Gaussian and sharpening kernels of
the blur and sharpen filters, and resizing [B, C, H, W] tensors (ComfyUI's common_upscale, lanczos included).

Nothing here writes into its inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nodes.image import resize_images


def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    """The first `batch_size` items along `dim`, repeating the batch cyclically when it is shorter (ComfyUI's)."""
    size = tensor.shape[dim]
    if size > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if size < batch_size:
        repeats = [1] * tensor.ndim
        repeats[dim] = math.ceil(batch_size / size)
        return tensor.repeat(*repeats).narrow(dim, 0, batch_size)
    return tensor


def match_alpha(destination: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., C] images with the channel counts made equal for compositing onto `destination`: extra source channels
    are dropped; a source lacking the destination's alpha gets an opaque one.

    ComfyUI's node_helpers.image_alpha_fix pads the destination instead in the second case, which then fails to
    broadcast; an opaque source alpha is what that case means."""
    if destination.shape[-1] < source.shape[-1]:
        return destination, source[..., :destination.shape[-1]]
    if destination.shape[-1] > source.shape[-1]:
        missing = destination.shape[-1] - source.shape[-1]
        return destination, torch.cat((source, torch.ones_like(source[..., :1]).expand(
            *source.shape[:-1], missing)), dim=-1)
    return destination, source


def gaussian_kernel(kernel_size: int, sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """[k, k] Gaussian over the square [-1, 1]² sampled on k points per axis, normalised to sum 1 (ComfyUI's blur
    kernel: sigma is in units of the kernel's half-width, not pixels)."""
    axis = torch.linspace(-1, 1, kernel_size, device=device)
    x, y = torch.meshgrid(axis, axis, indexing="ij")
    squared = x * x + y * y
    g = torch.exp(-squared / (2.0 * sigma * sigma))
    return g / g.sum()


def sharpen_kernel(radius: int, sigma: float, alpha: float, device: torch.device | None = None) -> torch.Tensor:
    """ComfyUI's sharpen kernel: -alpha·10 x the Gaussian, with the centre raised so the kernel sums to 1."""
    kernel = gaussian_kernel(radius * 2 + 1, sigma, device=device) * -(alpha * 10)
    kernel[radius, radius] = kernel[radius, radius] - kernel.sum() + 1.0
    return kernel


def filter_reflect(images: torch.Tensor, kernel: torch.Tensor, radius: int, *, name: str) -> torch.Tensor:
    """[B, C, H, W] convolved per channel with a [k, k] kernel (k = 2·radius + 1) over a reflect-padded border, as
    ComfyUI's ImageBlur/ImageSharpen. Reflection needs radius < H and W; `name` is the input that sets it."""
    height, width = images.shape[-2:]
    if radius >= height or radius >= width:
        raise ValueError(f"{name} {radius} is too large for a {width}x{height} image: it must be smaller than both "
                         f"sides")
    channels = images.shape[1]
    weight = kernel.to(images.dtype).repeat(channels, 1, 1).unsqueeze(1)
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(padded, weight, groups=channels)


def upscale(samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """[B, C, H, W] -> [B, C, height, width] with ComfyUI's common_upscale methods (nearest-exact, bilinear, area,
    bicubic, lanczos) and its "center" crop to the target aspect ratio."""
    return resize_images(samples.movedim(1, -1), width, height, method, crop).movedim(-1, 1)


def as_mask_batch(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as [B, H, W] (a single [H, W] mask becomes a batch of one)."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))
