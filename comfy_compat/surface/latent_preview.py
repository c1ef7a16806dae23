"""ComfyUI's `latent_preview`: previewers that turn a latent into a preview image, and the sampling callback.

`prepare_callback(model, steps)` gives the callback ComfyUI's samplers call each step; it reports progress (and a
latent2rgb preview unless previews are off) to the node run in progress through comfy.utils.ProgressBar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from comfy_compat.surface.comfy import utils
from comfy_compat.surface.comfy.cli_args import LatentPreviewMethod, args


def __getattr__(name: str) -> Any:
    if name == "MAX_PREVIEW_RESOLUTION":
        return args.preview_size
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('latent_preview', name)


def preview_to_image(latent_image: torch.Tensor) -> Image.Image:
    pixels = ((latent_image + 1.0) / 2.0).clamp(0, 1).mul(0xFF)
    return Image.fromarray(pixels.to(device="cpu", dtype=torch.uint8).numpy())


class LatentPreviewer:
    def decode_latent_to_preview(self, x0: torch.Tensor) -> Image.Image:
        raise NotImplementedError

    def decode_latent_to_preview_image(self, preview_format: str, x0: torch.Tensor) -> tuple[str, Image.Image, int]:
        return "JPEG", self.decode_latent_to_preview(x0), args.preview_size


class Latent2RGBPreviewer(LatentPreviewer):
    def __init__(self, latent_rgb_factors: Any, latent_rgb_factors_bias: Any = None):
        self.latent_rgb_factors = torch.tensor(latent_rgb_factors, device="cpu").transpose(0, 1)
        self.latent_rgb_factors_bias = None if latent_rgb_factors_bias is None else \
            torch.tensor(latent_rgb_factors_bias, device="cpu")

    def decode_latent_to_preview(self, x0: torch.Tensor) -> Image.Image:
        factors = self.latent_rgb_factors.to(dtype=x0.dtype, device=x0.device)
        bias = None if self.latent_rgb_factors_bias is None else \
            self.latent_rgb_factors_bias.to(dtype=x0.dtype, device=x0.device)
        x0 = x0[0, :, 0] if x0.ndim == 5 else x0[0]
        return preview_to_image(torch.nn.functional.linear(x0.movedim(0, -1), factors, bias=bias))


def get_previewer(device: Any, latent_format: Any) -> LatentPreviewer | None:
    """A latent2rgb previewer for this latent format, or None when previews are off (TAESD is not offered)."""
    if args.preview_method == LatentPreviewMethod.NoPreviews:
        return None
    if getattr(latent_format, "latent_rgb_factors", None) is None:
        return None
    return Latent2RGBPreviewer(latent_format.latent_rgb_factors, getattr(latent_format, "latent_rgb_factors_bias",
                                                                         None))


def prepare_callback(model: Any, steps: int, x0_output_dict: dict[str, Any] | None = None
                     ) -> Callable[[int, torch.Tensor, torch.Tensor, int], None]:
    previewer = get_previewer(getattr(model, "load_device", None), model.model.latent_format)
    pbar = utils.ProgressBar(steps)

    def callback(step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None:
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer is not None else None
        pbar.update_absolute(step + 1, total_steps, preview)

    return callback
