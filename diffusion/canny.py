"""Canny edge detection in torch (Canny 1986, "A Computational Approach to Edge Detection"), with the conventions
of kornia.filters.canny, which ComfyUI's Canny node calls: so the same low/high thresholds give the same edges.

    grey (BT.601 luma) -> 5x5 Gaussian blur, sigma 1 (reflect border) -> unnormalised Sobel gradients (replicate
    border) -> magnitude sqrt(gx² + gy² + eps) -> non-maximum suppression along the gradient direction rounded to
    45° -> weak (> low) / strong (> high) -> hysteresis: weak pixels 8-connected to strong ones become strong

The magnitude is the raw Sobel response (a unit step gives about 2.59 after the blur), so thresholds in (0, 1)
pick up soft edges too, as in ComfyUI.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

GREY_WEIGHTS = (0.299, 0.587, 0.114)
BLUR_SIZE = 5
BLUR_SIGMA = 1.0
EPS = 1e-6

# (dy, dx) of the neighbour in each of the 8 gradient directions k (k·45°, y pointing down), then the pixel itself.
_NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 0))


class CannyError(ValueError):
    """Bad Canny input (shape or thresholds)."""


def _gaussian_1d(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - size // 2
    kernel = torch.exp(-(x * x) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def _blur(grey: Tensor) -> Tensor:
    """Separable Gaussian blur of [B, 1, H, W] with reflected borders."""
    kernel = _gaussian_1d(BLUR_SIZE, BLUR_SIGMA, grey.device, grey.dtype)
    r = BLUR_SIZE // 2
    out = F.conv2d(F.pad(grey, (r, r, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="reflect"), kernel.view(1, 1, -1, 1))


def _sobel(image: Tensor) -> tuple[Tensor, Tensor]:
    """Unnormalised Sobel x and y responses of [B, 1, H, W] with replicated borders."""
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=image.device, dtype=image.dtype)
    kernels = torch.stack([gx, gx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    out = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernels)  # (B, 2, H, W)
    return out[:, :1], out[:, 1:]


def _hysteresis(edges: Tensor) -> Tensor:
    """Grow strong edges (1) into 8-connected weak ones (0.5) until nothing changes; 0/1 edges."""
    kernel = torch.ones(1, 1, 3, 3, device=edges.device, dtype=edges.dtype)
    strong = edges == 1
    weak = edges == 0.5
    while True:
        touching = F.conv2d(strong.to(edges.dtype), kernel, padding=1) > 0
        grown = strong | (weak & touching)
        if torch.equal(grown, strong):
            return strong.to(edges.dtype)
        strong = grown


def canny(images: Tensor, low_threshold: float, high_threshold: float) -> tuple[Tensor, Tensor]:
    """Canny edges of [B, C, H, W] images (C = 1, or 3 for RGB in [0, 1]).

    Returns:
        (magnitude after non-maximum suppression, edges of 0/1), each [B, 1, H, W] float32.

    Raises:
        CannyError: another channel count, or thresholds not 0 < low <= high.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise CannyError(f"Canny needs [B, 1 or 3, H, W] images, got shape {tuple(images.shape)}")
    if not 0 < low_threshold <= high_threshold:
        raise CannyError(f"Canny thresholds need 0 < low_threshold <= high_threshold, got {low_threshold} and "
                         f"{high_threshold}")
    x = images.float()
    if x.shape[1] == 3:
        r, g, b = x.unbind(1)
        x = (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b).unsqueeze(1)
    gx, gy = _sobel(_blur(x))
    height, width = gx.shape[-2:]
    padded = torch.sqrt(F.pad(gx, (1, 1, 1, 1)) ** 2 + F.pad(gy, (1, 1, 1, 1)) ** 2 + EPS)  # (B, 1, H+2, W+2)
    window = torch.stack([padded[..., 1 + dy:1 + dy + height, 1 + dx:1 + dx + width] for dy, dx in _NEIGHBOURS],
                         2)  # (B, 1, 9, H, W)
    magnitude = window[:, :, 8]
    direction = torch.round(torch.nan_to_num(torch.atan2(gy, gx)) * (4 / math.pi))  # multiples of 45°
    forward = (direction % 8).long()
    backward = ((direction + 4) % 8).long()
    neighbours = torch.gather(window, 2, torch.stack([forward, backward], 2))  # (B, 1, 2, H, W)

    def beats(other: Tensor, k: Tensor) -> Tensor:
        # As OpenCV and kornia: along the right (0) and down (2) directions a tie keeps the pixel, so of two equal
        # pixels across a step only one survives; every other direction needs a strictly larger magnitude.
        return (magnitude > other) | (((k == 0) | (k == 2)) & (magnitude == other))

    keep = beats(neighbours[:, :, 0], forward) & beats(neighbours[:, :, 1], backward)
    keep &= magnitude > padded[..., :1, :1]  # a flat pixel (border-level magnitude) is never an edge
    magnitude = magnitude * keep
    edges = ((magnitude > low_threshold).float() + (magnitude > high_threshold).float()) * 0.5
    return magnitude, _hysteresis(edges)
