"""Batch nodes with ComfyUI's names, inputs and numbers: joining any number of images, masks or latents into one
batch (v3's growing inputs "image0", "image1"...), and re-cutting lists of batches into batches of a given size.

The Batch* nodes take Autogrow inputs, which prompts send as dotted keys ("images.image0"): each is declared flat
(nodes/special_inputs.py) and /object_info shows ComfyUI's compact entry. No node writes into its inputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from nodes.context import RunContext
from nodes.inputs import Int, Link
from nodes.latent_tools import reshape_like
from nodes.registry import Node, Output
from nodes.special_inputs import autogrow_inputs, autogrow_schema, autogrow_values, with_input_schema, with_inputs
from nodes.tensor_ops import as_mask_batch, upscale
from nodes.types import Latent

SLOTS = 50  # ComfyUI's max for these Autogrow inputs (min 2)


def batch_images(images: list[torch.Tensor]) -> torch.Tensor:
    """One batch of the images: RGB ones get an opaque alpha when any is RGBA, and every image is resized (bilinear,
    centre crop) to the first one's size."""
    channels = max(image.shape[-1] for image in images)
    padded = [F.pad(image, (0, 1), mode="constant", value=1.0) if image.shape[-1] < channels else image
              for image in images]
    first = padded[0].shape
    resized = [image if image.shape[1:] == first[1:] else
               upscale(image.movedim(-1, 1), int(first[2]), int(first[1]), "bilinear", "center").movedim(1, -1)
               for image in padded]
    return torch.cat([image.to(resized[0]) for image in resized], dim=0)


def batch_masks(masks: list[torch.Tensor]) -> torch.Tensor:
    """One batch of the masks, each resized (bilinear, centre crop) to the first one's size."""
    masks = [as_mask_batch(mask) for mask in masks]
    first = masks[0].shape
    resized = [mask if mask.shape[1:] == first[1:] else
               upscale(mask.unsqueeze(1), int(first[2]), int(first[1]), "bilinear", "center").squeeze(1)
               for mask in masks]
    return torch.cat([mask.to(resized[0]) for mask in resized], dim=0)


def batch_latents(latents: list[Latent]) -> Latent:
    """One latent batch (the first latent's noise mask kept), each resized to the first one's size; every latent
    keeps its place in its seeded batch (batch_index)."""
    first = latents[0].samples
    index: list[int] = []
    for latent in latents:
        index.extend(latent.batch_index if latent.batch_index is not None else range(latent.batch_size))
    samples = torch.cat([reshape_like(first, latent.samples, repeat_batch=False).to(first) for latent in latents])
    return latents[0].replace(samples=samples, batch_index=tuple(index))


@with_inputs(autogrow_inputs("images", "IMAGE", prefix="image", minimum=2, maximum=SLOTS))
class BatchImagesNode(Node):
    display_name = "Batch Images"
    category = "image"
    v3_schema = True
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, **images: torch.Tensor) -> tuple[torch.Tensor]:
        return (batch_images(autogrow_values("images", images)),)


@with_inputs(autogrow_inputs("masks", "MASK", prefix="mask", minimum=2, maximum=SLOTS))
class BatchMasksNode(Node):
    display_name = "Batch Masks"
    category = "mask"
    v3_schema = True
    outputs = (Output("MASK"),)

    @classmethod
    def run(cls, ctx: RunContext, **masks: torch.Tensor) -> tuple[torch.Tensor]:
        return (batch_masks(autogrow_values("masks", masks)),)


@with_inputs(autogrow_inputs("latents", "LATENT", prefix="latent", minimum=2, maximum=SLOTS))
class BatchLatentsNode(Node):
    display_name = "Batch Latents"
    category = "latent"
    v3_schema = True
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, **latents: Latent) -> tuple[Latent]:
        return (batch_latents(autogrow_values("latents", latents)),)


