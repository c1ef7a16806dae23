"""Latent nodes with ComfyUI's names, inputs and numbers: composite, blend, arithmetic, interpolation, batching of
two latents, seed behaviour, crop, cut, concatenation, flip and rotate.

LATENT is diffusion.values.Latent. As ComfyUI's nodes copy the latent dict and change "samples", these nodes return
the first latent with new samples (its noise_mask and batch_index carried along) unless ComfyUI sets them too.
Sizes in pixels (x, y, width, height, feather) are divided by 8 for the latent grid. No node writes into its input.
"""

from __future__ import annotations

import math

import torch

from nodes.context import RunContext
from nodes.inputs import MAX_RESOLUTION, Combo, Float, Int, Link
from nodes.latent import resize_latent
from nodes.registry import Node, Output
from nodes.tensor_ops import repeat_to_batch_size
from nodes.types import Latent

ADVANCED = "latent/advanced"
TRANSFORM = "latent/transform"
FLIPS = ("x-axis: vertically", "y-axis: horizontally")
ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")


def reshape_like(target: torch.Tensor, samples: torch.Tensor, *, repeat_batch: bool = True) -> torch.Tensor:
    """`samples` resized (bilinear, centre crop) to target's spatial size and, when asked, repeated or cut to its
    batch (ComfyUI's reshape_latent_to)."""
    if samples.shape[1] != target.shape[1]:
        raise ValueError(f"the latents have {target.shape[1]} and {samples.shape[1]} channels; they must match")
    if samples.shape[1:] != target.shape[1:]:
        samples = resize_latent(samples, int(target.shape[-1]), int(target.shape[-2]), "bilinear", "center")
    return repeat_to_batch_size(samples, target.shape[0]) if repeat_batch else samples


class LatentComposite(Node):
    display_name = "Latent Composite"
    category = "latent"
    samples_to = Link("LATENT")
    samples_from = Link("LATENT")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    feather = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples_to: Latent, samples_from: Latent, x: int, y: int, feather: int
            ) -> tuple[Latent]:
        x, y, feather = x // 8, y // 8, feather // 8
        out = samples_to.samples.clone()
        height, width = out.shape[2], out.shape[3]
        if x >= width or y >= height:  # pasted entirely outside
            return (samples_to.replace(samples=out),)
        pasted = samples_from.samples[:, :, :height - y, :width - x].to(out)
        region = (slice(None), slice(None), slice(y, y + pasted.shape[2]), slice(x, x + pasted.shape[3]))
        if feather == 0:
            out[region] = pasted
            return (samples_to.replace(samples=out),)
        mask = torch.ones_like(pasted)
        for t in range(feather):  # ramps on the sides that lie inside samples_to (ComfyUI's loop)
            rate = (1.0 / feather) * (t + 1)
            if y != 0:
                mask[:, :, t:1 + t, :] *= rate
            if y + pasted.shape[2] < height:
                mask[:, :, mask.shape[2] - 1 - t:mask.shape[2] - t, :] *= rate
            if x != 0:
                mask[:, :, :, t:1 + t] *= rate
            if x + pasted.shape[3] < width:
                mask[:, :, :, mask.shape[3] - 1 - t:mask.shape[3] - t] *= rate
        out[region] = pasted * mask + out[region] * (torch.ones_like(mask) - mask)
        return (samples_to.replace(samples=out),)


class LatentBlend(Node):
    display_name = "Latent Blend"
    category = "_for_testing"
    samples1 = Link("LATENT")
    samples2 = Link("LATENT")
    blend_factor = Float(0.5, min=0, max=1, step=0.01)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples1: Latent, samples2: Latent, blend_factor: float) -> tuple[Latent]:
        s1, s2 = samples1.samples, samples2.samples
        if s1.shape != s2.shape:
            s2 = resize_latent(s2, int(s1.shape[3]), int(s1.shape[2]), "bicubic", "center")
        return (samples1.replace(samples=s1 * blend_factor + s2 * (1 - blend_factor)),)


