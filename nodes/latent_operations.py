"""LATENT_OPERATION values and the nodes that make and apply them (ComfyUI's experimental latent operations):
a sharpen of each pixel's channel direction, and Reinhard tone mapping of the channel-vector lengths.

An operation is a frozen, callable value: `operation(latent=tensor) -> tensor`, the way ComfyUI calls one, so a
ComfyUI-style custom node that receives it can call it too. (LatentApplyOperationCFG, which applies an operation
inside CFG, needs a pre-CFG hook on MODEL that the sampler does not have yet.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nodes.context import RunContext
from nodes.inputs import Float, Int, Link
from nodes.registry import Node, Output
from nodes.tensor_ops import sharpen_kernel
from nodes.types import Latent

OPERATIONS = "latent/advanced/operations"


@dataclass(frozen=True)
class ReinhardTonemap:
    """Each pixel's channel-vector length l becomes l / (1 + l/top) with top = (mean + 5·std of the lengths over the
    image) · multiplier; directions are kept."""

    multiplier: float

    def __call__(self, latent: torch.Tensor, **_: Any) -> torch.Tensor:
        magnitude = (torch.linalg.vector_norm(latent, dim=1) + 0.0000000001)[:, None]
        direction = latent / magnitude
        dims = list(range(1, magnitude.ndim))
        mean = torch.mean(magnitude, dim=dims, keepdim=True)
        std = torch.std(magnitude, dim=dims, keepdim=True)
        top = (std * 5 + mean) * self.multiplier
        scaled = magnitude * (1.0 / top)
        return direction * (scaled / (scaled + 1.0) * top)


@dataclass(frozen=True)
class LatentSharpen:
    """ComfyUI's image sharpen applied to the unit channel vectors of a [B, C, H, W] latent, lengths kept."""

    radius: int
    sigma: float
    alpha: float

    def __call__(self, latent: torch.Tensor, **_: Any) -> torch.Tensor:
        luminance = (torch.linalg.vector_norm(latent, dim=1) + 1e-6)[:, None]
        normalized = latent / luminance
        channels = latent.shape[1]
        r = self.radius
        if r >= latent.shape[-1] or r >= latent.shape[-2]:
            raise ValueError(f"sharpen_radius {r} is too large for a {latent.shape[-1]}x{latent.shape[-2]} latent: "
                             f"it must be smaller than both sides")
        kernel = sharpen_kernel(r, self.sigma, self.alpha, device=latent.device).to(latent.dtype)
        padded = F.pad(normalized, (r, r, r, r), mode="reflect")
        sharpened = F.conv2d(padded, kernel.repeat(channels, 1, 1).unsqueeze(1), groups=channels)
        return luminance * sharpened


# Runs a LATENT_OPERATION on the samples.
class LatentApplyOperation(Node):
    category = OPERATIONS
    v3_schema = True
    experimental = True
    samples = Link("LATENT")
    operation = Link("LATENT_OPERATION")
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, operation: Any) -> tuple[Latent]:
        return (samples.replace(samples=operation(latent=samples.samples)),)


class LatentOperationTonemapReinhard(Node):
    category = OPERATIONS
    v3_schema = True
    experimental = True
    multiplier = Float(1.0, min=0.0, max=100.0, step=0.01)
    outputs = (Output("LATENT_OPERATION"),)

    @classmethod
    def run(cls, ctx: RunContext, multiplier: float) -> tuple[ReinhardTonemap]:
        return (ReinhardTonemap(multiplier),)


class LatentOperationSharpen(Node):
    category = OPERATIONS
    v3_schema = True
    experimental = True
    sharpen_radius = Int(9, min=1, max=31, step=1)
    sigma = Float(1.0, min=0.1, max=10.0, step=0.1)
    alpha = Float(0.1, min=0.0, max=5.0, step=0.01)
    outputs = (Output("LATENT_OPERATION"),)

    @classmethod
    def run(cls, ctx: RunContext, sharpen_radius: int, sigma: float, alpha: float) -> tuple[LatentSharpen]:
        return (LatentSharpen(sharpen_radius, sigma, alpha),)


NODES = (LatentApplyOperation, LatentOperationSharpen, LatentOperationTonemapReinhard)
