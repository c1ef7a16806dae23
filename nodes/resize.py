"""Resizing shared by the image and latent nodes: ComfyUI's centre crop to a target aspect ratio."""

from __future__ import annotations

import torch


def crop_to_aspect(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[..., H, W] centre-cropped to the aspect ratio of width x height (a view), as ComfyUI's "center" crop."""
    old_height, old_width = samples.shape[-2], samples.shape[-1]
    old_aspect, new_aspect = old_width / old_height, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    return samples.narrow(-2, y, old_height - 2 * y).narrow(-1, x, old_width - 2 * x)
