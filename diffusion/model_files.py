"""Model files that hold one part of a model: a diffusion model alone (``models/diffusion_models``, ComfyUI's
UNETLoader) and a text encoder alone (``models/text_encoders``, CLIPLoader and friends).

Detection reads only the safetensors header. A diffusion-model file is a Flux.1 transformer (``double_blocks``), an
SD3 MMDiT (``joint_blocks``) or an SD-family UNet (``input_blocks``), bare or under ``model.diffusion_model.``;
single-file Flux / SD3 checkpoints (with their VAE and text encoders) load here too. A text-encoder file is CLIP-L /
CLIP-G (transformers' CLIPTextModel names, with or without ``text_model.``) or T5 v1.1 (``encoder.block``). Every
module is built on the meta device and checked name by name and shape by shape before any data is read (a typed
error names what is missing, unexpected or wrongly shaped), then each tensor is read once and assigned.

Weights: the compute dtype is the manager's (fp32 on the CPU, bf16 on recent GPUs); ``storage`` (UNETLoader's
weight_dtype: fp8 e4m3fn / e5m2) keeps the Linear weight matrices in fp8 and upcasts them per layer. A file stored in
fp8 keeps that storage unless another is asked for.

On a CPU, the flow transformers (Flux / SD3, alone or in a single-file checkpoint) loaded with ``auto_dtype=True``
(the manager's automatic dtype, not one the user set) follow `flow_compute_dtype`: weights held in bf16 or fp8 (the
file's, or UNETLoader's fp8 storage) compute in bf16 when the CPU multiplies bf16 natively (`cpu_has_native_bf16`:
AVX512-BF16 or AMX-BF16 on x86, the BF16 extension on Arm), else fp32; fp32 and fp16 files compute in fp32. The SD
UNets, the VAE and the text encoders keep fp32 on the CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from diffusion.checkpoint import (
    SD2_V_PROBE,
    SD2_V_STD_THRESHOLD,
    UNET_PREFIX,
    VAE_PREFIX,
    CheckpointMismatch,
    UnknownCheckpoint,
    check_shapes,
    detect_layout,
    detect_vae_config,
)
from diffusion.dit_layers import cast_state, storage_dtypes
from diffusion.families import FLUX, SD3, ModelFamily
from diffusion.flow_sampling import FLUX_DEV_SHIFT, FLUX_SCHNELL_SHIFT, SD3_SHIFT, FluxSampling, ShiftedFlowSampling
from diffusion.flux import Flux, FluxConfigError, detect_flux_config, is_flux
from diffusion.model_sampling import DiscreteSampling
from diffusion.safetensors_io import open_tensors, read_header
from diffusion.t5 import T5ConfigError, T5Encoder, T5Tokenizer, detect_t5_config, is_t5, t5_state_dict
from diffusion.text_encoders import (
    TextEncoderConfig,
    TextEncoderDetectionError,
    build_text_encoder,
    detect_text_encoder,
    text_encoder_state_dict,
)
from diffusion.unet import UNetModel
from diffusion.vae import AutoencoderKL

DIFFUSION_PREFIX = UNET_PREFIX  # model.diffusion_model., as in a checkpoint
WeightStorage = Literal["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
WEIGHT_STORAGE: Mapping[str, torch.dtype | None] = {
    "default": None,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    # ComfyUI's "fast" variant multiplies in fp8 on GPUs that can; here it stores the same and upcasts per layer.
    "fp8_e4m3fn_fast": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
_FILE_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
TextEncoderKind = Literal["clip_l", "clip_g", "t5xxl"]
CLIP_L_WIDTH = 768
CLIP_G_MIN_LAYERS = 30
"""Shapes cannot name a CLIP tower; more than 30 layers (bigG has 32) or a 1280 width is CLIP-G (ComfyUI's rule)."""


def _file_dtype(codes: list[str]) -> torch.dtype:
    floats = [c for c in codes if c in _FILE_DTYPES]
    if not floats:
        return torch.float32
    return _FILE_DTYPES[max(set(floats), key=floats.count)]


def _fp8_in(codes: list[str]) -> torch.dtype | None:
    """The fp8 dtype of a file that stores tensors in fp8 (its weight matrices; biases and norms often are not)."""
    found = [_FILE_DTYPES[c] for c in codes if c in ("F8_E4M3", "F8_E5M2")]
    return max(set(found), key=found.count) if found else None


def compute_dtype(codes: list[str], device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype activations run in: the manager's choice; else the file's (fp8 files compute in bf16)."""
    if dtype is not None:
        return dtype
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if _fp8_in(codes) is not None else _file_dtype(codes)


_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # /proc/cpuinfo flags (x86) / Features (arm64)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively: an AVX512-BF16 / AMX-BF16 (x86) or BF16 (Arm) flag in
    /proc/cpuinfo, else oneDNN's own check (macOS, Windows). Without it bf16 matmuls are emulated and slower than
    fp32. Read once per process."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            flags = {word for line in info if line.lower().startswith(("flags", "features"))
                     for word in line.split(":", 1)[-1].split()}
        return any(flag in flags for flag in _CPU_BF16_FLAGS)
    except OSError:
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False


def flow_compute_dtype(codes: list[str], device: torch.device, dtype: torch.dtype | None, *,
                       storage: torch.dtype | None = None, auto_dtype: bool = False,
                       cpu_bf16: bool | None = None) -> torch.dtype:
    """The compute dtype of a Flux / SD3 transformer. Without auto_dtype (`dtype` is the user's, or a library
    caller's None) and on any device off the CPU: `compute_dtype`. On a CPU with the automatic dtype: bf16 when the
    weights are held in bf16 or fp8 (the file's dtype, or `storage`, UNETLoader's fp8 choice) and the CPU has native
    bf16 (`cpu_bf16`, default `cpu_has_native_bf16()`); fp32 otherwise (fp32 / fp16 files, or no native bf16)."""
    if device.type != "cpu" or not auto_dtype:
        return compute_dtype(codes, device, dtype)
    held = storage or _fp8_in(codes) or _file_dtype(codes)
    narrow = held in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)
    native = cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16
    return torch.bfloat16 if narrow and native else torch.float32


def _assign(module: nn.Module, tensors: Mapping[str, torch.Tensor], device: torch.device, compute: torch.dtype,
            storage: torch.dtype | None) -> nn.Module:
    """Put the (already renamed, memory-mapped) tensors into the module, each in its storage dtype."""
    module.load_state_dict(cast_state(tensors, storage_dtypes(module, compute, storage), device), strict=True,
                           assign=True)
    return module.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
# Diffusion models


@dataclass(frozen=True)
class LoadedDiffusionModel:
    """A diffusion model loaded from its own file, in inference mode."""

    path: Path
    family: ModelFamily
    module: nn.Module
    config: Any
    sampling: FluxSampling | ShiftedFlowSampling | DiscreteSampling
    """The model's default model sampling (Flux dev μ 1.15, schnell μ 1.0; SD3 shift 3; the UNets' DDPM table)."""
    storage: torch.dtype | None
    """The dtype the Linear weights are stored in when it differs from the compute dtype (fp8), else None."""


@dataclass(frozen=True)
class DiffusionModelLayout:
    """What detection reads from a diffusion-model file, before any data."""

    family: ModelFamily
    prefix: str
    config: Any
    build: Callable[[], nn.Module]
    sampling: FluxSampling | ShiftedFlowSampling | DiscreteSampling


def detect_diffusion_model(shapes: Mapping[str, tuple[int, ...]], *, path: str | os.PathLike[str]
                           ) -> DiffusionModelLayout:
    """Which transformer the file holds and its configuration, from names and shapes."""
    path = Path(path)
    prefix = DIFFUSION_PREFIX if any(k.startswith(DIFFUSION_PREFIX) for k in shapes) else ""
    try:
        if is_flux(shapes, prefix):
            config = detect_flux_config(shapes, prefix=prefix, path=path)
            shift = FLUX_DEV_SHIFT if config.guidance_embed else FLUX_SCHNELL_SHIFT
            return DiffusionModelLayout(FLUX, prefix, config, lambda: Flux(config), FluxSampling(shift=shift))
        from diffusion import mmdit  # the SD3 family; imported here so Flux-only use never builds its tables

        if mmdit.is_mmdit(shapes, prefix):
            mconfig = mmdit.detect_mmdit_config(shapes, prefix=prefix, path=path)
            return DiffusionModelLayout(SD3, prefix, mconfig, lambda: mmdit.MMDiT(mconfig),
                                        ShiftedFlowSampling(shift=SD3_SHIFT))
    except (FluxConfigError, ValueError) as exc:
        raise UnknownCheckpoint(path, str(exc)) from None
    if f"{prefix}input_blocks.0.0.weight" in shapes:
        return _unet_layout(shapes, prefix, path)
    sample = ", ".join(list(shapes)[:3]) or "no tensors"
    raise UnknownCheckpoint(path, "not a Flux (double_blocks), SD3 (joint_blocks) or SD UNet (input_blocks) "
                                  f"diffusion model; the file has {sample}")


def _unet_layout(shapes: Mapping[str, tuple[int, ...]], prefix: str, path: Path) -> DiffusionModelLayout:
    """An SD1.x / SD2.x / SDXL UNet alone (ldm names): the checkpoint rules of diffusion/checkpoint.py, applied
    under the checkpoint prefix. SDXL v-prediction follows a `v_pred` key; SD2's eps/v is decided after loading."""
    prefixed = {UNET_PREFIX + k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
    if "v_pred" in shapes:
        prefixed["v_pred"] = shapes["v_pred"]
    layout = detect_layout(prefixed, path=path)
    family, config = layout.family, layout.unet_config
    sampling = DiscreteSampling.linear(prediction=family.prediction, linear_start=family.linear_start,
                                       linear_end=family.linear_end, timesteps=family.num_timesteps)
    return DiffusionModelLayout(family, prefix, config, lambda: UNetModel(config), sampling)  # type: ignore[arg-type]


def _with_sd2_prediction(loaded: LoadedDiffusionModel) -> LoadedDiffusionModel:
    """SD2 with 4 input channels is a v-model when one norm bias varies (checkpoint.py's rule, read after loading)."""
    family = loaded.family
    if family.name != "sd2" or loaded.config.in_channels != 4:
        return loaded
    bias = loaded.module.state_dict().get(SD2_V_PROBE)
    if bias is None or bias.float().std().item() <= SD2_V_STD_THRESHOLD:
        return loaded
    v = family.with_prediction("v")
    return dataclasses.replace(loaded, family=v, sampling=DiscreteSampling.linear(  # type: ignore[arg-type]
        prediction="v", linear_start=v.linear_start, linear_end=v.linear_end, timesteps=v.num_timesteps))


def check_diffusion_model(shapes: Mapping[str, tuple[int, ...]], *, path: str | os.PathLike[str]
                          ) -> DiffusionModelLayout:
    """Detection plus the strict name-and-shape match of the module built on the meta device."""
    layout = detect_diffusion_model(shapes, path=path)
    with torch.device("meta"):
        module = layout.build()
    check_shapes(module, {k[len(layout.prefix):]: v for k, v in shapes.items()
                    if k.startswith(layout.prefix) and k != "v_pred"}, Path(path), "diffusion model")
    return layout


def load_diffusion_model(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
                         dtype: torch.dtype | None = None, weight_dtype: WeightStorage = "default",
                         auto_dtype: bool = False) -> LoadedDiffusionModel:
    """Load a Flux.1 / SD3 diffusion-model file (see the module docstring for dtypes). auto_dtype: `dtype` is the
    manager's automatic choice, so on a CPU a Flux / SD3 model follows `flow_compute_dtype` (a UNet keeps it).

    Raises:
        CheckpointFormatError, UnknownCheckpoint, CheckpointMismatch.
    """
    device = torch.device(device)
    if weight_dtype not in WEIGHT_STORAGE:
        raise ValueError(f"weight_dtype must be one of {sorted(WEIGHT_STORAGE)}, got {weight_dtype!r}")
    header = read_header(path)
    shapes = {k: v for k, v in header.shapes.items() if k.startswith(DIFFUSION_PREFIX) or
              not any(s.startswith(DIFFUSION_PREFIX) for s in header.shapes)}
    layout = check_diffusion_model(shapes, path=header.path)
    shapes = {k: v for k, v in shapes.items() if k != "v_pred"}  # SDXL's v-prediction marker, read by detection
    codes = [header.tensors[k].dtype for k in shapes]
    storage = WEIGHT_STORAGE[weight_dtype]
    if layout.family.prediction == "flow":  # Flux / SD3; the UNets keep the manager's dtype
        compute = flow_compute_dtype(codes, device, dtype, storage=storage, auto_dtype=auto_dtype)
    else:
        compute = compute_dtype(codes, device, dtype)
    if storage is None:
        storage = _fp8_in(codes)  # an fp8 file stays fp8 in memory
    with torch.device("meta"):
        module = layout.build()
    with open_tensors(header.path) as reader:
        tensors = {k[len(layout.prefix):]: reader.get(k) for k in shapes}  # each tensor read once
        module = _assign(module, tensors, device, compute, storage)
    # Only the transformers' Linear layers upcast per layer: a UNet always loads in the compute dtype.
    stored = {t.dtype for t in module.parameters()} - {compute}
    loaded = LoadedDiffusionModel(path=header.path, family=layout.family, module=module, config=layout.config,
                                  sampling=layout.sampling, storage=next(iter(stored)) if stored else None)
    return _with_sd2_prediction(loaded)


# ---------------------------------------------------------------------------------------------------------------
# Text encoders


@dataclass(frozen=True)
class LoadedTextEncoderFile:
    """One text encoder loaded from its own file."""

    path: Path
    kind: TextEncoderKind
    module: nn.Module
    config: TextEncoderConfig | Any
    tokenizer: T5Tokenizer | None = None
    """The T5 tokenizer for a T5 file (built once with the file and shared with it); None for CLIP."""


def detect_text_encoder_file(shapes: Mapping[str, tuple[int, ...]], *, path: str | os.PathLike[str]
                             ) -> tuple[TextEncoderKind, Any, str]:
    """(kind, config, prefix) of a standalone text-encoder file."""
    path = Path(path)
    prefix = next((p for p in ("", "transformer.", "text_encoders.t5xxl.transformer.")
                   if is_t5(shapes, p)), None)
    if prefix is not None:
        try:
            return "t5xxl", detect_t5_config(shapes, prefix=prefix, path=path), prefix
        except T5ConfigError as exc:
            raise UnknownCheckpoint(path, str(exc)) from None
    try:
        config = detect_text_encoder(shapes, "")
    except TextEncoderDetectionError as exc:
        raise UnknownCheckpoint(path, f"not a CLIP or T5 text encoder: {exc}") from None
    # CLIP-G: bigG's width or depth, or (in narrow test models) a projection on a tower other than CLIP-L's 768;
    # standalone CLIP-L files carry no text_projection.
    projected = config.projection_dim is not None and config.width != CLIP_L_WIDTH
    if config.width == 1280 or config.layers > CLIP_G_MIN_LAYERS or projected:
        return "clip_g", dataclasses.replace(config, activation="gelu", pad_token=0), ""
    return "clip_l", config, ""


Rename = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


def _text_encoder_plan(shapes: Mapping[str, tuple[int, ...]], path: Path
                       ) -> tuple[TextEncoderKind, Any, nn.Module, Rename]:
    """Detect, build on the meta device, and check names and shapes; no data is read."""
    kind, config, prefix = detect_text_encoder_file(shapes, path=path)
    if kind == "t5xxl":
        with torch.device("meta"):
            module: nn.Module = T5Encoder(config)
        strays = sorted(k for k in shapes if not k.startswith(prefix))
        if strays:
            raise CheckpointMismatch(path, "T5 text encoder", missing=[], unexpected=strays, wrong_shapes={})

        def rename(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return t5_state_dict(tensors, prefix)
    else:
        module = build_text_encoder(config, device="meta")

        def rename(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return text_encoder_state_dict(tensors, "", config)
    meta = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    check_shapes(module, {k: tuple(v.shape) for k, v in rename(meta).items()}, path, f"{kind} text encoder")
    return kind, config, module, rename


def check_text_encoder_file(shapes: Mapping[str, tuple[int, ...]], *, path: str | os.PathLike[str]
                            ) -> tuple[TextEncoderKind, Any]:
    """(kind, config) of a text-encoder file after the strict name-and-shape match on the meta device."""
    kind, config, _, _ = _text_encoder_plan(shapes, Path(path))
    return kind, config


def load_text_encoder_file(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
                           dtype: torch.dtype | None = None) -> LoadedTextEncoderFile:
    """Load a CLIP-L / CLIP-G / T5-XXL text-encoder file (clip_l.safetensors, clip_g.safetensors,
    t5xxl_fp16.safetensors, ...). position_ids / logit_scale and T5's duplicate embedding are ignored."""
    device = torch.device(device)
    header = read_header(path)
    kind, config, module, rename = _text_encoder_plan(header.shapes, header.path)
    codes = [info.dtype for info in header.tensors.values()]
    compute = compute_dtype(codes, device, dtype)
    # An fp8 file stays fp8 in memory (its Linear weights), computing in the compute dtype.
    storage = _fp8_in(codes)
    with open_tensors(header.path) as reader:
        module = _assign(module, rename({k: reader.get(k) for k in header.shapes}), device, compute, storage)
    tokenizer = T5Tokenizer() if kind == "t5xxl" else None
    return LoadedTextEncoderFile(header.path, kind, module, config, tokenizer=tokenizer)


# ---------------------------------------------------------------------------------------------------------------
# Single-file checkpoints of the flow families (SD3.5 releases; ComfyUI's all-in-one Flux / SD3 files)


@dataclass(frozen=True)
class LoadedFlowCheckpoint:
    """The parts of a single-file Flux / SD3 checkpoint: the diffusion model, and the VAE and text encoders it
    carries (None / empty when it has none)."""

    path: Path
    model: LoadedDiffusionModel
    vae: AutoencoderKL | None
    text_encoders: Mapping[str, LoadedTextEncoderFile]
    """By slot name (clip_l, clip_g, t5xxl), in the family's order."""


def is_flow_checkpoint(shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Whether a checkpoint's diffusion model (under model.diffusion_model.) is a Flux or SD3 transformer."""
    from diffusion import mmdit

    return is_flux(shapes, DIFFUSION_PREFIX) or mmdit.is_mmdit(shapes, DIFFUSION_PREFIX)


def _under(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}


def load_flow_checkpoint(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
                         dtype: torch.dtype | None = None, auto_dtype: bool = False) -> LoadedFlowCheckpoint:
    """Load a single-file Flux / SD3 checkpoint: ``model.diffusion_model.*``, optionally ``first_stage_model.*``
    (the 16-channel VAE) and ``text_encoders.{clip_l,clip_g,t5xxl}.transformer.*``. Every part is checked by
    name and shape before data is read; a tensor no part owns is an error. auto_dtype: as `load_diffusion_model`
    (the diffusion model only)."""
    device = torch.device(device)
    header = read_header(path)
    shapes = header.shapes
    layout = check_diffusion_model({k: v for k, v in shapes.items() if k.startswith(DIFFUSION_PREFIX)},
                                   path=header.path)
    owned = {k for k in shapes if k.startswith(DIFFUSION_PREFIX)}
    vae_shapes = _under(shapes, VAE_PREFIX)
    vae_module: AutoencoderKL | None = None
    if vae_shapes:
        with torch.device("meta"):
            vae_module = AutoencoderKL(detect_vae_config(vae_shapes, path=header.path, prefix=""))
        check_shapes(vae_module, vae_shapes, header.path, "VAE")
        owned |= {VAE_PREFIX + k for k in vae_shapes}
    plans = []
    for slot in layout.family.text_encoders:
        te_shapes = _under(shapes, slot.prefix)
        if not te_shapes:
            continue
        kind, config, module, rename = _text_encoder_plan(te_shapes, header.path)
        if kind != slot.name:
            raise UnknownCheckpoint(header.path, f"tensors under {slot.prefix} are a {kind} encoder, not {slot.name}")
        plans.append((slot, config, module, rename))
        owned |= {slot.prefix + k for k in te_shapes}
    strays = sorted(set(shapes) - owned)
    if strays:
        raise CheckpointMismatch(header.path, "checkpoint", missing=[], unexpected=strays, wrong_shapes={})

    codes = [header.tensors[k].dtype for k in shapes if k.startswith(DIFFUSION_PREFIX)]
    compute = flow_compute_dtype(codes, device, dtype, auto_dtype=auto_dtype)
    fp8 = _fp8_in(codes)
    text_encoders: dict[str, LoadedTextEncoderFile] = {}
    with open_tensors(header.path) as reader:
        with torch.device("meta"):
            model_module = layout.build()
        model_module = _assign(model_module, {k[len(DIFFUSION_PREFIX):]: reader.get(k) for k in shapes
                                              if k.startswith(DIFFUSION_PREFIX)}, device, compute, fp8)
        if vae_module is not None:
            vae_dtype = compute_dtype([header.tensors[VAE_PREFIX + k].dtype for k in vae_shapes], device, dtype)
            vae_module = _assign(vae_module, {k: reader.get(VAE_PREFIX + k) for k in vae_shapes}, device,
                                 vae_dtype, None)  # type: ignore[assignment]
        for slot, config, module, rename in plans:
            keys = [k for k in shapes if k.startswith(slot.prefix)]
            te_codes = [header.tensors[k].dtype for k in keys]
            module = _assign(module, rename({k[len(slot.prefix):]: reader.get(k) for k in keys}), device,
                             compute_dtype(te_codes, device, dtype), _fp8_in(te_codes))
            text_encoders[slot.name] = LoadedTextEncoderFile(
                header.path, slot.name, module, config, tokenizer=T5Tokenizer() if slot.name == "t5xxl" else None)
    model = LoadedDiffusionModel(path=header.path, family=layout.family, module=model_module, config=layout.config,
                                 sampling=layout.sampling, storage=fp8)
    return LoadedFlowCheckpoint(header.path, model, vae_module, text_encoders)


__all__ = [
    "DiffusionModelLayout",
    "LoadedDiffusionModel",
    "LoadedTextEncoderFile",
    "WEIGHT_STORAGE",
    "check_diffusion_model",
    "cpu_has_native_bf16",
    "detect_diffusion_model",
    "flow_compute_dtype",
    "detect_text_encoder_file",
    "load_diffusion_model",
    "check_text_encoder_file",
    "load_text_encoder_file",
    "LoadedFlowCheckpoint",
    "is_flow_checkpoint",
    "load_flow_checkpoint",
]
