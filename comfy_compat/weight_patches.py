"""ComfyUI's ModelPatcher weight patches (`add_patches`) as Chisel's weight patches (diffusion/patches.py).

ComfyUI keeps, per state-dict key, a list of (strength_patch, value, strength_model, offset, function). The value
forms packs use and their mapping:

    (tensor,) / ("diff", (tensor,))   a whole-parameter update: WeightPatch(value=tensor)
    [(weight,), *patches]            another model's parameter as its patcher sees it (get_key_patches, what the
                                     model-merging code adds): WeightPatch(value=OtherWeight(...))

LoRA-style values ("lora", (up, down, alpha, ...)) and offsets/functions are refused with a message naming the key.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch

from diffusion.patches import OtherWeight, WeightPatch

UNET_PREFIX = "diffusion_model."
# id(parameter) -> (a weak reference to it, its module, its name, its patches); tensors cannot be dict keys by value
_owners: dict[int, tuple[weakref.ref[torch.Tensor], torch.nn.Module, str, tuple[Any, ...]]] = {}
_lock = threading.Lock()


def remember_owner(weight: torch.Tensor, module: torch.nn.Module, name: str, patches: tuple[Any, ...]) -> None:
    """Note that `weight` is parameter `name` of `module` with these (Chisel) patches (get_key_patches)."""
    with _lock:
        for key in [k for k, entry in _owners.items() if entry[0]() is None]:
            del _owners[key]  # parameters that are gone
        _owners[id(weight)] = (weakref.ref(weight), module, name, patches)


def _value(key: str, value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "diff":
        value = value[1]
    if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], torch.Tensor):
        return value[0]
    if isinstance(value, list) and value and isinstance(value[0], tuple) and len(value[0]) == 1 and \
            isinstance(value[0][0], torch.Tensor):
        with _lock:
            owner = _owners.get(id(value[0][0]))
        if owner is None or owner[0]() is not value[0][0]:
            raise ValueError(f"weight patch for {key}: a parameter of a model this layer does not know")
        _, module, name, patches = owner
        return OtherWeight(module=module, name=name, patches=patches)
    kind = value[0] if isinstance(value, tuple) and value and isinstance(value[0], str) else type(value).__name__
    raise ValueError(f"weight patch for {key}: ComfyUI's {kind!r} patches are not supported by Chisel yet")


def to_weight_patches(patches: dict[str, list[tuple[Any, ...]]]) -> list[WeightPatch]:
    """ModelPatcher.patches ({key: [(strength_patch, value, strength_model, offset, function), ...]}) as
    WeightPatches on the UNet, in order."""
    out = []
    for key, entries in patches.items():
        if not key.startswith(UNET_PREFIX):
            raise ValueError(f"weight patch for {key}: only diffusion_model.* keys are supported")
        for strength_patch, value, strength_model, offset, function in entries:
            if offset is not None or function is not None:
                raise ValueError(f"weight patch for {key}: offsets and functions are not supported by Chisel yet")
            out.append(WeightPatch(root="unet", target=key[len(UNET_PREFIX):], value=_value(key, value),
                                   strength_patch=float(strength_patch), strength_model=float(strength_model),
                                   source="custom node"))
    return out


def to_clip_weight_patches(patches: dict[str, list[tuple[Any, ...]]]) -> list[WeightPatch]:
    """comfy.sd.CLIP.patches ({"<slot>.<parameter>": [...]}) as WeightPatches on the text encoders, in order."""
    out = []
    for key, entries in patches.items():
        slot, _, target = key.partition(".")
        for strength_patch, value, strength_model, offset, function in entries:
            if offset is not None or function is not None:
                raise ValueError(f"weight patch for {key}: offsets and functions are not supported by Chisel yet")
            out.append(WeightPatch(root=slot, target=target, value=_value(key, value),  # type: ignore[arg-type]
                                   strength_patch=float(strength_patch), strength_model=float(strength_model),
                                   source="custom node"))
    return out
