"""ComfyUI's `comfy.latent_formats`: each model family's latent scaling and preview colours."""

from __future__ import annotations

from typing import Any

import torch

from diffusion.previews import SD1_LATENT_RGB, SDXL_LATENT_RGB, SDXL_LATENT_RGB_BIAS


class LatentFormat:
    scale_factor = 1.0
    latent_channels = 4
    latent_dimensions = 2
    latent_rgb_factors: Any = None
    latent_rgb_factors_bias: Any = None
    taesd_decoder_name: str | None = None

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        return latent * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self.scale_factor


class SD15(LatentFormat):
    scale_factor = 0.18215
    latent_rgb_factors = [list(row) for row in SD1_LATENT_RGB]
    taesd_decoder_name = "taesd_decoder"


class SDXL(LatentFormat):
    scale_factor = 0.13025
    latent_rgb_factors = [list(row) for row in SDXL_LATENT_RGB]
    latent_rgb_factors_bias = list(SDXL_LATENT_RGB_BIAS)
    taesd_decoder_name = "taesdxl_decoder"


class SDXL_Playground_2_5(SDXL):  # noqa: N801 - ComfyUI's name
    scale_factor = 0.5


class SD3(LatentFormat):
    scale_factor = 1.5305
    shift_factor = 0.0609
    latent_channels = 16
    taesd_decoder_name = "taesd3_decoder"

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent - self.shift_factor) * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self.scale_factor + self.shift_factor


class Flux(SD3):
    scale_factor = 0.3611
    shift_factor = 0.1159
    taesd_decoder_name = "taef1_decoder"


def latent_format_of(handle: Any) -> LatentFormat:
    """The LatentFormat of a MODEL handle's family."""
    name = getattr(handle.family, "name", "")
    if name.startswith("sdxl"):
        return SDXL()
    if name == "flux":
        return Flux()
    if name == "sd3":
        return SD3()
    return SD15()


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('comfy.latent_formats', name)
