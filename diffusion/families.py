"""Model families: the facts that differ between SD1.x, SD2.x and SDXL but that no tensor shape carries.

A `ModelFamily` is plain data (frozen): latent scaling, prediction type, the discrete noise schedule, which text
encoders condition the UNet (with their checkpoint prefixes and default layers), and how the SDXL "y" vector is
built. Checkpoint detection (checkpoint.py) picks one; sampling and conditioning read it and never branch on
the checkpoint file again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import torch

from diffusion.text_encoders import HiddenNorm, LayerChoice
from diffusion.unet import timestep_embedding

FamilyName = Literal["sd1", "sd2", "sdxl", "sdxl_refiner", "flux", "sd3"]
Prediction = Literal["eps", "v", "flow"]
TextEncoderName = Literal["clip_l", "clip_h", "clip_g", "t5xxl"]
AdmKind = Literal["none", "sdxl", "sdxl_refiner", "flux", "sd3"]

SDXL_SIZE_EMBED_DIM = 256
"""Width of the sinusoidal embedding of each SDXL size/crop/score number (sgm `ConcatTimestepEmbedderND`)."""


@dataclass(frozen=True)
class TextEncoderSlot:
    """One text encoder of a family and how its hidden states feed the UNet by default."""

    name: TextEncoderName
    """Slot name: clip_l (OpenAI CLIP ViT-L/14), clip_h (OpenCLIP ViT-H/14), clip_g (OpenCLIP ViT-bigG/14)."""
    prefix: str
    """Checkpoint key prefix of the encoder's tensors."""
    layer: LayerChoice
    """Default hidden layer: "last" (after the final layer norm) or a block index (-2 = penultimate)."""
    hidden_norm: HiddenNorm
    """Whether the final layer norm is applied to an int `layer` ("final_ln") or not ("raw")."""


@dataclass(frozen=True)
class ModelFamily:
    """What a checkpoint's family fixes beyond its shapes."""

    name: FamilyName
    """Family id."""
    latent_scale_factor: float
    """Multiplier from raw VAE latents to the UNet's unit-variance latent space (SD1/SD2 0.18215, SDXL 0.13025)."""
    prediction: Prediction
    """What the UNet predicts: the noise ("eps") or v = α·ε − σ·x0 ("v", Salimans & Ho 2022)."""
    text_encoders: tuple[TextEncoderSlot, ...]
    """Text encoders in the order their hidden states are concatenated on the channel axis."""
    adm: AdmKind
    """How the UNet's extra "y" vector is built ("none": the UNet has no label_emb)."""
    latent_channels: int = 4
    """Channels of the latent."""
    linear_start: float = 0.00085
    """β at t=0 of the "linear" (scaled-linear) discrete schedule: β_t = (√start + t/(T−1)·(√end − √start))²."""
    linear_end: float = 0.012
    """β at t=T−1."""
    num_timesteps: int = 1000
    """Discrete training timesteps T."""
    latent_shift_factor: float = 0.0
    """Subtracted from raw VAE latents before the scale factor (Flux 0.1159, SD3 0.0609; 0 for the UNet families):
    model latent = (raw − shift) · scale."""

    def with_prediction(self, prediction: Prediction) -> ModelFamily:
        """The same family with another prediction type (e.g. an SD2 v-model)."""
        return dataclasses.replace(self, prediction=prediction)


SD1 = ModelFamily(
    name="sd1",
    latent_scale_factor=0.18215,
    prediction="eps",
    text_encoders=(TextEncoderSlot("clip_l", "cond_stage_model.transformer.", "last", "final_ln"),),
    adm="none",
)
SD2 = ModelFamily(
    name="sd2",
    latent_scale_factor=0.18215,
    prediction="eps",
    # SD2 conditions on the penultimate OpenCLIP block, passed through ln_final (Stability's FrozenOpenCLIPEmbedder).
    text_encoders=(TextEncoderSlot("clip_h", "cond_stage_model.model.", -2, "final_ln"),),
    adm="none",
)
SDXL = ModelFamily(
    name="sdxl",
    latent_scale_factor=0.13025,
    prediction="eps",
    # Both penultimate, without the final layer norm; hidden states concatenated 768 + 1280 = 2048.
    text_encoders=(
        TextEncoderSlot("clip_l", "conditioner.embedders.0.transformer.", -2, "raw"),
        TextEncoderSlot("clip_g", "conditioner.embedders.1.model.", -2, "raw"),
    ),
    adm="sdxl",
)
SDXL_REFINER = ModelFamily(
    name="sdxl_refiner",
    latent_scale_factor=0.13025,
    prediction="eps",
    text_encoders=(TextEncoderSlot("clip_g", "conditioner.embedders.0.model.", -2, "raw"),),
    adm="sdxl_refiner",
)

