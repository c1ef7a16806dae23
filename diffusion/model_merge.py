"""Model and text-encoder merging as weight patches, and LoRA extraction from a merged difference.

The merging nodes (ComfyUI's comfy_extras/nodes_model_merging.py) never copy weights: they return model1's handle
with one `WeightPatch` per parameter of model2, whose value is model2's parameter as model2 sees it (its own LoRAs
and merges folded in). The weights are combined only while the handle runs (patches.py):

    ModelMergeSimple(ratio r)      W = r·W1 + (1 − r)·W2        strengths (patch 1 − r, model r): r is model1's share
    ModelMergeSubtract(m)          W = m·W1 − m·W2              (−m, m)
    ModelMergeAdd                  W = W1 + W2                  (1, 1)
    ModelMergeBlocks(input, middle, out): Simple with the ratio of the longest of those prefixes the UNet key starts
                                   with (input_blocks.*, middle_block.*, output_blocks.* and out.*), else `input`'s

As in ComfyUI, only parameters model1 has are merged; one of another shape is only scaled (ComfyUI warns "WEIGHT NOT
MERGED"), and when half or more have another shape the merge is refused (MergeError: another architecture).
CLIP merges skip position_ids and logit_scale.

`extract_lora` / `lora_state_dict` are ComfyUI's LoraSave (comfy_extras/nodes_lora_extract.py): a truncated SVD of
each weight difference, clamped at the 0.99 quantile, written in ComfyUI's key layout as fp16.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from diffusion.handles import Clip, Model
from diffusion.patches import LoraPatch, OtherWeight, WeightPatch, patched_value

log = logging.getLogger(__name__)

CLAMP_QUANTILE = 0.99
"""LoraSave clamps both factors to ± this quantile of their values (ComfyUI's CLAMP_QUANTILE)."""
CLIP_SKIPPED_SUFFIXES = (".position_ids", ".logit_scale")
LoraType = Literal["standard", "full_diff"]
LORA_TYPES: tuple[LoraType, ...] = ("standard", "full_diff")
BLOCK_PREFIXES = ("input", "middle", "out")


class MergeError(ValueError):
    """Two models that cannot be merged (nothing in common) or a difference that cannot be extracted."""


Strengths = Callable[[str], tuple[float, float]]
"""parameter name -> (strength_patch, strength_model)."""


def _patches_by_parameter(patches: Iterable[object], root: str) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for patch in patches:
        if isinstance(patch, LoraPatch) and patch.root == root:
            out.setdefault(patch.target + ".weight", []).append(patch)
        elif isinstance(patch, WeightPatch) and patch.root == root:
            out.setdefault(patch.target, []).append(patch)
    return out


def _merge_patches(target: nn.Module, source: nn.Module, source_patches: Iterable[object], *, root: str,
                   strengths: Strengths, source_name: str, skip: tuple[str, ...] = ()) -> list[WeightPatch]:
    mine = dict(target.named_parameters())
    theirs = _patches_by_parameter(source_patches, root)
    patches: list[WeightPatch] = []
    mismatched: list[str] = []
    for name, param in source.named_parameters():
        if name.endswith(skip) or name not in mine:
            continue
        strength_patch, strength_model = strengths(name)
        value: OtherWeight | None = OtherWeight(source, name, tuple(theirs.get(name, ())))
        if mine[name].shape != param.shape:
            mismatched.append(name)
            value = None
        patches.append(WeightPatch(root=root, target=name, value=value,  # type: ignore[arg-type]  # root: a slot name
                                   strength_patch=strength_patch, strength_model=strength_model, source=source_name))
    if not patches or len(mismatched) * 2 >= len(patches):
        # ComfyUI only warns per key; a merge where most weights cannot merge is another architecture, not a merge.
        raise MergeError(f"{source_name or 'the second model'}: {len(mismatched)} of {len(patches)} {root} weights "
                         f"have another shape than in the first model; they have too little in common to merge "
                         f"(different architectures?)")
    if mismatched:
        log.warning("merge: %d weights of %s have another shape and are not merged: %s", len(mismatched),
                    source_name, ", ".join(mismatched[:5]))
    return patches


def merge_models(model1: Model, model2: Model, strengths: Strengths) -> Model:
    """model1's handle with model2's UNet weights merged in with per-parameter (strength_patch, strength_model)."""
    patches = _merge_patches(model1.unet, model2.unet, model2.patches, root="unet", strengths=strengths,
                             source_name=model2.name)
    return model1.with_patches(*patches)


def merge_clips(clip1: Clip, clip2: Clip, strengths: Strengths) -> Clip:
    """clip1's handle with the text encoders of clip2 that fill the same slots merged in."""
    theirs = {e.slot.name: e for e in clip2.encoders}
    patches: list[WeightPatch] = []
    for encoder in clip1.encoders:
        other = theirs.get(encoder.slot.name)
        if other is None:
            continue
        patches += _merge_patches(encoder.module, other.module, clip2.patches, root=encoder.slot.name,
                                  strengths=strengths, source_name=clip2.name, skip=CLIP_SKIPPED_SUFFIXES)
    if not patches:
        raise MergeError(f"CLIP {clip2.name!r} has no text encoder in the slots of {clip1.name!r} "
                         f"({[e.slot.name for e in clip1.encoders]})")
    return clip1.with_patches(*patches)


def simple(ratio: float) -> Strengths:
    """ModelMergeSimple / CLIPMergeSimple: ``ratio`` of the first model, 1 − ratio of the second (ComfyUI's
    ``add_patches(patches, 1.0 - ratio, ratio)``: ratio 1, the default, leaves the first model as it is)."""
    return lambda name: (1.0 - ratio, ratio)


def subtract(multiplier: float) -> Strengths:
    return lambda name: (-multiplier, multiplier)


def add() -> Strengths:
    return lambda name: (1.0, 1.0)


def by_block(ratios: Mapping[str, float]) -> Strengths:
    """ModelMergeBlocks: the ratio (the first model's share) of the longest prefix the UNet key starts with; the
    first ratio otherwise."""
    default = next(iter(ratios.values()))

    def strengths(name: str) -> tuple[float, float]:
        matches = [prefix for prefix in ratios if name.startswith(prefix)]
        ratio = ratios[max(matches, key=len)] if matches else default
        return 1.0 - ratio, ratio  # the ratio is the first model's share, as in simple()

    return strengths


def patched_state_dict(module: nn.Module, patches: Iterable[object], root: str) -> dict[str, Tensor]:
    """`module.state_dict()` with a handle's patches of `root` folded into each parameter, in the parameter's dtype
    (what ComfyUI saves after force_patch_weights); unpatched tensors are the module's own (not copied)."""
    by_name = _patches_by_parameter(patches, root)
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            group = by_name.get(name)
            out[name] = patched_value(tensor, group).to(tensor.dtype) if group else tensor  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------------------------------------------------------
# LoRA extraction (LoraSave)


def extract_lora(diff: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """(up, down) with up @ down ≈ diff: the rank-r truncated SVD, U·S as up, clamped to ±the 0.99 quantile of
    both factors' values (ComfyUI's extract_lora). Conv weights: down [r, in, kh, kw], up [out, r, 1, 1]."""
    conv = diff.ndim == 4
    out_dim, in_dim = diff.shape[:2]
    rank = min(rank, in_dim, out_dim)
    kernel = tuple(diff.shape[2:4]) if conv else None
    matrix = diff.float().flatten(1) if conv else diff.float()  # [out, in·kh·kw]
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    up = u[:, :rank] @ torch.diag(s[:rank])  # [out, r]
    down = vh[:rank, :]  # [r, in·kh·kw]
    high = torch.quantile(torch.cat([up.flatten(), down.flatten()]), CLAMP_QUANTILE)
    up, down = up.clamp(-high, high), down.clamp(-high, high)
    if conv:
        assert kernel is not None
        up = up.reshape(out_dim, rank, 1, 1)
        down = down.reshape(rank, in_dim, *kernel)
    return up, down


def _difference_entries(module: nn.Module, patches: Iterable[object], *, root: str, prefix: str, rank: int,
                        lora_type: LoraType, bias_diff: bool, out: dict[str, Tensor]) -> None:
    by_name = _patches_by_parameter(patches, root)
    for name, param in module.named_parameters():
        value = patched_value(param, by_name.get(name, ()))  # type: ignore[arg-type]
        if name.endswith(".weight"):
            base = prefix + name[: -len(".weight")]
            if lora_type == "full_diff":
                out[f"{base}.diff"] = value.half().cpu()
            elif value.ndim < 2:
                if bias_diff:
                    out[f"{base}.diff"] = value.half().cpu()
            else:
                up, down = extract_lora(value, rank)
                out[f"{base}.lora_up.weight"] = up.contiguous().half().cpu()
                out[f"{base}.lora_down.weight"] = down.contiguous().half().cpu()
        elif bias_diff and name.endswith(".bias"):
            out[f"{prefix}{name[: -len('.bias')]}.diff_b"] = value.half().cpu()


def lora_state_dict(model_diff: Model | None, text_encoder_diff: Clip | None, *, rank: int,
                    lora_type: LoraType = "standard", bias_diff: bool = True) -> dict[str, Tensor]:
    """The tensors of ComfyUI's extracted LoRA for a difference model (ModelMergeSubtract's output) and/or a
    difference CLIP: `diffusion_model.<key>.lora_up/.lora_down.weight` (or `.diff`), `.diff_b` for biases, and
    `text_encoders.<slot>.transformer.<key>...` for the text encoders; fp16."""
    if lora_type not in LORA_TYPES:
        raise MergeError(f"lora_type must be one of {LORA_TYPES}, got {lora_type!r}")
    if rank < 1:
        raise MergeError(f"rank must be at least 1, got {rank}")
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        if model_diff is not None:
            _difference_entries(model_diff.unet, model_diff.patches, root="unet", prefix="diffusion_model.",
                                rank=rank, lora_type=lora_type, bias_diff=bias_diff, out=out)
        if text_encoder_diff is not None:
            for encoder in text_encoder_diff.encoders:
                slot = encoder.slot.name
                _difference_entries(encoder.module, text_encoder_diff.patches, root=slot,
                                    prefix=f"text_encoders.{slot}.transformer.", rank=rank, lora_type=lora_type,
                                    bias_diff=bias_diff, out=out)
    return out


__all__ = [
    "BLOCK_PREFIXES",
    "CLAMP_QUANTILE",
    "LORA_TYPES",
    "MergeError",
    "add",
    "by_block",
    "extract_lora",
    "lora_state_dict",
    "merge_clips",
    "merge_models",
    "patched_state_dict",
    "simple",
    "subtract",
]
