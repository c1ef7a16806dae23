"""Saving models (ComfyUI's CheckpointSave, ModelSave, CLIPSave, VAESave from nodes_model_merging.py, LoraSave from
nodes_lora_extract.py) and the deprecated CheckpointLoader with a config.

Files go under the output folder (`checkpoints/`, `diffusion_models/`, `clip/`, `vae/`, `loras/` by the default
prefixes) as `<prefix>_<counter:05>_.safetensors`, in ComfyUI's key layouts (diffusion/checkpoint_save.py), so
they load again in Chisel and in ComfyUI. A file appears complete or not at all and never replaces another.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from diffusion.checkpoint_save import (
    checkpoint_metadata,
    checkpoint_tensors,
    safetensors_chunks,
    text_encoder_tensors,
    vae_tensors,
    workflow_metadata,
)
from diffusion.handles import Clip, Model, Vae
from diffusion.model_merge import LORA_TYPES, lora_state_dict
from nodes.context import RunContext
from nodes.image import next_counter, resolve_save_path, write_new_file
from nodes.inputs import Boolean, Combo, Files, Int, Link, String
from nodes.loaders import CheckpointLoaderSimple, file_identity
from nodes.registry import Node, Output, Result

CATEGORY = "advanced/model_merging"
HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def save_tensors(ctx: RunContext, filename_prefix: str, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None, *, title_metadata: bool = False) -> Path:
    """Write `<prefix>_<counter:05>_.safetensors` under the output folder; returns its path. With title_metadata,
    "modelspec.title" becomes "<name> <counter>" (ComfyUI's)."""
    root = ctx.services.folders.directory("output")
    folder, _, filename = resolve_save_path(root, filename_prefix, width=0, height=0)
    counter = next_counter(folder, filename)
    metadata = dict(metadata or {})
    if title_metadata and "modelspec.title" in metadata:
        metadata["modelspec.title"] = f"{filename} {counter}"
    data = safetensors_chunks(tensors, metadata or None)  # streamed: the file is never built in memory
    name, _ = write_new_file(folder, lambda n: f"{filename}_{n:05}_.safetensors", counter, data)
    return Path(folder) / name


def _hidden(ctx: RunContext, prompt: Any, extra_pnginfo: Any) -> tuple[Any, Any]:
    hidden = ctx.hidden or {}
    return (prompt if prompt is not None else hidden.get("PROMPT"),
            extra_pnginfo if extra_pnginfo is not None else hidden.get("EXTRA_PNGINFO"))


def _save_model(ctx: RunContext, model: Model, clip: Clip | None, vae: Vae | None, filename_prefix: str,
                prompt: Any, extra_pnginfo: Any) -> None:
    prompt, extra_pnginfo = _hidden(ctx, prompt, extra_pnginfo)
    metadata = checkpoint_metadata(model, title="", prompt=prompt, extra_pnginfo=extra_pnginfo,
                                   include_workflow=ctx.services.settings.save_metadata)
    with torch.inference_mode():
        tensors = checkpoint_tensors(model, clip, vae)
    save_tensors(ctx, filename_prefix, tensors, metadata, title_metadata=True)


class CheckpointSave(Node):
    """Saves MODEL, CLIP and VAE as one checkpoint (patches such as merges and LoRAs folded into the weights)."""

    description = ""
    display_name = "Save Checkpoint"
    category = CATEGORY
    output_node = True
    model = Link("MODEL")
    clip = Link("CLIP")
    vae = Link("VAE")
    filename_prefix = String("checkpoints/ComfyUI")
    hidden = HIDDEN

    @classmethod
    def run(cls, ctx: RunContext, model: Model, clip: Clip, vae: Vae, filename_prefix: str, prompt: Any = None,
            extra_pnginfo: Any = None) -> Result:
        _save_model(ctx, model, clip, vae, filename_prefix, prompt, extra_pnginfo)
        return Result()


class ModelSave(Node):
    """Saves the diffusion model alone (model.diffusion_model.* keys)."""

    description = ""
    display_name = "ModelSave"
    category = CATEGORY
    output_node = True
    model = Link("MODEL")
    filename_prefix = String("diffusion_models/ComfyUI")
    hidden = HIDDEN

    @classmethod
    def run(cls, ctx: RunContext, model: Model, filename_prefix: str, prompt: Any = None,
            extra_pnginfo: Any = None) -> Result:
        _save_model(ctx, model, None, None, filename_prefix, prompt, extra_pnginfo)
        return Result()


class CLIPSave(Node):
    """Saves each text encoder of a CLIP as its own file (<prefix>_clip_l, <prefix>_clip_g, ...)."""

    description = ""
    display_name = "CLIPSave"
    category = CATEGORY
    output_node = True
    clip = Link("CLIP")
    filename_prefix = String("clip/ComfyUI")
    hidden = HIDDEN

    @classmethod
    def run(cls, ctx: RunContext, clip: Clip, filename_prefix: str, prompt: Any = None,
            extra_pnginfo: Any = None) -> Result:
        prompt, extra_pnginfo = _hidden(ctx, prompt, extra_pnginfo)
        metadata = ({"format": "pt", **workflow_metadata(prompt, extra_pnginfo)}
                    if ctx.services.settings.save_metadata else {})
        with torch.inference_mode():
            parts = text_encoder_tensors(clip, checkpoint_layout=False)
        for slot, tensors in parts.items():
            save_tensors(ctx, f"{filename_prefix}_{slot}", tensors, metadata)
        return Result()


class VAESave(Node):
    """Saves a VAE (ldm layout, as standalone VAE files are)."""

    description = ""
    display_name = "VAESave"
    category = CATEGORY
    output_node = True
    vae = Link("VAE")
    filename_prefix = String("vae/ComfyUI_vae")
    hidden = HIDDEN

    @classmethod
    def run(cls, ctx: RunContext, vae: Vae, filename_prefix: str, prompt: Any = None,
            extra_pnginfo: Any = None) -> Result:
        prompt, extra_pnginfo = _hidden(ctx, prompt, extra_pnginfo)
        metadata = workflow_metadata(prompt, extra_pnginfo) if ctx.services.settings.save_metadata else {}
        save_tensors(ctx, filename_prefix, vae_tensors(vae), metadata)
        return Result()


class LoraSave(Node):
    """Extracts a LoRA from a model (and/or CLIP) difference, as ModelMergeSubtract gives, by truncated SVD."""

    description = ""
    display_name = "Extract and Save Lora"
    category = "_for_testing"
    output_node = True
    v3_schema = True
    experimental = True
    filename_prefix = String("loras/ComfyUI_extracted_lora", multiline=False)
    rank = Int(8, min=1, max=4096, step=1)
    lora_type = Combo(LORA_TYPES)
    bias_diff = Boolean(True)
    model_diff = Link("MODEL", optional=True, tooltip="The ModelSubtract output to be converted to a lora.")
    text_encoder_diff = Link("CLIP", optional=True, tooltip="The CLIPSubtract output to be converted to a lora.")
    hidden = HIDDEN

    @classmethod
    def run(cls, ctx: RunContext, filename_prefix: str, rank: int, lora_type: str, bias_diff: bool,
            model_diff: Model | None = None, text_encoder_diff: Clip | None = None, prompt: Any = None,
            extra_pnginfo: Any = None) -> Result:
        if model_diff is None and text_encoder_diff is None:
            return Result()
        with torch.inference_mode():
            tensors = lora_state_dict(model_diff, text_encoder_diff, rank=rank,
                                      lora_type=lora_type, bias_diff=bias_diff)  # type: ignore[arg-type]
        save_tensors(ctx, filename_prefix, tensors, None)
        return Result()


class CheckpointLoader(Node):
    """Loads a checkpoint; the config file is checked for existence only (Chisel reads the configuration from the
    checkpoint's tensors)."""

    description = ""
    display_name = "Load Checkpoint With Config (DEPRECATED)"
    category = "advanced/loaders"
    deprecated = True
    config_name = Combo(Files("configs"))
    ckpt_name = Combo(Files("checkpoints"))
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"))

    @classmethod
    def fingerprint(cls, ctx: RunContext, ckpt_name: str, **_: Any) -> tuple[str, int, int] | None:
        return file_identity(ctx, "checkpoints", ckpt_name)

    @classmethod
    def run(cls, ctx: RunContext, config_name: str, ckpt_name: str) -> tuple[Model, Clip | None, Vae | None]:
        ctx.services.folders.model_path("configs", config_name)  # a missing config fails as a missing model does
        return CheckpointLoaderSimple.run(ctx, ckpt_name)


NODES = (CheckpointSave, ModelSave, CLIPSave, VAESave, LoraSave, CheckpointLoader)
