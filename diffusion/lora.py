"""LoRA files: read them (.safetensors only) and turn them into patches of a MODEL / CLIP handle.

    lora = load_lora_file(path)                                   # parsed once, cacheable
    model2, clip2, not_loaded = apply_lora(model, clip, lora, strength_model=1.0, strength_clip=1.0)

Supported formats (the key conventions are in lora_keys.py, and lora_keys_dit.py for Flux / SD3): kohya sd-scripts
LoRA and LoCon (incl. the Tucker `lora_mid`), LDM/ComfyUI/BFL-named LoRAs, and diffusers/PEFT LoRAs (lora_A/lora_B,
.lora.down/.lora.up, attention processors; ai-toolkit's and SimpleTuner's Flux LoRAs, whose separate q/k/v adapt row
blocks of the fused qkv weights). Not supported, reported as not loaded: LoHa (hada_*), LoKr (lokr_*), DoRA
(dora_scale), full/bias diffs (diff, diff_b), and LoRAs on OpenCLIP's fused in_proj.

The returned handles share the base weights; the LoRA takes effect while a handle runs (patches.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from torch import Tensor, nn

from diffusion.flux import Flux
from diffusion.handles import Clip, Model
from diffusion.lora_keys import (
    LoraPart,
    is_text_encoder_key,
    split_lora_key,
    text_encoder_aliases,
    unet_aliases,
)
from diffusion.lora_keys_dit import LoraTarget, dit_aliases
from diffusion.mmdit import MMDiT
from diffusion.patches import LoraPatch, PatchRoot, PatchTargetError, check_patch
from diffusion.safetensors_io import CheckpointError, open_tensors, read_header
from diffusion.unet import UNetConfig


class LoraFileError(CheckpointError):
    """A LoRA file that cannot be used as a whole (no LoRA tensors, broken factors); names the file."""


class LoraMismatch(CheckpointError):
    """A LoRA whose layers exist in the model with other shapes: made for another model (e.g. SD1 LoRA on SDXL)."""


@dataclass(frozen=True, eq=False)
class LoraWeights:
    """The factors of one adapted layer, as stored in the file (CPU, file dtype)."""

    base: str
    """The file's name for the layer (its keys minus the factor suffix), e.g. "lora_unet_input_blocks_1_1_proj_in"."""
    keys: tuple[str, ...]
    """The file's tensor keys that make up this entry (reported when it is not loaded)."""
    down: Tensor
    up: Tensor
    mid: Tensor | None
    alpha: float | None
    """None: the file has no alpha (scale 1, i.e. alpha = rank)."""

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass(frozen=True, eq=False)
class LoraFile:
    """A parsed LoRA file, grouped by what it adapts."""

    path: Path
    unet: Mapping[str, LoraWeights]
    """UNet layers, by the file's base key."""
    text: Mapping[str, LoraWeights]
    """Text-encoder layers (any encoder: the model's family decides which), by the file's base key."""
    unreadable: tuple[str, ...]
    """Tensor keys of no supported format (LoHa, LoKr, DoRA, diffs ...), or of an entry without both factors."""

    @property
    def name(self) -> str:
        return self.path.name


# ---------------------------------------------------------------------------------------------------------------
# Reading


def parse_lora_tensors(tensors: Mapping[str, Tensor], path: str | os.PathLike[str]) -> LoraFile:
    """Group a LoRA file's tensors into LoraWeights per layer (`path` names the file in messages and the result)."""
    path = Path(path)
    entries: dict[str, dict[LoraPart, tuple[str, Tensor]]] = {}
    unreadable: list[str] = []
    for key, tensor in tensors.items():
        parsed = split_lora_key(key)
        if parsed is None:
            unreadable.append(key)
            continue
        base, part = parsed
        entry = entries.setdefault(base, {})
        if part in entry:
            raise LoraFileError(path, f"two tensors give the {part} factor of {base!r}: {entry[part][0]!r}, {key!r}")
        entry[part] = (key, tensor)

    # An entry with a tensor no supported format has (e.g. DoRA's dora_scale beside lora_down/up) is not a plain
    # LoRA: applying its factors alone would give a different model, so the whole entry is not loaded.
    foreign_bases = {base for base in entries for key in unreadable if key.startswith(base + ".")}
    unet: dict[str, LoraWeights] = {}
    text: dict[str, LoraWeights] = {}
    for base, entry in entries.items():
        keys = tuple(key for key, _ in entry.values())
        if "down" not in entry or "up" not in entry or base in foreign_bases:
            unreadable.extend(keys)
            continue
        alpha = entry.get("alpha")
        if alpha is not None and alpha[1].numel() != 1:
            raise LoraFileError(path, f"{alpha[0]!r} should be a single number, got shape {tuple(alpha[1].shape)}")
        down, up = entry["down"][1], entry["up"][1]
        if down.ndim not in (2, 4) or up.ndim not in (2, 4) or down.shape[0] == 0:
            raise LoraFileError(
                path, f"{base!r}: factors must be 2-D or 4-D with a rank > 0, got down {tuple(down.shape)}, "
                f"up {tuple(up.shape)}"
            )
        mid = entry["mid"][1] if "mid" in entry else None
        weights = LoraWeights(
            base=base, keys=keys, down=down, up=up, mid=mid, alpha=float(alpha[1].float().item()) if alpha else None
        )
        (text if is_text_encoder_key(base) else unet)[base] = weights
    if not unet and not text:
        raise LoraFileError(
            path, f"no LoRA tensors found (expected keys ending in .lora_down.weight/.lora_up.weight or "
            f".lora_A.weight/.lora_B.weight); first keys: {sorted(tensors)[:5]}"
        )
    return LoraFile(path, MappingProxyType(unet), MappingProxyType(text), tuple(sorted(unreadable)))


