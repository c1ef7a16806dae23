"""How the inspect nodes (nodes/inspect.py) turn latents into frames, and save them for the editor.

How frames are made (batch item 0 of each batch; every frame is an image of the decoded size):
  x_t    VAE-decoded after dividing by sqrt(1 + σ²): the k-diffusion latent x0 + σ·ε has variance 1 + σ², so the
         division gives the DDPM view sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·ε, which decodes to a viewable picture at any σ.
  x̂₀     VAE-decoded as it is.
  ε̂      (x_t − x̂₀)/σ_t in the model's prediction space (for an eps model what the network predicted), shown as a
         map: the first three latent channels as red, green, blue on a fixed scale, ε = −3 black .. +3 full
         (EPS_RANGE; unit-variance noise fills it, and frames of different steps compare), enlarged to the image
         size by repeating each latent pixel.
All frames are float32 images [H, W, 3] in [0, 1] of the decoded size, on the CPU.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import Tensor

from diffusion.handles import Model, Vae
from nodes.context import RunContext
from nodes.image import PREVIEW_COMPRESS_LEVEL, PREVIEW_SUFFIX_LETTERS, save_images
from nodes.ksampler import to_raw_space
from nodes.vae_ops import decode_images

EPS_RANGE = 3.0  # ε̂ maps: −EPS_RANGE .. +EPS_RANGE spans black .. full colour
Ref = dict[str, str]
"""A saved frame, as PreviewImage lists it: {"filename", "subfolder", "type": "temp"}."""


class InspectInputError(ValueError):
    """Inspect-node inputs that do not fit together (a step past the schedule, no image or latent, ...)."""


def temp_refs(ctx: RunContext, images: Tensor, label: str) -> list[Ref]:
    """Save a batch [N, H, W, 3] to the temp folder (as PreviewImage does) and return its refs."""
    if images.shape[0] == 0:
        return []
    suffix = "".join(random.Random().choice(PREVIEW_SUFFIX_LETTERS) for _ in range(5))
    return save_images(images, ctx.services.folders.directory("temp"), f"chisel_{label}_{suffix}", kind="temp",
                       compress_level=PREVIEW_COMPRESS_LEVEL)


def eps_image(eps: Tensor, downscale: int) -> Tensor:
    """An ε̂ [C, h, w] as an image [h·f, w·f, 3] in [0, 1]: the first three channels on the fixed ±EPS_RANGE scale."""
    channels = eps.float().cpu()
    if channels.shape[0] < 3:
        channels = channels.repeat(math.ceil(3 / channels.shape[0]), 1, 1)
    rgb = ((channels[:3] / EPS_RANGE).clamp(-1.0, 1.0) + 1.0) / 2.0  # (3, h, w)
    rgb = rgb.repeat_interleave(downscale, dim=1).repeat_interleave(downscale, dim=2)
    return rgb.movedim(0, -1).contiguous()


def error_image(error: Tensor, downscale: int) -> Tensor:
    """A squared-error map [C, h, w] as a grey image [h·f, w·f, 3]: the channel mean, white = this frame's largest."""
    mean = error.float().cpu().mean(dim=0)  # (h, w)
    grey = mean / mean.max() if float(mean.max()) > 0 else mean
    grey = grey.repeat_interleave(downscale, dim=0).repeat_interleave(downscale, dim=1)
    return grey[..., None].expand(-1, -1, 3).contiguous()


def eps_images(maps: Sequence[Tensor], downscale: int) -> Tensor:
    """Several ε̂ maps as an IMAGE batch (an empty batch for none)."""
    return torch.stack([eps_image(m, downscale) for m in maps]) if maps else torch.zeros((0, 1, 1, 3))


def viewable(x: Tensor, sigma: float) -> Tensor:
    """x_t / sqrt(1 + σ²): the noisy latent at unit variance, i.e. DDPM's sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·ε."""
    return x / math.sqrt(1.0 + sigma * sigma)


def decode_latents(ctx: RunContext, vae: Vae, model: Model, latents: Sequence[Tensor]) -> Tensor:
    """Model-space latents [C, h, w] -> images [N, H, W, 3] (one batched decode; the family's scale and shift
    undone as ksampler.to_raw_space does)."""
    if not latents:
        return torch.zeros((0, 1, 1, 3))
    raw = to_raw_space(model, torch.stack([t.float().cpu() for t in latents]))
    return decode_images(ctx.services.models, vae, raw, check_interrupted=ctx.check_interrupted).cpu()


def crop_to_multiple(pixels: Tensor, multiple: int) -> Tensor:
    """An IMAGE batch cut to a multiple of the VAE's downscale (as VAEEncode does), RGB only."""
    height, width = pixels.shape[1] // multiple * multiple, pixels.shape[2] // multiple * multiple
    if height == 0 or width == 0:
        raise InspectInputError(f"the image is smaller than the VAE's {multiple}x{multiple} pixels")
    return pixels[:, :height, :width, :3]