# samples1 + samples2 (samples2 resized and batch-matched to samples1).
class LatentAdd(Node):
    category = ADVANCED
    v3_schema = True
    samples1 = Link("LATENT")
    samples2 = Link("LATENT")
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        s1 = samples1.samples
        return (samples1.replace(samples=s1 + reshape_like(s1, samples2.samples)),)


# samples1 - samples2 (samples2 resized and batch-matched to samples1).
class LatentSubtract(Node):
    category = ADVANCED
    v3_schema = True
    samples1 = Link("LATENT")
    samples2 = Link("LATENT")
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        s1 = samples1.samples
        return (samples1.replace(samples=s1 - reshape_like(s1, samples2.samples)),)


class LatentMultiply(Node):
    category = ADVANCED
    v3_schema = True
    samples = Link("LATENT")
    multiplier = Float(1.0, min=-10.0, max=10.0, step=0.01)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, multiplier: float) -> tuple[Latent]:
        return (samples.replace(samples=samples.samples * multiplier),)


# Interpolates each pixel's channel vector: directions mixed and renormalised, lengths mixed linearly
# (ratio 1 = samples1).
class LatentInterpolate(Node):
    category = ADVANCED
    v3_schema = True
    samples1 = Link("LATENT")
    samples2 = Link("LATENT")
    ratio = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples1: Latent, samples2: Latent, ratio: float) -> tuple[Latent]:
        s1 = samples1.samples
        s2 = reshape_like(s1, samples2.samples)
        m1 = torch.linalg.vector_norm(s1, dim=1, keepdim=True)
        m2 = torch.linalg.vector_norm(s2, dim=1, keepdim=True)
        t = torch.nan_to_num(s1 / m1) * ratio + torch.nan_to_num(s2 / m2) * (1.0 - ratio)
        direction = torch.nan_to_num(t / torch.linalg.vector_norm(t, dim=1, keepdim=True))
        return (samples1.replace(samples=direction * (m1 * ratio + m2 * (1.0 - ratio))),)


# samples2 (resized to samples1) appended to samples1's batch, each keeping its place in its seeded batch.
class LatentBatch(Node):
    category = "latent/batch"
    v3_schema = True
    deprecated = True
    samples1 = Link("LATENT")
    samples2 = Link("LATENT")
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        s1 = samples1.samples
        s2 = reshape_like(s1, samples2.samples, repeat_batch=False)
        index = _batch_index(samples1) + _batch_index(samples2)
        return (samples1.replace(samples=torch.cat((s1, s2.to(s1)), dim=0), batch_index=index),)


def _batch_index(latent: Latent) -> tuple[int, ...]:
    return tuple(latent.batch_index) if latent.batch_index is not None else tuple(range(latent.batch_size))


# "fixed": every latent of the batch gets the first one's noise; "random": each its own.
class LatentBatchSeedBehavior(Node):
    category = ADVANCED
    v3_schema = True
    samples = Link("LATENT")
    seed_behavior = Combo(("random", "fixed"), default="fixed")
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, seed_behavior: str) -> tuple[Latent]:
        if seed_behavior == "random":
            return (samples.replace(batch_index=None),)
        first = samples.batch_index[0] if samples.batch_index else 0
        return (samples.replace(batch_index=(first,) * samples.batch_size),)


