"""Single-file Stable Diffusion checkpoints: detect, load, save.

Detection reads only the safetensors header (names and shapes) and derives everything from it, never from known
widths, so narrow SD1-layout models (the built-in one) are detected by the same rules as the released ones:

- UNet (`model.diffusion_model.`): in/out channels and model_channels from the first and last convs; levels,
  ResBlocks per level and channel_mult from the ResBlock output widths between Downsample blocks; transformer depths
  by counting `transformer_blocks.i`; context_dim from `attn2.to_k`; linear vs 1x1-conv projections from the rank of
  `proj_in.weight`; adm_in_channels from `label_emb.0.0`.
- Family: no label_emb + conv projections -> SD1; no label_emb + linear -> SD2; adm 2816 -> SDXL; 2560 -> refiner.
  The text encoders present must be the family's, and their widths must add up to the UNet's context_dim.
- Heads (shapes cannot tell): SD1 uses 8 heads at every width; SD2/SDXL use 64-wide heads.
- Prediction: SD2 with 4 input channels is v-prediction when std(output_blocks.11.1.transformer_blocks.0.norm1.bias)
  > 0.09 (ComfyUI's rule; reads that one tensor); SDXL is v-prediction when the file has a `v_pred` key.
- VAE (`first_stage_model.`): ch, ch_mult, num_res_blocks, z_channels, embed_dim from conv shapes.

Loading builds every module on the meta device, checks the file's names and shapes against it per module (missing,
unexpected, wrong shape: a typed error naming them and the file) before any data is read, then reads each tensor
once (memory-mapped) and assigns it with `load_state_dict(assign=True)`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn

from diffusion.families import SD1, SD2, SDXL, SDXL_REFINER, ModelFamily, TextEncoderSlot
from diffusion.safetensors_io import (
    CheckpointError,
    CheckpointFormatError,
    TensorReader,
    open_tensors,
    read_header,
    refuse_pickle,
    save_atomic,
)
from diffusion.text_encoders import (
    TextEncoder,
    TextEncoderConfig,
    TextEncoderDetectionError,
    build_text_encoder,
    checkpoint_state_dict,
    detect_text_encoder,
    text_encoder_state_dict,
)
from diffusion.unclip import CLIP_VISION_PREFIX, SD2_UNCLIP, UNCLIP_EMBED_WIDTH
from diffusion.unet import UNetConfig, UNetModel
from diffusion.vae import AutoencoderKL, VAEConfig

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointLayout",
    "CheckpointMismatch",
    "DetectedTextEncoder",
    "LoadedCheckpoint",
    "LoadedTextEncoder",
    "LoadedVae",
    "UnknownCheckpoint",
    "check_layout",
    "check_shapes",
    "detect_checkpoint",
    "detect_layout",
    "detect_unet_config",
    "detect_vae_config",
    "load_checkpoint",
    "load_vae_file",
    "save_sd1_checkpoint",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_ROOTS = ("cond_stage_model.", "conditioner.embedders.")

DDPM_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
})
"""The training schedule LatentDiffusion saved at the top level; the schedule is recomputed from the family."""
IGNORED_KEYS = DDPM_BUFFERS | {"denoiser.sigmas", "v_pred", "logit_scale"}
"""Top-level keys no module owns, skipped on purpose (`v_pred` is read as a marker before)."""
IGNORED_PREFIXES = ("model_ema.", "noise_augmentor.", CLIP_VISION_PREFIX)
"""EMA bookkeeping (decay, num_updates) and, in non-pruned files, a second copy of the UNet weights; an unCLIP
checkpoint's noise-augmentor schedule (recomputed, as ComfyUI does) and image tower (unCLIPCheckpointLoader's)."""
SD2_V_PROBE = "output_blocks.11.1.transformer_blocks.0.norm1.bias"
SD2_V_STD_THRESHOLD = 0.09


# ---------------------------------------------------------------------------------------------------------------
# Errors


class UnknownCheckpoint(CheckpointError):
    """The file's tensors are not a model layout Chisel knows."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.reason = reason
        super().__init__(path, f"unrecognised model layout: {reason}")


