"""The MODEL, CLIP and VAE values that flow between nodes.

Each is an immutable handle: it points at modules whose weights are owned by the model manager (memory.py) and
shared by every handle made from the same file, plus the small facts and patches that make this handle different.
A LoRA or a clip-skip change returns a new handle; the shared weights are never written to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from nodes.diffusion.families import ModelFamily, TextEncoderSlot
from nodes.diffusion.model_sampling import DiscreteSampling
from nodes.diffusion.tokenizer import ClipTokenizer

LatentRGB = tuple[tuple[float, float, float], ...]  # one (r, g, b) row per latent channel, for cheap previews


@dataclass(frozen=True, eq=False)
class Model:
    """MODEL: a UNet ready for sampling.

    unet        the network (shared; never mutated)
    family      SD1 / SD2 / SDXL facts (latent scale, prediction, conditioning layout)
    sampling    the discrete noise table and prediction type the samplers use
    patches     weight patches (e.g. LoRA) applied while this handle samples, in order
    latent_rgb  per-channel RGB factors for latent previews (None: no cheap preview)
    name        where it came from (a file name), for messages
    """

    unet: nn.Module
    family: ModelFamily
    sampling: DiscreteSampling
    patches: tuple[Any, ...] = ()
    latent_rgb: LatentRGB | None = None
    name: str = ""

    def with_patches(self, *patches: Any) -> Model:
        return dataclasses.replace(self, patches=self.patches + tuple(patches))


@dataclass(frozen=True, eq=False)
class TextEncoderHandle:
    """One text encoder of a CLIP value: its role in the family (slot) and the module."""

    slot: TextEncoderSlot
    module: nn.Module


@dataclass(frozen=True, eq=False)
class Clip:
    """CLIP: the text encoder(s) of a checkpoint with the tokenizer.

    stop_at_clip_layer  None = the family's default layer; -1 last, -2 penultimate... (CLIPSetLastLayer)
    patches             weight patches (LoRA) applied while encoding
    """

    encoders: tuple[TextEncoderHandle, ...]
    tokenizer: ClipTokenizer
    family: ModelFamily
    stop_at_clip_layer: int | None = None
    patches: tuple[Any, ...] = ()
    name: str = ""

    def with_layer(self, stop_at_clip_layer: int) -> Clip:
        return dataclasses.replace(self, stop_at_clip_layer=stop_at_clip_layer)

    def with_patches(self, *patches: Any) -> Clip:
        return dataclasses.replace(self, patches=self.patches + tuple(patches))

    @property
    def modules(self) -> Sequence[nn.Module]:
        return [e.module for e in self.encoders]


@dataclass(frozen=True, eq=False)
class Vae:
    """VAE: the KL autoencoder. Images in [0, 1] [B, H, W, 3] <-> raw latents [B, C, H/8, W/8]."""

    module: nn.Module
    latent_channels: int = 4
    downscale: int = 8
    name: str = ""