class LatentCrop(Node):
    display_name = "Crop Latent"
    category = TRANSFORM
    samples = Link("LATENT")
    width = Int(512, min=64, max=MAX_RESOLUTION, step=8)
    height = Int(512, min=64, max=MAX_RESOLUTION, step=8)
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, width: int, height: int, x: int, y: int) -> tuple[Latent]:
        s = samples.samples
        x = max(0, min(x // 8, s.shape[3] - 8))  # keeps at least 64 pixels when it can
        y = max(0, min(y // 8, s.shape[2] - 8))
        return (samples.replace(samples=s[:, :, y:y + height // 8, x:x + width // 8]),)


def _axis(samples: torch.Tensor, dim: str) -> int:
    """ComfyUI's axis names: x the last, y the one before, t the one before that (channels on a 4-D latent)."""
    return samples.ndim - 1 - "xyt".index(dim)


# `amount` rows/columns/frames from `index` (negative: from the end), clamped to the latent.
class LatentCut(Node):
    category = ADVANCED
    v3_schema = True
    samples = Link("LATENT")
    dim = Combo(("x", "y", "t"))
    index = Int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1)
    amount = Int(1, min=1, max=MAX_RESOLUTION, step=1)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, dim: str, index: int, amount: int) -> tuple[Latent]:
        s = samples.samples
        axis = _axis(s, dim)
        size = s.shape[axis]
        if index >= 0:
            index = min(index, size - 1)
            amount = min(size - index, amount)
        else:
            index = max(index, -size)
            amount = min(-index, amount)
        return (samples.replace(samples=torch.narrow(s, axis, index, amount)),)


# Slices along x, y or t into slice_size pieces stacked on the batch (a remainder that does not fill a slice is
# dropped).
class LatentCutToBatch(Node):
    category = ADVANCED
    v3_schema = True
    samples = Link("LATENT")
    dim = Combo(("t", "x", "y"))
    slice_size = Int(1, min=1, max=MAX_RESOLUTION, step=1)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, dim: str, slice_size: int) -> tuple[Latent]:
        s = samples.samples
        axis = _axis(s, dim)
        if axis < 2:
            return (samples,)
        moved = s.movedim(axis, 1)
        if moved.shape[1] < slice_size:
            slice_size = moved.shape[1]
        elif moved.shape[1] % slice_size:
            moved = moved[:, :math.floor(moved.shape[1] / slice_size) * slice_size]
        cut = moved.reshape([-1, slice_size, *moved.shape[2:]]).movedim(1, axis)
        return (samples.replace(samples=cut),)


# samples2 (batch-matched) joined to samples1 along x, y or t; "-" puts samples2 first.
class LatentConcat(Node):
    category = ADVANCED
    v3_schema = True
    samples1 = Link("LATENT")
    samples2 = Link("LATENT")
    dim = Combo(("x", "-x", "y", "-y", "t", "-t"))
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples1: Latent, samples2: Latent, dim: str) -> tuple[Latent]:
        s1 = samples1.samples
        s2 = repeat_to_batch_size(samples2.samples, s1.shape[0]).to(s1)
        parts = (s2, s1) if dim.startswith("-") else (s1, s2)
        axis = -1 - "xyt".index(dim[-1])
        try:
            joined = torch.cat(parts, dim=axis)
        except RuntimeError as error:
            raise ValueError(f"dim {dim!r}: latents of shapes {tuple(s1.shape)} and {tuple(s2.shape)} cannot be "
                             f"joined along it") from error
        return (samples1.replace(samples=joined),)


class LatentFlip(Node):
    display_name = "Flip Latent"
    category = TRANSFORM
    samples = Link("LATENT")
    flip_method = Combo(FLIPS)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, flip_method: str) -> tuple[Latent]:
        dims = [2] if flip_method.startswith("x") else [3]
        return (samples.replace(samples=torch.flip(samples.samples, dims=dims)),)


class LatentRotate(Node):
    display_name = "Rotate Latent"
    category = TRANSFORM
    samples = Link("LATENT")
    rotation = Combo(ROTATIONS)
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, rotation: str) -> tuple[Latent]:
        return (samples.replace(samples=torch.rot90(samples.samples, k=ROTATIONS.index(rotation), dims=[3, 2])),)


NODES = (LatentComposite, LatentBlend, LatentAdd, LatentSubtract, LatentMultiply, LatentInterpolate, LatentBatch,
         LatentBatchSeedBehavior, LatentCrop, LatentCut, LatentCutToBatch, LatentConcat, LatentFlip, LatentRotate)