class CheckpointMismatch(CheckpointError):
    """A module's tensors in the file do not match the module built from the detected configuration."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        module: str,
        *,
        missing: list[str],
        unexpected: list[str],
        wrong_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.module = module
        self.missing = missing
        self.unexpected = unexpected
        self.wrong_shapes = wrong_shapes
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
        if wrong_shapes:
            shown = [f"{k}: file {list(f)} vs model {list(m)}" for k, (f, m) in list(wrong_shapes.items())[:3]]
            parts.append(f"{len(wrong_shapes)} with the wrong shape ({'; '.join(shown)}"
                         + (", ..." if len(wrong_shapes) > 3 else "") + ")")
        super().__init__(path, f"{module} tensors do not match the model: " + ", ".join(parts))


def _first(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


# ---------------------------------------------------------------------------------------------------------------
# Detection (names and shapes only)

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class DetectedTextEncoder:
    """A text encoder slot of the family and the configuration read from the file."""

    slot: TextEncoderSlot
    config: TextEncoderConfig


@dataclass(frozen=True)
class CheckpointLayout:
    """Everything detection reads from a checkpoint: what to build before any weight is read."""

    family: ModelFamily
    unet_config: UNetConfig
    vae_config: VAEConfig | None
    """None when the file has no `first_stage_model.` tensors."""
    text_encoders: tuple[DetectedTextEncoder, ...]
    """Empty when the file has no text encoder tensors."""


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    """Sorted distinct integers captured by `pattern` (a regex with one group) over the keys."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in shapes if (m := regex.match(k))})


def _count(shapes: Shapes, prefix: str, path: Path, what: str) -> int:
    """Number of consecutive indices `prefix{i}.` present; they must be 0..n-1."""
    found = _indices(shapes, re.escape(prefix) + r"(\d+)\.")
    if found != list(range(len(found))):
        raise UnknownCheckpoint(path, f"{what} are not numbered 0..n-1: {found[:10]}")
    return len(found)


def _require(shapes: Shapes, key: str, path: Path, what: str) -> tuple[int, ...]:
    shape = shapes.get(key)
    if shape is None:
        raise UnknownCheckpoint(path, f"{what}: tensor {key} is missing")
    return shape


def _transformer_depth(shapes: Shapes, block: str) -> int:
    """Transformer blocks in the SpatialTransformer at `block` (e.g. 'P.input_blocks.1.1'); 0 when there is none."""
    depth = 0
    while f"{block}.transformer_blocks.{depth}.norm1.weight" in shapes:
        depth += 1
    return depth


