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

from diffusion.families import ModelFamily, TextEncoderSlot
from diffusion.model_options import NO_OPTIONS, ModelOptions
from diffusion.flow_sampling import FlowModelSampling
from diffusion.model_sampling import DiscreteSampling
from diffusion.previews import LatentToRGB
from diffusion.tokenizer import ClipTokenizer



@dataclass(frozen=True, eq=False)
class Model:
    """MODEL: a UNet ready for sampling.

    unet        the network (shared; never mutated)
    family      SD1 / SD2 / SDXL facts (latent scale, prediction, conditioning layout)
    sampling    the discrete noise table and prediction type the samplers use
    patches     weight patches (e.g. LoRA) applied while this handle samples, in order
    latent_rgb  the linear latent -> RGB map for cheap previews (None: no previews)
    name        where it came from (a file name), for messages
    owner       the loaded file object the weights belong to (keeps the manager's shared copy alive)
    options     function patches (FreeU, PAG, RescaleCFG, ...: ComfyUI's model_options; model_options.py)
    """

    unet: nn.Module
    family: ModelFamily
    sampling: DiscreteSampling | FlowModelSampling
    patches: tuple[Any, ...] = ()
    latent_rgb: LatentToRGB | None = None
    name: str = ""
    owner: Any = None  # the loaded file the weights came from: keeps the manager's shared copy alive
    options: ModelOptions = NO_OPTIONS

    def with_patches(self, *patches: Any) -> Model:
        return dataclasses.replace(self, patches=self.patches + tuple(patches))

    def with_options(self, options: ModelOptions) -> Model:
        """The same weights with these function patches (e.g. ``model.options.with_patch(...)``)."""
        return dataclasses.replace(self, options=options)


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
    owner: Any = None
    t5_tokenizer: Any = None
    """diffusion.t5.T5Tokenizer when an encoder is T5 (Flux, SD3), else None."""
    tokenizer_options: tuple[tuple[str, int], ...] = ()
    """T5TokenizerOptions' settings: ("t5xxl_min_length", n), ("t5xxl_min_padding", n)."""
    cpu_only: bool = False
    """Loaded onto and run on the CPU whatever the compute device (the CLIP loaders' device "cpu")."""

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
    owner: Any = None


def checkpoint_handles(loaded: Any, *, tokenizer: ClipTokenizer,
                       latent_rgb: LatentToRGB | None) -> tuple[Model, Clip | None, Vae | None]:
    """The MODEL, CLIP and VAE of a loaded checkpoint (diffusion.checkpoint.LoadedCheckpoint)."""
    family = loaded.family
    name = loaded.path.name
    sampling = DiscreteSampling.linear(prediction=family.prediction, linear_start=family.linear_start,
                                       linear_end=family.linear_end, timesteps=family.num_timesteps)
    model = Model(unet=loaded.unet, family=family, sampling=sampling, latent_rgb=latent_rgb, name=name,
                  owner=loaded)
    encoders = tuple(TextEncoderHandle(te.slot, te.module) for te in loaded.text_encoders.values())
    clip = Clip(encoders=encoders, tokenizer=tokenizer, family=family, name=name, owner=loaded) if encoders else None
    vae = vae_handle(loaded.vae, name=name, owner=loaded) if loaded.vae is not None else None
    return model, clip, vae


def vae_handle(module: nn.Module, *, name: str, owner: Any) -> Vae:
    config = module.config
    return Vae(module=module, latent_channels=config.embed_dim, downscale=2 ** (len(config.ch_mult) - 1),
               name=name, owner=owner)
