"""Upscale-model nodes: load a super-resolution network (spandrel) and upscale images with it in tiles."""

from __future__ import annotations

import torch

from diffusion.upscale import UpscaleModel, load_upscale_model, upscale_images
from nodes.context import RunContext
from nodes.inputs import Combo, Files, Link
from nodes.loaders import file_identity
from nodes.registry import Node, Output

UPSCALE_FOLDER = "upscale_models"


class UpscaleModelLoader(Node):
    """Loads an upscale model (.safetensors: ESRGAN, Real-ESRGAN, SwinIR, ... as spandrel detects them)."""

    description = ""
    display_name = "Load Upscale Model"
    category = "loaders"
    v3_schema = True
    model_name = Combo(Files(UPSCALE_FOLDER))
    outputs = (Output("UPSCALE_MODEL"),)

    @classmethod
    def fingerprint(cls, ctx: RunContext, model_name: str) -> tuple[str, int, int] | None:
        return file_identity(ctx, UPSCALE_FOLDER, model_name)

    @classmethod
    def run(cls, ctx: RunContext, model_name: str) -> tuple[UpscaleModel]:
        path = ctx.services.folders.model_path(UPSCALE_FOLDER, model_name)
        # Loaded on the CPU in fp32 (as ComfyUI); the upscale node moves it to the compute device while it runs.
        model = ctx.services.models.load(
            path, "upscale_model", lambda p, device, dtype: load_upscale_model(p, device="cpu"))
        return (model,)


class ImageUpscaleWithModel(Node):
    """Upscales images with a model, in 512-pixel tiles overlapping by 32 (smaller tiles after out-of-memory)."""

    description = ""
    display_name = "Upscale Image (using Model)"
    category = "image/upscaling"
    v3_schema = True
    upscale_model = Link("UPSCALE_MODEL")
    image = Link("IMAGE")
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, upscale_model: UpscaleModel, image: torch.Tensor) -> tuple[torch.Tensor]:
        models = ctx.services.models
        with models.on_device(upscale_model.module) as device:
            out = upscale_images(upscale_model, image, device=device,
                                 progress=lambda done, total: ctx.progress(done, total))
        return (out,)


NODES = (UpscaleModelLoader, ImageUpscaleWithModel)
