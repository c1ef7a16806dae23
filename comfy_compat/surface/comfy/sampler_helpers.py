"""ComfyUI's `comfy.sampler_helpers`: the helpers custom samplers use around a sampling run."""

from __future__ import annotations

from typing import Any

import torch

from comfy_compat.surface.comfy import utils


def prepare_mask(noise_mask: torch.Tensor, shape: tuple[int, ...], device: Any) -> torch.Tensor:
    """A noise mask resized and repeated to a latent's shape, on `device`."""
    return utils.reshape_mask(noise_mask, shape).to(device)


def get_models_from_cond(cond: list[dict[str, Any]], model_type: str) -> list[Any]:
    models: list[Any] = []
    for c in cond:
        if model_type in c:
            models += c[model_type] if isinstance(c[model_type], list) else [c[model_type]]
    return models


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute("comfy.sampler_helpers", name)
