"""ResizeImageMaskNode ("Resize Image/Mask"), ComfyUI's one resize node for images and masks, with its eight ways
of choosing the size.

Its `resize_type` is a v3 DynamicCombo: the chosen option reveals its own inputs, which prompts send as dotted keys
("resize_type": "scale by multiplier", "resize_type.multiplier": 1.5). They are declared flat and optional here;
`validate` requires the chosen option's ones, and /object_info shows ComfyUI's compact entry.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from nodes.context import RunContext
from nodes.image import CROP_METHODS, UPSCALE_METHODS
from nodes.inputs import MAX_RESOLUTION, Combo, Float, Int, Link
from nodes.registry import Node, Output
from nodes.special_inputs import DYNAMIC_COMBO, MATCH_TYPE, MatchType, with_input_schema, with_inputs
from nodes.tensor_ops import upscale

KEY = "resize_type"
SUB = KEY + "."

# ComfyUI's options in its order, each with the inputs it reveals.
OPTIONS: dict[str, tuple[str, ...]] = {
    "scale by multiplier": ("multiplier",),
    "scale dimensions": ("width", "height", "crop"),
    "scale longer dimension": ("longer_size",),
    "scale shorter dimension": ("shorter_size",),
    "scale width": ("width",),
    "scale height": ("height",),
    "scale total pixels": ("megapixels",),
    "match size": ("match", "crop"),
}
_SIZE = {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}
_CROP = ["COMBO", {"default": "center", "multiselect": False, "options": list(CROP_METHODS)}]
_SCHEMAS: dict[str, list[Any]] = {
    "multiplier": ["FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}],
    "width": ["INT", dict(_SIZE)], "height": ["INT", dict(_SIZE)], "crop": _CROP,
    "longer_size": ["INT", dict(_SIZE)], "shorter_size": ["INT", dict(_SIZE)],
    "megapixels": ["FLOAT", {"default": 1.0, "min": 0.01, "max": 16.0, "step": 0.01}],
    "match": ["IMAGE,MASK", {}],
}
SCHEMA = {"required": {
    "input": [MATCH_TYPE, {"template": {"template_id": "input_type", "allowed_types": "IMAGE,MASK"}}],
    KEY: [DYNAMIC_COMBO, {"options": [{"key": key, "inputs": {"required": {name: _SCHEMAS[name] for name in names}}}
                                      for key, names in OPTIONS.items()]}],
    "scale_method": ["COMBO", {"default": "area", "multiselect": False, "options": list(UPSCALE_METHODS)}],
}}


@with_inputs({
    SUB + "multiplier": Float(1.0, min=0.01, max=8.0, step=0.01, optional=True),
    SUB + "width": Int(512, min=0, max=MAX_RESOLUTION, step=1, optional=True),
    SUB + "height": Int(512, min=0, max=MAX_RESOLUTION, step=1, optional=True),
    SUB + "crop": Combo(CROP_METHODS, default="center", optional=True),
    SUB + "longer_size": Int(512, min=0, max=MAX_RESOLUTION, step=1, optional=True),
    SUB + "shorter_size": Int(512, min=0, max=MAX_RESOLUTION, step=1, optional=True),
    SUB + "megapixels": Float(1.0, min=0.01, max=16.0, step=0.01, optional=True),
    SUB + "match": Link("IMAGE,MASK", optional=True),
    "scale_method": Combo(UPSCALE_METHODS, default="area"),
})
class ResizeImageMaskNode(Node):
    display_name = "Resize Image/Mask"
    category = "transform"
    v3_schema = True
    input = MatchType("input_type", "IMAGE,MASK")
    resize_type = Combo(tuple(OPTIONS))
    outputs = (Output(MATCH_TYPE, name="resized"),)

    @classmethod
    def validate(cls, resize_type: str | None = None, **given: Any) -> str | None:
        missing = [SUB + name for name in OPTIONS.get(resize_type or "", ()) if SUB + name not in given]
        return f"{', '.join(missing)} required by resize_type {resize_type!r}" if missing else None

    @classmethod
    def run(cls, ctx: RunContext, input: torch.Tensor, resize_type: str, scale_method: str,
            **options: Any) -> tuple[torch.Tensor]:
        value = {key[len(SUB):]: v for key, v in options.items() if key.startswith(SUB)}
        missing = [name for name in OPTIONS[resize_type] if value.get(name) is None]
        if missing:
            raise ValueError(f"resize_type {resize_type!r} needs {', '.join(SUB + n for n in missing)}")
        return (resize(input, resize_type, scale_method, value),)


def resize(data: torch.Tensor, resize_type: str, method: str, value: dict[str, Any]) -> torch.Tensor:
    """An IMAGE [B, H, W, C] or MASK [B, H, W] resized the way `resize_type` says (ComfyUI's rules)."""
    height, width = int(data.shape[1]), int(data.shape[2])
    crop = "disabled"
    if resize_type == "scale by multiplier":
        size = round(width * value["multiplier"]), round(height * value["multiplier"])
    elif resize_type in ("scale dimensions", "scale width", "scale height"):
        target_w = value["width"] if resize_type != "scale height" else 0
        target_h = value["height"] if resize_type != "scale width" else 0
        if target_w == 0 and target_h == 0:
            return data
        if target_w == 0:
            target_w = max(1, round(width * target_h / height))
        elif target_h == 0:
            target_h = max(1, round(height * target_w / width))
        size = target_w, target_h
        crop = value["crop"] if resize_type == "scale dimensions" else "disabled"
    elif resize_type in ("scale longer dimension", "scale shorter dimension"):
        longer = resize_type == "scale longer dimension"
        side = value["longer_size" if longer else "shorter_size"]
        if width == height:
            size = side, side
        elif (height > width) == longer:  # the side to set is the height
            size = round(width / height * side), side
        else:
            size = side, round(height / width * side)
    elif resize_type == "scale total pixels":
        scale = math.sqrt(int(value["megapixels"] * 1024 * 1024) / (width * height))
        size = round(width * scale), round(height * scale)
    elif resize_type == "match size":
        match = value["match"]
        size, crop = (int(match.shape[2]), int(match.shape[1])), value["crop"]
    else:
        raise ValueError(f"resize_type {resize_type!r} is not one of {', '.join(OPTIONS)}")
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"resize_type {resize_type!r} gives a {size[0]}x{size[1]} result from {width}x{height}")
    if data.ndim == 4:  # an image
        return upscale(data.movedim(-1, 1), size[0], size[1], method, crop).movedim(1, -1)
    return upscale(data.unsqueeze(1), size[0], size[1], method, crop).squeeze(1)


NODES = (with_input_schema(ResizeImageMaskNode, SCHEMA),)
