"""Image preprocessors that make ControlNet hints."""

from __future__ import annotations

import torch

from diffusion.canny import canny
from nodes.context import RunContext
from nodes.inputs import Float, Link
from nodes.registry import Node, Output


class Canny(Node):
    """Canny edges (white on black, 3 channels) of each image; a pixel is an edge above high_threshold, or above
    low_threshold when it connects to one (thresholds on the raw Sobel magnitude, as kornia/ComfyUI)."""

    description = ""
    category = "image/preprocessors"
    v3_schema = True
    image = Link("IMAGE")
    low_threshold = Float(0.4, min=0.01, max=0.99, step=0.01)
    high_threshold = Float(0.8, min=0.01, max=0.99, step=0.01)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, image: torch.Tensor, low_threshold: float, high_threshold: float
            ) -> tuple[torch.Tensor]:
        _, edges = canny(image.movedim(-1, 1), low_threshold, high_threshold)  # (B, 1, H, W)
        return (edges.repeat(1, 3, 1, 1).movedim(1, -1),)


NODES = (Canny,)
