"""ComfyUI's comfy_extras.nodes_mask: its node classes (built like the others, comfy_extras/__init__.py) and the
`composite` function packs call, which is Chisel's (nodes/compositing.py), writing into `destination` as ComfyUI's
does."""

from __future__ import annotations

import sys

import torch

from comfy_compat.surface.comfy_extras import populate
from nodes.compositing import composite as _composite


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None = None,
              multiplier: int = 8, resize_source: bool = False) -> torch.Tensor:
    """`source` over `destination` ([B, C, H, W]) at (x, y) // multiplier, weighted by `mask`; destination is
    updated in place and returned."""
    destination.copy_(_composite(destination, source, x, y, mask, multiplier, resize_source))
    return destination


populate(sys.modules[__name__], "comfy_extras.nodes_mask")
