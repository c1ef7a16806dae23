"""The tensors and metadata ComfyUI's save nodes write (comfy/sd.py save_checkpoint, CLIPSave, VAESave), from handles
with their patches (LoRA, merges) folded in, so a merged model saves as the merged weights.

Key layouts, as ComfyUI writes them and as Chisel's loaders read them back:
- checkpoint: the UNet under `model.diffusion_model.`, the VAE under `first_stage_model.`, each text encoder under its
  family's checkpoint prefix in the checkpoint's own layout (SD1/SDXL clip_l: HF CLIP names with position_ids;
  OpenCLIP slots: resblocks with fused in_proj); a v-prediction model gets the empty `v_pred` marker tensor.
- a UNet alone (ModelSave): the same file without VAE and text encoders.
- a VAE alone: its `first_stage_model.` keys without the prefix (the ldm layout).
- one text encoder alone (CLIPSave, one file per encoder): HF CLIP names (`text_model.*`, `text_projection.weight`).

Weights keep the modules' dtype (fp32 on the CPU, the loaded dtype on a GPU).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from diffusion.checkpoint import UNET_PREFIX, VAE_PREFIX
from diffusion.handles import Clip, Model, Vae
from diffusion.model_merge import patched_state_dict
from diffusion.text_encoders import checkpoint_state_dict


class SaveError(ValueError):
    """Handles that cannot be written as one checkpoint (e.g. a CLIP of another family than the model)."""


class _StateOf:
    """A stand-in for a text encoder whose state_dict is given (its patched tensors); checkpoint_state_dict reads
    only `state_dict()`."""

    def __init__(self, state: Mapping[str, Tensor]) -> None:
        self._state = dict(state)

    def state_dict(self) -> dict[str, Tensor]:
        return self._state


def unet_tensors(model: Model) -> dict[str, Tensor]:
    """The model's UNet with its patches, under `model.diffusion_model.` (+ `v_pred` for a v-prediction model)."""
    out = {UNET_PREFIX + k: v for k, v in patched_state_dict(model.unet, model.patches, "unet").items()}
    if model.sampling.prediction == "v":
        out["v_pred"] = torch.tensor([])
    return out


def vae_tensors(vae: Vae, prefix: str = "") -> dict[str, Tensor]:
    return {prefix + k: v for k, v in vae.module.state_dict().items()}


def text_encoder_tensors(clip: Clip, *, checkpoint_layout: bool) -> dict[str, dict[str, Tensor]]:
    """Per slot name: the encoder's tensors with the clip's patches, in the checkpoint layout under the slot's
    prefix, or in HF names without one (a standalone text-encoder file)."""
    out = {}
    for encoder in clip.encoders:
        state = patched_state_dict(encoder.module, clip.patches, encoder.slot.name)
        if checkpoint_layout:
            module = _StateOf(state)  # checkpoint_state_dict only reads state_dict()
            out[encoder.slot.name] = checkpoint_state_dict(module, encoder.slot.prefix,  # type: ignore[arg-type]
                                                           encoder.module.config)  # type: ignore[arg-type]
        else:
            out[encoder.slot.name] = state
    return out


def checkpoint_tensors(model: Model, clip: Clip | None = None, vae: Vae | None = None) -> dict[str, Tensor]:
    """A single-file checkpoint of these handles (ComfyUI's state_dict_for_saving)."""
    if clip is not None and clip.family.text_encoders != model.family.text_encoders:
        raise SaveError(f"the CLIP ({clip.family.name}) is not of the model's family ({model.family.name}); a "
                        f"checkpoint holds the text encoders its UNet was trained with")
    tensors = unet_tensors(model)
    if clip is not None:
        for part in text_encoder_tensors(clip, checkpoint_layout=True).values():
            tensors.update(part)
    if vae is not None:
        tensors.update(vae_tensors(vae, VAE_PREFIX))
    return tensors


def checkpoint_metadata(model: Model, *, title: str, prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None,
                        include_workflow: bool) -> dict[str, str]:
    """ComfyUI's save_checkpoint metadata: modelspec for SDXL (base / edit / refiner), the prediction key, then the
    prompt and each extra_pnginfo entry as JSON (unless metadata is switched off)."""
    metadata: dict[str, str] = {}
    family = model.family.name
    if family in ("sdxl", "sdxl_refiner"):
        edit = getattr(model.unet.config, "in_channels", 4) == 2 * model.family.latent_channels
        metadata["modelspec.architecture"] = ("stable-diffusion-xl-v1-refiner" if family == "sdxl_refiner" else
                                              "stable-diffusion-xl-v1-edit" if edit else
                                              "stable-diffusion-xl-v1-base")
        metadata["modelspec.sai_model_spec"] = "1.0.0"
        metadata["modelspec.implementation"] = "sgm"
        metadata["modelspec.title"] = title
    prediction = model.sampling.prediction
    if prediction in ("eps", "v"):
        metadata["modelspec.predict_key"] = "epsilon" if prediction == "eps" else "v"
    if include_workflow:
        metadata.update(workflow_metadata(prompt, extra_pnginfo))
    return metadata


def workflow_metadata(prompt: Any, extra_pnginfo: Mapping[str, Any] | None) -> dict[str, str]:
    """{"prompt": JSON or "", each extra_pnginfo key: JSON} as ComfyUI's save nodes write them."""
    metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    return metadata


_DTYPE_CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
    torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


def safetensors_chunks(tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> Iterator[Any]:
    """The bytes of a .safetensors file as chunks (the 8-byte header length, the JSON header padded to 8 bytes, then
    each tensor's bytes), so a multi-GB checkpoint is written tensor by tensor instead of built in memory first.
    Each tensor is moved to the CPU (contiguous) only when its turn comes."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    names = sorted(tensors)
    offset = 0
    for name in names:
        tensor = tensors[name]
        if tensor.dtype not in _DTYPE_CODES:
            raise SaveError(f"{name}: dtype {tensor.dtype} cannot be stored in safetensors")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _DTYPE_CODES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    yield len(encoded).to_bytes(8, "little")
    yield encoded
    for name in names:
        tensor = tensors[name].detach().to("cpu").contiguous()
        if tensor.numel():
            yield memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


__all__ = [
    "SaveError",
    "safetensors_chunks",
    "checkpoint_metadata",
    "checkpoint_tensors",
    "text_encoder_tensors",
    "unet_tensors",
    "vae_tensors",
    "workflow_metadata",
]