# Takes the list of image batches flowing in and re-cuts it into batches of batch_size (the last may be smaller).
class RebatchImages(Node):
    display_name = "Rebatch Images"
    category = "image/batch"
    v3_schema = True
    input_is_list = True
    images = Link("IMAGE")
    batch_size = Int(1, min=1, max=4096)
    outputs = (Output("IMAGE", is_list=True),)

    @classmethod
    def run(cls, ctx: RunContext, images: list[torch.Tensor], batch_size: list[int]) -> tuple[list[torch.Tensor]]:
        size = batch_size[0]
        singles = [image[i:i + 1] for image in images for i in range(image.shape[0])]
        try:
            return ([torch.cat(singles[i:i + size], dim=0) for i in range(0, len(singles), size)],)
        except RuntimeError as error:
            raise ValueError(f"images: images of different sizes cannot share a batch of {size}") from error


# Re-cuts the list of latent batches flowing in into batches of batch_size; a batch ends early where the latent
# size changes. Noise masks and seeded-batch indices travel with their latents.
class RebatchLatents(Node):
    display_name = "Rebatch Latents"
    category = "latent/batch"
    v3_schema = True
    input_is_list = True
    latents = Link("LATENT")
    batch_size = Int(1, min=1, max=4096)
    outputs = (Output("LATENT", is_list=True),)

    @classmethod
    def run(cls, ctx: RunContext, latents: list[Latent], batch_size: list[int]) -> tuple[list[Latent]]:
        return (rebatch_latents(latents, batch_size[0]),)


_Batch = tuple[torch.Tensor, torch.Tensor, list[int]]  # samples, noise masks, batch indices


def rebatch_latents(latents: list[Latent], size: int) -> list[Latent]:
    """ComfyUI's LatentRebatch: concatenate same-size latents, emit every full batch, flush on a size change."""
    out: list[_Batch] = []
    current: _Batch | None = None
    processed = 0
    for latent in latents:
        following = _as_batch(latent, processed)
        processed += len(following[2])
        if current is None:
            current = following
        elif following[0].shape[-2:] != current[0].shape[-2:]:
            out.append(_cut(current, 0, size))
            current = following
        else:
            current = (torch.cat((current[0], following[0])), torch.cat((current[1], following[1])),
                       current[2] + following[2])
        if current[0].shape[0] > size:
            full = current[0].shape[0] // size
            out.extend(_cut(current, i * size, size) for i in range(full))
            current = _cut(current, full * size, None) if full * size < current[0].shape[0] else None
    if current is not None:
        out.append(_cut(current, 0, size))
    return [Latent(samples, noise_mask=None if bool(mask.mean() == 1.0) else mask, batch_index=tuple(index))
            for samples, mask, index in out]


def _as_batch(latent: Latent, offset: int) -> _Batch:
    samples = latent.samples
    mask = latent.noise_mask
    if mask is None:
        mask = torch.ones((samples.shape[0], 1, samples.shape[2] * 8, samples.shape[3] * 8))
    if mask.shape[0] < samples.shape[0]:
        mask = mask.repeat((samples.shape[0] - 1) // mask.shape[0] + 1, 1, 1, 1)[:samples.shape[0]]
    index = list(latent.batch_index) if latent.batch_index is not None else \
        [i + offset for i in range(samples.shape[0])]
    return samples, mask, index


def _cut(batch: _Batch, start: int, length: int | None) -> _Batch:
    end = None if length is None else start + length
    return batch[0][start:end], batch[1][start:end], batch[2][start:end]


def _autogrow_spec(node: type[Node], marker: str, link_type: str, name: str) -> Any:
    return with_input_schema(node, {"required": {marker: autogrow_schema(link_type, name=name, prefix=name,
                                                                         minimum=2, maximum=SLOTS)}})


NODES = (_autogrow_spec(BatchImagesNode, "images", "IMAGE", "image"),
         _autogrow_spec(BatchMasksNode, "masks", "MASK", "mask"),
         _autogrow_spec(BatchLatentsNode, "latents", "LATENT", "latent"), RebatchImages, RebatchLatents)