# The flow-matching transformers (diffusion/flux.py, diffusion/mmdit.py): velocity prediction on the rectified-flow
# path, 16-channel latents (ComfyUI's latent_formats.Flux / SD3). Their text encoders usually come from separate
# files (CLIPLoader / DualCLIPLoader / TripleCLIPLoader); the prefixes are those of all-in-one checkpoints.
FLUX = ModelFamily(
    name="flux",
    latent_scale_factor=0.3611,
    latent_shift_factor=0.1159,
    prediction="flow",
    # Flux takes CLIP-L's pooled output (the "y" vector) and T5-XXL's last hidden states (the context).
    text_encoders=(
        TextEncoderSlot("clip_l", "text_encoders.clip_l.transformer.", "last", "final_ln"),
        TextEncoderSlot("t5xxl", "text_encoders.t5xxl.transformer.", "last", "final_ln"),
    ),
    adm="flux",
    latent_channels=16,
)
SD3 = ModelFamily(
    name="sd3",
    latent_scale_factor=1.5305,
    latent_shift_factor=0.0609,
    prediction="flow",
    # CLIP-L and CLIP-G penultimate (no final norm), side by side and zero-padded to 4096, then T5-XXL's tokens.
    text_encoders=(
        TextEncoderSlot("clip_l", "text_encoders.clip_l.transformer.", -2, "raw"),
        TextEncoderSlot("clip_g", "text_encoders.clip_g.transformer.", -2, "raw"),
        TextEncoderSlot("t5xxl", "text_encoders.t5xxl.transformer.", "last", "final_ln"),
    ),
    adm="sd3",
    latent_channels=16,
)

FAMILIES: Mapping[FamilyName, ModelFamily] = MappingProxyType({f.name: f for f in (SD1, SD2, SDXL, SDXL_REFINER)})
"""Every family by name (the eps variants; use `with_prediction` for v)."""


def _size_embeddings(values: list[float], batch: int, device: torch.device) -> torch.Tensor:
    numbers = torch.tensor(values, dtype=torch.float32, device=device)  # (N,)
    emb = timestep_embedding(numbers, SDXL_SIZE_EMBED_DIM)  # (N, 256), fp32
    return emb.reshape(1, -1).expand(batch, -1)  # (B, N·256)


def sdxl_adm(
    pooled: torch.Tensor,
    *,
    height: int,
    width: int,
    crop_h: int = 0,
    crop_w: int = 0,
    target_height: int | None = None,
    target_width: int | None = None,
) -> torch.Tensor:
    """SDXL's "y": pooled clip_g ⊕ sinusoidal embeddings of the size conditioning (Podell et al. 2023, §2.2).

    Args:
        pooled: [B, 1280] projected pooled output of clip_g.
        height, width: "original size" in pixels (ComfyUI defaults: the latent size × 8).
        crop_h, crop_w: top-left crop coordinates in pixels.
        target_height, target_width: target size in pixels (default: height, width).

    Returns:
        [B, 1280 + 6·256 = 2816] float32: pooled, then embeddings of
        [height, width, crop_h, crop_w, target_height, target_width], in that order.
    """
    sizes = [height, width, crop_h, crop_w, target_height or height, target_width or width]
    emb = _size_embeddings([float(v) for v in sizes], pooled.shape[0], pooled.device)
    return torch.cat([pooled.to(torch.float32), emb], dim=1)


def sdxl_refiner_adm(
    pooled: torch.Tensor,
    *,
    height: int,
    width: int,
    crop_h: int = 0,
    crop_w: int = 0,
    aesthetic_score: float = 6.0,
) -> torch.Tensor:
    """The SDXL refiner's "y": pooled clip_g ⊕ embeddings of [height, width, crop_h, crop_w, aesthetic_score].

    Returns [B, 1280 + 5·256 = 2560] float32. ComfyUI's defaults: score 6.0 for the positive prompt, 2.5 negative.
    """
    values = [float(height), float(width), float(crop_h), float(crop_w), float(aesthetic_score)]
    emb = _size_embeddings(values, pooled.shape[0], pooled.device)
    return torch.cat([pooled.to(torch.float32), emb], dim=1)
