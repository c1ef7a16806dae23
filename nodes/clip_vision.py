"""CLIP vision and unCLIP nodes (ComfyUI's CLIPVisionLoader, CLIPVisionEncode, unCLIPConditioning,
unCLIPCheckpointLoader): image embeddings from models/clip_vision or an unCLIP checkpoint's own image tower, and the
conditioning that feeds them to an SD 2.1 unCLIP model (diffusion/unclip.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffusion.clip_vision import ClipVision, ClipVisionOutput, LoadedClipVision, load_clip_vision_file
from diffusion.handles import Clip, Model, Vae
from diffusion.safetensors_io import read_header
from diffusion.unclip import CLIP_VISION_PREFIX, UNCLIP_CONDITIONING, UnclipCond
from nodes.context import RunContext
from nodes.inputs import Combo, Files, Float, Link
from nodes.loaders import CheckpointLoaderSimple, file_identity
from nodes.registry import Node, Output
from nodes.types import Conditioning


def _load(path: Path, *, prefix: str = ""):
    def loader(p: Path, device: torch.device, dtype: torch.dtype | None) -> LoadedClipVision:
        return load_clip_vision_file(p, device=device, dtype=dtype, prefix=prefix)

    return loader


class CLIPVisionLoader(Node):
    """Loads a CLIP vision model (HF or OpenCLIP layout) from models/clip_vision."""

    description = ""
    display_name = "Load CLIP Vision"
    category = "loaders"
    clip_name = Combo(Files("clip_vision"))
    outputs = (Output("CLIP_VISION"),)

    @classmethod
    def fingerprint(cls, ctx: RunContext, clip_name: str) -> tuple[str, int, int] | None:
        return file_identity(ctx, "clip_vision", clip_name)

    @classmethod
    def run(cls, ctx: RunContext, clip_name: str) -> tuple[ClipVision]:
        path = ctx.services.folders.model_path("clip_vision", clip_name)
        loaded = ctx.services.models.load(path, "clip_vision", _load(path))
        return (ClipVision(loaded.module, name=path.name, owner=loaded),)


class CLIPVisionEncode(Node):
    """Encodes images with a CLIP vision model (crop "center": shorter side to the model's size, centre crop)."""

    description = ""
    display_name = "CLIP Vision Encode"
    category = "conditioning"
    clip_vision = Link("CLIP_VISION")
    image = Link("IMAGE")
    crop = Combo(("center", "none"))
    outputs = (Output("CLIP_VISION_OUTPUT"),)

    @classmethod
    def run(cls, ctx: RunContext, clip_vision: ClipVision, image: torch.Tensor, crop: str) -> tuple[ClipVisionOutput]:
        with torch.inference_mode(), ctx.services.models.on_device(clip_vision.module):
            return (clip_vision.encode(image, crop=crop == "center"),)


class unCLIPConditioning(Node):  # noqa: N801 - ComfyUI's node name
    """Adds an image embedding to a conditioning for an unCLIP model, with a weight and noise augmentation."""

    description = ""
    display_name = "unCLIPConditioning"
    category = "conditioning"
    conditioning = Link("CONDITIONING")
    clip_vision_output = Link("CLIP_VISION_OUTPUT")
    strength = Float(1.0, min=-10.0, max=10.0, step=0.01)
    noise_augmentation = Float(0.0, min=0.0, max=1.0, step=0.01)
    outputs = (Output("CONDITIONING"),)

    @classmethod
    def run(cls, ctx: RunContext, conditioning: Conditioning, clip_vision_output: ClipVisionOutput, strength: float,
            noise_augmentation: float) -> tuple[Conditioning]:
        if strength == 0:
            return (conditioning,)
        added = UnclipCond(clip_vision_output, strength, noise_augmentation)
        return (conditioning.map(lambda e: e.replace(extra={
            **e.extra, UNCLIP_CONDITIONING: (*e.extra.get(UNCLIP_CONDITIONING, ()), added)})),)


class unCLIPCheckpointLoader(Node):  # noqa: N801 - ComfyUI's node name
    """Loads an unCLIP checkpoint: MODEL, CLIP, VAE and its image tower as CLIP_VISION (None when it has none)."""

    description = ""
    display_name = "unCLIPCheckpointLoader"
    category = "loaders"
    ckpt_name = Combo(Files("checkpoints"))
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"), Output("CLIP_VISION"))

    @classmethod
    def fingerprint(cls, ctx: RunContext, ckpt_name: str) -> tuple[str, int, int] | None:
        return file_identity(ctx, "checkpoints", ckpt_name)

    @classmethod
    def run(cls, ctx: RunContext, ckpt_name: str) -> tuple[Model, Clip | None, Vae | None, Any]:
        model, clip, vae = CheckpointLoaderSimple.run(ctx, ckpt_name)
        path = ctx.services.folders.model_path("checkpoints", ckpt_name)
        vision = None
        if any(k.startswith(CLIP_VISION_PREFIX) for k in read_header(path).tensors):
            loaded = ctx.services.models.load(path, "unclip_clip_vision", _load(path, prefix=CLIP_VISION_PREFIX))
            vision = ClipVision(loaded.module, name=path.name, owner=loaded)
        return model, clip, vae, vision


NODES = (CLIPVisionLoader, CLIPVisionEncode, unCLIPConditioning, unCLIPCheckpointLoader)