def load_lora_file(path: str | os.PathLike[str]) -> LoraFile:
    """Read a .safetensors LoRA file (pickle formats refused).

    Raises:
        CheckpointFormatError: not a readable .safetensors file (missing, pickle, truncated, corrupt).
        LoraFileError: readable, but holds no LoRA tensors, or malformed ones.
    """
    header = read_header(path)
    with open_tensors(header.path) as reader:
        tensors = {name: reader.get(name) for name in header.tensors}
    return parse_lora_tensors(tensors, header.path)


# ---------------------------------------------------------------------------------------------------------------
# Applying


def diffusion_model_aliases(module: nn.Module, name: str = "") -> dict[str, str] | dict[str, LoraTarget]:
    """The LoRA alias table of a MODEL's network: an SD UNet (by its UNetConfig), Flux or SD3's MMDiT."""
    if isinstance(module, (Flux, MMDiT)):
        return dit_aliases(module)
    config = getattr(module, "config", None)
    if not isinstance(config, UNetConfig):
        raise TypeError(f"MODEL {name!r}: LoRA needs an SD UNet, Flux or SD3 model (got {type(module).__name__})")
    return unet_aliases(module, config)


def _up_for(weights: LoraWeights, target: LoraTarget) -> Tensor:
    """The up factor in the checkpoint's row order (diffusers' (shift, scale) halves swapped to (scale, shift))."""
    if not target.swap_halves:
        return weights.up
    shift, scale = weights.up.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def _patches_for(
    entries: Mapping[str, LoraWeights],
    aliases: Mapping[str, str] | Mapping[str, LoraTarget],
    root_module: nn.Module,
    *,
    root: PatchRoot,
    strength: float,
    source: Path,
    claimed: set[str],
) -> tuple[list[LoraPatch], list[str]]:
    """Patches for the entries whose base key is an alias of this root's layers; the entries' shape mismatches."""
    patches: list[LoraPatch] = []
    mismatched: list[str] = []
    for base, weights in entries.items():
        found = aliases.get(base)
        if found is None:
            continue
        target = found if isinstance(found, LoraTarget) else LoraTarget(found)
        claimed.add(base)
        patch = LoraPatch(
            root=root,
            target=target.module,
            down=weights.down,
            up=_up_for(weights, target),
            mid=weights.mid,
            alpha=weights.alpha if weights.alpha is not None else float(weights.rank),
            strength=strength,
            source=source.name,
            rows=target.rows,
        )
        try:
            check_patch(patch, root_module.get_submodule(target.module))
        except PatchTargetError as exc:
            mismatched.append(str(exc))
            continue
        patches.append(patch)
    return patches, mismatched


def apply_lora(
    model: Model | None,
    clip: Clip | None,
    lora: LoraFile,
    *,
    strength_model: float,
    strength_clip: float,
) -> tuple[Model | None, Clip | None, list[str]]:
    """New MODEL / CLIP handles carrying the LoRA's patches (LoraLoader; pass clip=None for LoraLoaderModelOnly).

    Layers are resolved against THIS model's modules (its UNet config, or its Flux / MMDiT layers, and its family's
    text encoders). A strength of 0 returns that handle unchanged. UNet entries count only when `model` is given,
    text-encoder entries only when `clip` is.

    Returns:
        (model, clip, not_loaded): not_loaded lists the file's tensor keys that adapt nothing here (no such layer
        in this model, or an unsupported format), sorted; the node logs them.

    Raises:
        LoraMismatch: layers the LoRA names exist here with other shapes (a LoRA made for another model).
    """
    claimed: set[str] = set()
    mismatched: list[str] = []
    not_loaded: list[str] = list(lora.unreadable)

    new_model = model
    if model is not None:
        unet = model.unet
        patches, bad = _patches_for(
            lora.unet, diffusion_model_aliases(unet, model.name), unet,
            root="unet", strength=strength_model, source=lora.path, claimed=claimed,
        )
        mismatched += bad
        not_loaded += [k for base, w in lora.unet.items() if base not in claimed for k in w.keys]
        if strength_model != 0 and patches:
            new_model = model.with_patches(*patches)

    new_clip = clip
    if clip is not None:
        clip_patches: list[LoraPatch] = []
        for encoder in clip.encoders:
            aliases = text_encoder_aliases(encoder.slot, encoder.module, encoder_count=len(clip.encoders))
            patches, bad = _patches_for(
                lora.text, aliases, encoder.module,
                root=encoder.slot.name, strength=strength_clip, source=lora.path, claimed=claimed,
            )
            clip_patches += patches
            mismatched += bad
        not_loaded += [k for base, w in lora.text.items() if base not in claimed for k in w.keys]
        if strength_clip != 0 and clip_patches:
            new_clip = clip.with_patches(*clip_patches)

    if mismatched:
        family = model.family.name if model is not None else clip.family.name if clip is not None else "?"
        raise LoraMismatch(
            lora.path,
            f"{len(mismatched)} layer(s) do not fit this {family} model (is the LoRA made for another model "
            f"family?): " + "; ".join(mismatched[:3]) + (" ..." if len(mismatched) > 3 else ""),
        )
    return new_model, new_clip, sorted(not_loaded)


__all__ = [
    "LoraFile",
    "LoraFileError",
    "LoraMismatch",
    "LoraWeights",
    "apply_lora",
    "diffusion_model_aliases",
    "load_lora_file",
    "parse_lora_tensors",
]