def detect_unet_config(shapes: Shapes, *, path: str | os.PathLike[str], prefix: str = UNET_PREFIX) -> UNetConfig:
    """Read the UNet configuration from tensor shapes under `prefix` (see the module docstring for the rules)."""
    path = Path(path)
    p = prefix
    conv_in = shapes.get(p + "input_blocks.0.0.weight")
    if conv_in is None or len(conv_in) != 4:
        raise UnknownCheckpoint(path, _describe_unknown(shapes))
    model_channels, in_channels = conv_in[0], conv_in[1]
    out_channels = _require(shapes, p + "out.2.weight", path, "UNet output conv")[0]
    label = shapes.get(p + "label_emb.0.0.weight")
    adm_in_channels = label[1] if label is not None else None

    # Input blocks: ResBlocks (+ SpatialTransformer) grouped into levels by the Downsample blocks between them.
    n_input = _count(shapes, p + "input_blocks.", path, "UNet input blocks")
    levels: list[list[tuple[int, int]]] = [[]]  # per level: (ResBlock width, transformer depth)
    for n in range(1, n_input):
        block = f"{p}input_blocks.{n}"
        if f"{block}.0.op.weight" in shapes:
            levels.append([])
            continue
        width = _require(shapes, f"{block}.0.out_layers.3.weight", path, f"UNet input block {n}")[0]
        levels[-1].append((width, _transformer_depth(shapes, f"{block}.1")))
    num_res_blocks = len(levels[0])
    if num_res_blocks == 0 or any(len(level) != num_res_blocks for level in levels):
        raise UnknownCheckpoint(path, f"UNet levels have different ResBlock counts: {[len(lv) for lv in levels]}")
    channel_mult = []
    transformer_depth = []
    for i, level in enumerate(levels):
        widths = {w for w, _ in level}
        depths = {d for _, d in level}
        if len(widths) != 1 or len(depths) != 1 or next(iter(widths)) % model_channels:
            raise UnknownCheckpoint(path, f"UNet level {i} is irregular: widths {sorted(widths)}, depths {sorted(depths)}")
        channel_mult.append(next(iter(widths)) // model_channels)
        transformer_depth.append(next(iter(depths)))

    middle_depth = _transformer_depth(shapes, f"{p}middle_block.1")
    if middle_depth == 0 and f"{p}middle_block.1.in_layers.0.weight" not in shapes:
        raise UnknownCheckpoint(path, "UNet middle block is neither ResBlock-Transformer-ResBlock nor two ResBlocks")

    n_output = _count(shapes, p + "output_blocks.", path, "UNet output blocks")
    per_level = num_res_blocks + 1
    if n_output != len(levels) * per_level:
        raise UnknownCheckpoint(
            path, f"UNet has {n_output} output blocks; {len(levels)} levels x {per_level} ResBlocks expected"
        )
    transformer_depth_output = []
    for j in range(len(levels)):
        depths = {_transformer_depth(shapes, f"{p}output_blocks.{j * per_level + i}.1") for i in range(per_level)}
        if len(depths) != 1:
            raise UnknownCheckpoint(path, f"UNet output level {j} has irregular transformer depths {sorted(depths)}")
        transformer_depth_output.append(depths.pop())

    to_k = next((s for k, s in shapes.items() if k.startswith(p) and k.endswith(".attn2.to_k.weight")), None)
    proj_in = next((s for k, s in shapes.items() if k.startswith(p) and k.endswith(".proj_in.weight")), None)
    if to_k is None or proj_in is None:
        raise UnknownCheckpoint(path, "UNet has no cross-attention (attn2.to_k / proj_in)")
    use_linear = len(proj_in) == 2
    # Heads cannot be read from shapes. SD1 (conv projections, no adm) uses 8 heads at every width;
    # SD2 and SDXL use 64-channel heads.
    sd1_heads = not use_linear and adm_in_channels is None
    try:
        return UNetConfig(
            in_channels=in_channels,
            out_channels=out_channels,
            model_channels=model_channels,
            channel_mult=tuple(channel_mult),
            num_res_blocks=num_res_blocks,
            transformer_depth=tuple(transformer_depth),
            transformer_depth_middle=middle_depth,
            transformer_depth_output=tuple(transformer_depth_output),
            context_dim=to_k[1],
            num_heads=8 if sd1_heads else None,
            num_head_channels=None if sd1_heads else 64,
            use_linear_in_transformer=use_linear,
            adm_in_channels=adm_in_channels,
        )
    except ValueError as exc:
        raise UnknownCheckpoint(path, f"UNet configuration read from the shapes is invalid: {exc}") from None


def detect_vae_config(shapes: Shapes, *, path: str | os.PathLike[str], prefix: str = VAE_PREFIX) -> VAEConfig:
    """Read the autoencoder configuration from tensor shapes under `prefix` (ldm layout)."""
    path = Path(path)
    p = prefix
    ch, in_channels = _require(shapes, p + "encoder.conv_in.weight", path, "VAE encoder")[:2]
    levels = _count(shapes, p + "encoder.down.", path, "VAE encoder levels")
    if levels == 0:
        raise UnknownCheckpoint(path, "VAE encoder has no levels (encoder.down.N)")
    num_res_blocks = _count(shapes, p + "encoder.down.0.block.", path, "VAE encoder blocks")
    widths = [_require(shapes, f"{p}encoder.down.{i}.block.0.conv2.weight", path, "VAE encoder")[0]
              for i in range(levels)]
    if any(w % ch for w in widths):
        raise UnknownCheckpoint(path, f"VAE level widths {widths} are not multiples of ch {ch}")
    try:
        return VAEConfig(
            in_channels=in_channels,
            out_channels=_require(shapes, p + "decoder.conv_out.weight", path, "VAE decoder")[0],
            ch=ch,
            ch_mult=tuple(w // ch for w in widths),
            num_res_blocks=num_res_blocks,
            z_channels=_require(shapes, p + "decoder.conv_in.weight", path, "VAE decoder")[1],
            embed_dim=(shapes[p + "post_quant_conv.weight"][1] if p + "post_quant_conv.weight" in shapes
                       else _require(shapes, p + "decoder.conv_in.weight", path, "VAE decoder")[1]),
            use_quant_conv=p + "post_quant_conv.weight" in shapes,  # the 16-channel Flux / SD3 VAE has none
        )
    except ValueError as exc:
        raise UnknownCheckpoint(path, f"VAE configuration read from the shapes is invalid: {exc}") from None


def _family_of(unet: UNetConfig, path: Path) -> ModelFamily:
    if unet.adm_in_channels is None:
        return SD2 if unet.use_linear_in_transformer else SD1
    if unet.adm_in_channels == 2816 and unet.use_linear_in_transformer:
        return SDXL
    if unet.adm_in_channels == 2560 and unet.use_linear_in_transformer:
        return SDXL_REFINER
    if unet.adm_in_channels in UNCLIP_EMBED_WIDTH and unet.use_linear_in_transformer:
        return SD2_UNCLIP  # SD 2.1 unCLIP (l: 1536, h: 2048): the image-embedding adm (diffusion/unclip.py)
    raise UnknownCheckpoint(
        path, f"UNet with adm_in_channels={unet.adm_in_channels} (unCLIP or another variant) is not supported"
    )


def _has_prefix(shapes: Shapes, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in shapes)


def _detect_text_encoders(
    shapes: Shapes, family: ModelFamily, unet: UNetConfig, path: Path
) -> tuple[DetectedTextEncoder, ...]:
    present = [slot for slot in family.text_encoders if _has_prefix(shapes, slot.prefix)]
    strays = sorted({
        k for k in shapes
        if k.startswith(TEXT_ENCODER_ROOTS) and not any(k.startswith(s.prefix) for s in family.text_encoders)
    })
    if strays:
        expected = ", ".join(s.prefix for s in family.text_encoders)
        raise UnknownCheckpoint(
            path, f"the UNet is {family.name} but text-encoder tensors are not under {expected} ({_first(strays, 3)})"
        )
    if not present:
        return ()
    if len(present) != len(family.text_encoders):
        missing = [s.prefix for s in family.text_encoders if s not in present]
        raise UnknownCheckpoint(path, f"{family.name} text encoder(s) missing: {', '.join(missing)}")
    detected = []
    for slot in present:
        try:
            detected.append(DetectedTextEncoder(slot, detect_text_encoder(shapes, slot.prefix)))
        except TextEncoderDetectionError as exc:
            raise UnknownCheckpoint(path, f"text encoder {slot.name}: {exc}") from None
    width = sum(d.config.width for d in detected)
    if width != unet.context_dim:
        raise UnknownCheckpoint(
            path, f"text encoder width {width} does not match the UNet's cross-attention context {unet.context_dim}"
        )
    return tuple(detected)


def detect_layout(shapes: Shapes, *, path: str | os.PathLike[str]) -> CheckpointLayout:
    """Family and configs from names and shapes alone (SD2 prediction is left "eps": see `detect_checkpoint`)."""
    path = Path(path)
    if "edm_mean" in shapes or "edm_std" in shapes:
        raise UnknownCheckpoint(path, "EDM-parameterised SDXL (Playground 2.5) is not supported")
    unet = detect_unet_config(shapes, path=path)
    family = _family_of(unet, path)
    if family.adm == "sdxl" and "v_pred" in shapes:
        family = family.with_prediction("v")
    vae = detect_vae_config(shapes, path=path) if _has_prefix(shapes, VAE_PREFIX) else None
    if vae is not None and vae.embed_dim != unet.out_channels:
        raise UnknownCheckpoint(
            path, f"VAE latent channels {vae.embed_dim} differ from the UNet's {unet.out_channels} output channels"
        )
    return CheckpointLayout(family, unet, vae, _detect_text_encoders(shapes, family, unet, path))


def _sd2_probe_key(unet: UNetConfig) -> str:
    """The norm1.bias of ComfyUI's probe; for other depths, the last output block with a transformer."""
    per_level = unet.num_res_blocks + 1
    last = len(unet.channel_mult) * per_level - 1
    for index in range(last, -1, -1):
        if unet.transformer_depth_output[index // per_level] > 0:
            return f"output_blocks.{index}.1.transformer_blocks.0.norm1.bias"
    return SD2_V_PROBE


def _with_probed_prediction(layout: CheckpointLayout, reader: TensorReader) -> CheckpointLayout:
    """SD2 eps or v: ComfyUI's rule, std of one norm bias > 0.09 (v-models were fine-tuned away from eps)."""
    if layout.family.name != "sd2" or layout.unet_config.in_channels != 4:
        return layout
    bias = reader.get(UNET_PREFIX + _sd2_probe_key(layout.unet_config)).to(torch.float32)
    if bias.std().item() > SD2_V_STD_THRESHOLD:
        return CheckpointLayout(layout.family.with_prediction("v"), layout.unet_config, layout.vae_config,
                                layout.text_encoders)
    return layout


def detect_checkpoint(path: str | os.PathLike[str]) -> CheckpointLayout:
    """Detect a .safetensors checkpoint: its header, plus one tensor for SD2's eps/v decision."""
    header = read_header(path)
    layout = detect_layout(header.shapes, path=header.path)
    with open_tensors(header.path) as reader:
        return _with_probed_prediction(layout, reader)


def _describe_unknown(shapes: Shapes) -> str:
    keys = list(shapes)
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for k in keys):
        return "a Flux diffusion model without a checkpoint's parts: load it with UNETLoader (Load Diffusion Model)"
    if any(".joint_blocks." in k or k.startswith("joint_blocks.") for k in keys):
        return "an SD3 MMDiT without a checkpoint's prefix: load it with UNETLoader (Load Diffusion Model)"
    if any(k.startswith(("down_blocks.", "conv_in.weight", "time_embedding.")) for k in keys):
        return "a diffusers-layout UNet (down_blocks/time_embedding); single-file checkpoints are expected"
    if any(k.startswith("lora_") or ".lora_" in k for k in keys):
        return "a LoRA file, not a checkpoint (load it with a LoRA loader)"
    if any(k.startswith(("encoder.", "decoder.", VAE_PREFIX)) for k in keys) and not _has_prefix(shapes, UNET_PREFIX):
        return "a VAE file without a UNet (load it with a VAE loader)"
    sample = ", ".join(keys[:3]) if keys else "no tensors"
    return f"no UNet under {UNET_PREFIX} (expected {UNET_PREFIX}input_blocks.0.0.weight; file has {sample})"


# ---------------------------------------------------------------------------------------------------------------
# Loading

Rename = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class LoadedTextEncoder:
    """A loaded text encoder with its slot (prefix, default layer) and configuration."""

    slot: TextEncoderSlot
    config: TextEncoderConfig
    module: TextEncoder


@dataclass(frozen=True)
class LoadedCheckpoint:
    """The modules of one checkpoint file, in inference mode (eval, no grad)."""

    path: Path
    family: ModelFamily
    unet: UNetModel
    unet_config: UNetConfig
    vae: AutoencoderKL | None
    vae_config: VAEConfig | None
    text_encoders: Mapping[str, LoadedTextEncoder]
    """By slot name ("clip_l", "clip_h", "clip_g"), in the family's order; read-only."""


@dataclass(frozen=True)
class LoadedVae:
    """A VAE loaded from its own file (or taken out of a checkpoint)."""

    path: Path
    vae: AutoencoderKL
    config: VAEConfig


def _module_dtype(dtypes: list[str], device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype one module runs in: `dtype` if given; fp32 on the CPU; else the file's (most common) float dtype."""
    if dtype is not None:
        return dtype
    if device.type == "cpu":
        return torch.float32
    floats = [d for d in dtypes if d in ("F32", "F16", "BF16")]
    if not floats:
        return torch.float32
    code = max(set(floats), key=floats.count)
    return {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[code]


def _strip(prefix: str) -> Rename:
    def rename(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items()}

    return rename


def check_shapes(module: nn.Module, shapes: Shapes, path: Path, name: str) -> None:
    """Strict name-and-shape match of (renamed) file tensor shapes against a module's state dict.

    Raises:
        CheckpointMismatch: naming what is missing, unexpected or wrongly shaped.
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(expected.keys() - shapes.keys())
    unexpected = sorted(shapes.keys() - expected.keys())
    wrong = {k: (tuple(shapes[k]), expected[k]) for k in sorted(expected.keys() & shapes.keys())
             if tuple(shapes[k]) != expected[k]}
    if missing or unexpected or wrong:
        raise CheckpointMismatch(path, name, missing=missing, unexpected=unexpected, wrong_shapes=wrong)


@dataclass(frozen=True)
class _Part:
    """One module of a file: the file keys it owns, how to rename them, and the module (on meta)."""

    name: str
    keys: tuple[str, ...]
    rename: Rename
    module: nn.Module


def _plan_check(part: _Part, header_shapes: Shapes, path: Path) -> None:
    """Compare names and shapes through the rename on meta tensors, before any data is read."""
    meta = {k: torch.empty(header_shapes[k], device="meta") for k in part.keys}
    check_shapes(part.module, {k: tuple(v.shape) for k, v in part.rename(meta).items()}, path, part.name)


def _read_into(part: _Part, reader: TensorReader, device: torch.device, dtype: torch.dtype) -> nn.Module:
    raw = {k: reader.get(k) for k in part.keys}  # each tensor read once, memory-mapped
    tensors = {
        k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device=device))
        for k, v in part.rename(raw).items()
    }
    part.module.load_state_dict(tensors, strict=True, assign=True)
    return part.module.eval().requires_grad_(False)


def _plan(shapes: Shapes, path: Path) -> tuple[CheckpointLayout, list[_Part]]:
    """Detect the layout, build every module on the meta device and check names and shapes; no data is read."""
    layout = detect_layout(shapes, path=path)
    owned: set[str] = set()

    def keys_under(prefix: str) -> tuple[str, ...]:
        keys = tuple(k for k in shapes if k.startswith(prefix))
        owned.update(keys)
        return keys

    with torch.device("meta"):
        parts = [_Part("UNet", keys_under(UNET_PREFIX), _strip(UNET_PREFIX), UNetModel(layout.unet_config))]
        if layout.vae_config is not None:
            parts.append(_Part("VAE", keys_under(VAE_PREFIX), _strip(VAE_PREFIX), AutoencoderKL(layout.vae_config)))
    for te in layout.text_encoders:
        def rename(tensors: Mapping[str, torch.Tensor], te: DetectedTextEncoder = te) -> dict[str, torch.Tensor]:
            return text_encoder_state_dict(tensors, te.slot.prefix, te.config)

        module = build_text_encoder(te.config, device="meta")
        parts.append(_Part(f"text encoder {te.slot.name}", keys_under(te.slot.prefix), rename, module))

    strays = sorted(
        k for k in shapes
        if k not in owned and k not in IGNORED_KEYS and not k.startswith(IGNORED_PREFIXES)
    )
    if strays:
        raise CheckpointMismatch(path, "checkpoint", missing=[], unexpected=strays, wrong_shapes={})
    for part in parts:
        _plan_check(part, shapes, path)
    return layout, parts


def check_layout(shapes: Shapes, *, path: str | os.PathLike[str]) -> CheckpointLayout:
    """Everything `load_checkpoint` checks before reading data, from names and shapes alone: detection, then a
    strict name-and-shape match of every module built on the meta device, and no stray top-level tensors.

    Raises:
        UnknownCheckpoint, CheckpointMismatch: as `load_checkpoint`.
    """
    layout, _ = _plan(shapes, Path(path))
    return layout


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> LoadedCheckpoint:
    """Load a single-file .safetensors SD1.x / SD2.x / SDXL checkpoint.

    Args:
        path: the .safetensors file (pickle formats are refused).
        device: where the modules live.
        dtype: the dtype of every module; default fp32 on the CPU, the file's dtype on an accelerator.

    Raises:
        CheckpointFormatError: not a readable safetensors file.
        UnknownCheckpoint: no recognisable layout.
        CheckpointMismatch: a module's tensors are missing, unexpected or wrongly shaped; or stray top-level tensors.
    """
    device = torch.device(device)
    header = read_header(path)
    layout, parts = _plan(header.shapes, header.path)

    loaded: dict[str, nn.Module] = {}
    with open_tensors(header.path) as reader:
        layout = _with_probed_prediction(layout, reader)
        for part in parts:
            module_dtype = _module_dtype([header.tensors[k].dtype for k in part.keys], device, dtype)
            loaded[part.name] = _read_into(part, reader, device, module_dtype)

    text_encoders = {
        te.slot.name: LoadedTextEncoder(te.slot, te.config, loaded[f"text encoder {te.slot.name}"])  # type: ignore[arg-type]
        for te in layout.text_encoders
    }
    return LoadedCheckpoint(
        path=header.path,
        family=layout.family,
        unet=loaded["UNet"],  # type: ignore[arg-type]
        unet_config=layout.unet_config,
        vae=loaded.get("VAE"),  # type: ignore[arg-type]
        vae_config=layout.vae_config,
        text_encoders=MappingProxyType(text_encoders),
    )


# ---------------------------------------------------------------------------------------------------------------
# Standalone VAE files

_DIFFUSERS_VAE_RENAMES = (
    (r"(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
    (r"(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
    (r"(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
    (r"(encoder|decoder)\.mid_block\.attentions\.0\.group_norm\.", r"\1.mid.attn_1.norm."),
    (r"(encoder|decoder)\.mid_block\.attentions\.0\.(?:to_q|query)\.", r"\1.mid.attn_1.q."),
    (r"(encoder|decoder)\.mid_block\.attentions\.0\.(?:to_k|key)\.", r"\1.mid.attn_1.k."),
    (r"(encoder|decoder)\.mid_block\.attentions\.0\.(?:to_v|value)\.", r"\1.mid.attn_1.v."),
    (r"(encoder|decoder)\.mid_block\.attentions\.0\.(?:to_out\.0|proj_attn)\.", r"\1.mid.attn_1.proj_out."),
    (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
    (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
)
_DIFFUSERS_UP = re.compile(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.")


def _diffusers_vae_rename(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> ldm keys. diffusers numbers decoder levels deepest first; ldm by resolution."""
    ups = {int(m.group(1)) for k in tensors if (m := _DIFFUSERS_UP.match(k))}
    levels = max(ups) + 1 if ups else 0
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        name = key.replace(".conv_shortcut.", ".nin_shortcut.")
        for pattern, target in _DIFFUSERS_VAE_RENAMES:
            name = re.sub("^" + pattern, target, name)
        if m := _DIFFUSERS_UP.match(name):
            level = levels - 1 - int(m.group(1))
            inner = f"block.{m.group(3)}" if m.group(3) is not None else "upsample"
            name = f"decoder.up.{level}.{inner}." + name[m.end():]
        if ".mid.attn_1." in name and name.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor.reshape(*tensor.shape, 1, 1)  # Linear [C, C] -> 1x1 conv [C, C, 1, 1] (a view)
        out[name] = tensor
    return out


def load_vae_file(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> LoadedVae:
    """Load a VAE from a .safetensors file: `first_stage_model.` keys (e.g. a full checkpoint), bare ldm keys
    (`encoder.down.0...`, the usual standalone VAE files) or the diffusers layout (`encoder.down_blocks.0...`).

    Training leftovers (`loss.*`, `model_ema.*`) are ignored; any other tensor is an error.
    """
    device = torch.device(device)
    header = read_header(path)
    path = header.path
    shapes = header.shapes
    ignored = ("loss.", "model_ema.")
    if _has_prefix(shapes, VAE_PREFIX):
        keys = tuple(k for k in shapes if k.startswith(VAE_PREFIX))  # the rest of a full checkpoint is not ours
        rename: Rename = _strip(VAE_PREFIX)
    else:
        keys = tuple(k for k in shapes if not k.startswith(ignored) and k not in IGNORED_KEYS)
        diffusers = "encoder.down_blocks.0.resnets.0.norm1.weight" in shapes
        rename = _diffusers_vae_rename if diffusers else _strip("")
        if not diffusers and "encoder.down.0.block.0.norm1.weight" not in shapes:
            raise UnknownCheckpoint(path, "not a VAE: no encoder.down.0.block.0 (ldm) or encoder.down_blocks.0 "
                                          "(diffusers) tensors")
    ldm_shapes = {k: tuple(v.shape) for k, v in
                  rename({k: torch.empty(shapes[k], device="meta") for k in keys}).items()}
    config = detect_vae_config(ldm_shapes, path=path, prefix="")
    with torch.device("meta"):
        part = _Part("VAE", keys, rename, AutoencoderKL(config))
    _plan_check(part, shapes, path)
    with open_tensors(path) as reader:
        module_dtype = _module_dtype([header.tensors[k].dtype for k in keys], device, dtype)
        vae = _read_into(part, reader, device, module_dtype)
    return LoadedVae(path, vae, config)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Saving


def save_sd1_checkpoint(
    path: str | os.PathLike[str],
    *,
    unet: UNetModel,
    vae: AutoencoderKL,
    text_encoder: TextEncoder,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write an SD1-layout single-file checkpoint (`model.diffusion_model.`, `first_stage_model.`,
    `cond_stage_model.transformer.text_model.`) atomically, in the modules' dtype.

    Refuses models that detection would not read back identically (e.g. a head count other than SD1's 8, linear
    transformer projections, an adm input, or a text encoder whose width differs from the UNet's context).
    """
    path = Path(path)
    refuse_pickle(path)
    te_slot = SD1.text_encoders[0]
    tensors: dict[str, torch.Tensor] = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    tensors.update({VAE_PREFIX + k: v for k, v in vae.state_dict().items()})
    tensors.update(checkpoint_state_dict(text_encoder, te_slot.prefix, text_encoder.config))

    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    try:
        layout = detect_layout(shapes, path=path)
    except UnknownCheckpoint as exc:
        raise ValueError(f"{path.name}: these modules do not form an SD1-layout checkpoint: {exc.reason}") from None
    differences = []
    if layout.family.name != "sd1":
        differences.append(f"family would be detected as {layout.family.name}")
    if layout.unet_config != unet.config:
        differences.append(f"UNet would be detected as {layout.unet_config}, module is {unet.config}")
    if layout.vae_config != vae.config:
        differences.append(f"VAE would be detected as {layout.vae_config}, module is {vae.config}")
    detected_te = layout.text_encoders[0].config if layout.text_encoders else None
    if detected_te != text_encoder.config:
        differences.append(f"text encoder would be detected as {detected_te}, module is {text_encoder.config}")
    if differences:
        raise ValueError(f"{path.name}: the file would not load back as these modules: " + "; ".join(differences))
    save_atomic(path, tensors, metadata)
