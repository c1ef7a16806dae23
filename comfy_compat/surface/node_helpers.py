"""ComfyUI's `node_helpers`: small helpers node code shares (conditioning values, robust image opening)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from PIL import ImageFile, UnidentifiedImageError

from comfy_compat.surface.comfy.cli_args import args


def conditioning_set_values(conditioning: list[Any], values: Mapping[str, Any] | None = None, append: bool = False
                            ) -> list[Any]:
    """A copy of a CONDITIONING with these option values set on every entry (added to the old value when
    append)."""
    out = []
    for cond, options in conditioning:
        updated = dict(options)
        for key, value in (values or {}).items():
            if append and updated.get(key) is not None:
                value = updated[key] + value
            updated[key] = value
        out.append([cond, updated])
    return out


def pillow(fn: Callable[[Any], Any], arg: Any) -> Any:
    """fn(arg), retried with truncated images allowed when Pillow refuses the file."""
    previous = None
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        return fn(arg)
    finally:
        if previous is not None:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def hasher() -> Callable[..., Any]:
    return {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256,
            "sha512": hashlib.sha512}[args.default_hashing_function]


def string_to_torch_dtype(string: str) -> torch.dtype | None:
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(string)


def image_alpha_fix(destination: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if destination.shape[-1] < source.shape[-1]:
        source = source[..., :destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        destination = torch.nn.functional.pad(destination, (0, 1))
        destination[..., -1] = 1.0
    return destination, source


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('node_helpers', name)
