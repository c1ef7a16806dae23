"""Loader nodes: checkpoints, standalone VAEs and LoRAs from the model folders (safetensors only)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from diffusion.checkpoint import LoadedCheckpoint, load_checkpoint, load_vae_file
from diffusion.handles import Clip, Model, Vae, checkpoint_handles, vae_handle
from diffusion.lora import LoraFile, apply_lora, load_lora_file
from diffusion.model_files import is_flow_checkpoint
from diffusion.previews import family_latent_rgb, latent_rgb_from_metadata
from diffusion.safetensors_io import read_header
from nodes.context import RunContext
from nodes.inputs import Combo, Files, Float, Link
from nodes.registry import Node, Output

log = logging.getLogger(__name__)


class MissingComponent(ValueError):
    """A checkpoint file lacks a part the graph needs (e.g. a UNet-only file used for its VAE)."""


def file_identity(ctx: RunContext, folder: str, name: str) -> tuple[str, int, int] | None:
    """(real path, mtime, size) of a model file: part of the cache key, so a replaced file is loaded again.
    None when the file is missing (the run then fails with the folder-naming error)."""
    try:
        path = os.path.realpath(ctx.services.folders.model_path(folder, name))
        stat = os.stat(path)
    except (OSError, LookupError, ValueError):
        return None
    return path, stat.st_mtime_ns, stat.st_size


def _load_checkpoint(path: Path, *, device: torch.device, dtype: torch.dtype | None) -> LoadedCheckpoint:
    return load_checkpoint(path, device=device, dtype=dtype)


class CheckpointLoaderSimple(Node):
    """Loads a diffusion model checkpoint (SD1.x, SD2.x, SDXL single-file .safetensors); its family and
    configuration are read from the tensor names and shapes."""

    description = "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."
    display_name = "Load Checkpoint"
    category = "loaders"
    ckpt_name = Combo(Files("checkpoints"), tooltip="The name of the checkpoint (model) to load.")
    outputs = (Output("MODEL", tooltip="The model used for denoising latents."),
               Output("CLIP", tooltip="The CLIP model used for encoding text prompts."),
               Output("VAE", tooltip="The VAE model used for encoding and decoding images to and from latent space."))

    @classmethod
    def fingerprint(cls, ctx: RunContext, ckpt_name: str) -> tuple[str, int, int] | None:
        return file_identity(ctx, "checkpoints", ckpt_name)

    @classmethod
    def run(cls, ctx: RunContext, ckpt_name: str) -> tuple[Model, Clip | None, Vae | None]:
        path = ctx.services.folders.model_path("checkpoints", ckpt_name)
        models = ctx.services.models
        header = read_header(path)  # read once: the family test and the preview colours
        if is_flow_checkpoint(header.shapes):  # Flux / SD3 single files (nodes/model_parts.py)
            from nodes.model_parts import load_flow_checkpoint_handles

            return load_flow_checkpoint_handles(ctx, path)
        loaded = models.load(path, "checkpoint", _load_checkpoint)
        latent_rgb = latent_rgb_from_metadata(header.metadata) or family_latent_rgb(loaded.family.name)
        model, clip, vae = checkpoint_handles(loaded, tokenizer=models.tokenizer(),
                                              latent_rgb=latent_rgb)
        return model, clip, vae


class VAELoader(Node):
    """Loads a VAE from the vae folder (ldm, diffusers or full-checkpoint layout)."""

    description = ""
    display_name = "Load VAE"
    category = "loaders"
    vae_name = Combo(Files("vae"))
    outputs = (Output("VAE"),)

    @classmethod
    def fingerprint(cls, ctx: RunContext, vae_name: str) -> tuple[str, int, int] | None:
        return file_identity(ctx, "vae", vae_name)

    @classmethod
    def run(cls, ctx: RunContext, vae_name: str) -> tuple[Vae]:
        path = ctx.services.folders.model_path("vae", vae_name)
        loaded = ctx.services.models.load(path, "vae", lambda p, device, dtype: load_vae_file(p, device=device,
                                                                                                 dtype=dtype))
        return (vae_handle(loaded.vae, name=path.name, owner=loaded),)


def _load_lora(ctx: RunContext, lora_name: str) -> LoraFile:
    path = ctx.services.folders.model_path("loras", lora_name)
    return ctx.services.models.load(path, "lora", lambda p, device, dtype: load_lora_file(p))


def _report_unmatched(lora_name: str, unmatched: list[str]) -> None:
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        log.warning("LoRA %s: %d keys match no module of this model: %s", lora_name, len(unmatched), shown)


LORA_DESCRIPTION = ("LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are "
                    "denoised such as applying styles. Multiple LoRA nodes can be linked together.")


class LoraLoader(Node):
    """Applies a LoRA to a model and its CLIP (the base weights are shared, not copied)."""

    description = LORA_DESCRIPTION
    display_name = "Load LoRA"
    category = "loaders"
    model = Link("MODEL", tooltip="The diffusion model the LoRA will be applied to.")
    clip = Link("CLIP", tooltip="The CLIP model the LoRA will be applied to.")
    lora_name = Combo(Files("loras"), tooltip="The name of the LoRA.")
    strength_model = Float(1.0, min=-100.0, max=100.0, step=0.01,
                           tooltip="How strongly to modify the diffusion model. This value can be negative.")
    strength_clip = Float(1.0, min=-100.0, max=100.0, step=0.01,
                          tooltip="How strongly to modify the CLIP model. This value can be negative.")
    outputs = (Output("MODEL", tooltip="The modified diffusion model."),
               Output("CLIP", tooltip="The modified CLIP model."))

    @classmethod
    def fingerprint(cls, ctx: RunContext, lora_name: str, **_: Any) -> tuple[str, int, int] | None:
        return file_identity(ctx, "loras", lora_name)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, clip: Clip, lora_name: str, strength_model: float,
            strength_clip: float) -> tuple[Model, Clip]:
        if strength_model == 0 and strength_clip == 0:
            return model, clip
        lora = _load_lora(ctx, lora_name)
        new_model, new_clip, unmatched = apply_lora(model, clip, lora, strength_model=strength_model,
                                                    strength_clip=strength_clip)
        _report_unmatched(lora_name, unmatched)
        return new_model, new_clip


class LoraLoaderModelOnly(Node):
    """Applies a LoRA to a model only."""

    description = LORA_DESCRIPTION
    display_name = "LoraLoaderModelOnly"
    category = "loaders"
    model = Link("MODEL")
    lora_name = Combo(Files("loras"))
    strength_model = Float(1.0, min=-100.0, max=100.0, step=0.01)
    outputs = (Output("MODEL"),)
    # ComfyUI's class inherits LoraLoader's OUTPUT_TOOLTIPS, so its entry lists two for its one output.
    output_tooltips = ("The modified diffusion model.", "The modified CLIP model.")

    @classmethod
    def fingerprint(cls, ctx: RunContext, lora_name: str, **_: Any) -> tuple[str, int, int] | None:
        return file_identity(ctx, "loras", lora_name)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, lora_name: str, strength_model: float) -> tuple[Model]:
        if strength_model == 0:
            return (model,)
        lora = _load_lora(ctx, lora_name)
        new_model, _, unmatched = apply_lora(model, None, lora, strength_model=strength_model, strength_clip=0.0)
        _report_unmatched(lora_name, unmatched)
        return (new_model,)


NODES = (CheckpointLoaderSimple, VAELoader, LoraLoader, LoraLoaderModelOnly)
