"""CLIP vision towers (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"),
as ComfyUI loads them from models/clip_vision and from unCLIP checkpoints (comfy/clip_vision.py, clip_model.py).

Module names are transformers' CLIPVisionModelWithProjection names (`vision_model.embeddings.*`,
`vision_model.encoder.layers.N.self_attn.q_proj`, `vision_model.post_layernorm`, `visual_projection`), so an HF-layout
file loads with strict name and shape checks; OpenCLIP's layout (`visual.conv1`, `transformer.resblocks.N.attn.
in_proj_weight`, `proj`, e.g. an unCLIP checkpoint's `embedder.model.visual.`) is converted on load.

Shapes give everything but the heads and the activation: heads are 16 (every ComfyUI vision config: ViT-L, H, bigG);
the activation is OpenAI's quick_gelu below 30 layers (ViT-L and smaller) and GELU for the 32/48-layer OpenCLIP
ViT-H/bigG, ComfyUI's choice by layer count. ComfyUI's `encode_image`:

    pixels: bicubic antialiased resize (shorter side to image_size, centre crop; or a plain resize for crop "none"),
            quantized to 1/255, normalized with CLIP's mean/std
    last_hidden_state  the last layer's output (no final norm)         [B, 1 + patches, W]
    penultimate_hidden_states  the second-to-last layer's output       [B, 1 + patches, W]
    image_embeds       visual_projection(post_layernorm(class token))  [B, projection]
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.safetensors_io import CheckpointError, open_tensors, read_header

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VISION_HEADS = 16
GELU_FROM_LAYERS = 30
LAYER_NORM_EPS = 1e-5
HF_PREFIXES = ("vision_model.", "visual_projection.")
IGNORED = re.compile(r"(.*\.)?(position_ids|logit_scale)$|text_model\.|text_projection\.")
"""Tensors of a full CLIP file that the vision tower does not use (its text half, ids, the temperature)."""


class ClipVisionError(CheckpointError):
    """A file that is not a CLIP vision tower Chisel can build, or whose tensors do not fit one."""


@dataclass(frozen=True)
class ClipVisionConfig:
    width: int
    layers: int
    intermediate: int
    patch_size: int
    image_size: int
    projection_dim: int | None
    heads: int = VISION_HEADS
    activation: Literal["quick_gelu", "gelu"] = "quick_gelu"
    channels: int = 3

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"CLIP vision width {self.width} is not divisible by {self.heads} heads")

    @property
    def positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


def _quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: ClipVisionConfig) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(cfg.width))
        self.patch_embedding = nn.Conv2d(cfg.channels, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.position_embedding = nn.Embedding(cfg.positions, cfg.width)

    def forward(self, pixels: Tensor) -> Tensor:
        patches = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight.to(patches.dtype)  # (B, 1+P, W)


class VisionAttention(nn.Module):
    def __init__(self, cfg: ClipVisionConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.q_proj, self.k_proj = nn.Linear(cfg.width, cfg.width), nn.Linear(cfg.width, cfg.width)
        self.v_proj, self.out_proj = nn.Linear(cfg.width, cfg.width), nn.Linear(cfg.width, cfg.width)

    def forward(self, x: Tensor) -> Tensor:
        b, t, w = x.shape
        q, k, v = (p(x).view(b, t, self.heads, w // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)  # every token sees every token
        return self.out_proj(out.transpose(1, 2).reshape(b, t, w))


class VisionMlp(nn.Module):
    def __init__(self, cfg: ClipVisionConfig) -> None:
        super().__init__()
        self.activation = _quick_gelu if cfg.activation == "quick_gelu" else F.gelu
        self.fc1, self.fc2 = nn.Linear(cfg.width, cfg.intermediate), nn.Linear(cfg.intermediate, cfg.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class VisionLayer(nn.Module):
    def __init__(self, cfg: ClipVisionConfig) -> None:
        super().__init__()
        self.self_attn = VisionAttention(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)
        self.mlp = VisionMlp(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(nn.Module):
    def __init__(self, cfg: ClipVisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(cfg) for _ in range(cfg.layers))


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ClipVisionConfig) -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)  # (sic: transformers' name)
        self.encoder = VisionEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS)


@dataclass(frozen=True, eq=False)
class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: what CLIPVisionEncode gives (ComfyUI's Output keys)."""

    last_hidden_state: Tensor
    penultimate_hidden_states: Tensor
    image_embeds: Tensor

    def __getitem__(self, key: str) -> Tensor:  # ComfyUI code reads it as a dict
        return getattr(self, key)


class ClipVisionModel(nn.Module):
    """transformers' CLIPVisionModelWithProjection layout; `forward(pixels)` -> ClipVisionOutput."""

    def __init__(self, cfg: ClipVisionConfig) -> None:
        super().__init__()
        self.config = cfg
        self.vision_model = VisionTransformer(cfg)
        self.visual_projection = (nn.Linear(cfg.width, cfg.projection_dim, bias=False)
                                  if cfg.projection_dim is not None else None)

    def forward(self, pixels: Tensor) -> ClipVisionOutput:
        vm = self.vision_model
        x = vm.pre_layrnorm(vm.embeddings(pixels))
        penultimate = x
        for index, layer in enumerate(vm.encoder.layers):
            x = layer(x)
            if index == len(vm.encoder.layers) - 2:
                penultimate = x
        pooled = vm.post_layernorm(x[:, 0, :])
        embeds = self.visual_projection(pooled) if self.visual_projection is not None else pooled
        return ClipVisionOutput(last_hidden_state=x, penultimate_hidden_states=penultimate, image_embeds=embeds)


def preprocess(images: Tensor, *, size: int, crop: bool) -> Tensor:
    """IMAGE [B, H, W, C] in [0, 1] -> normalized pixels [B, 3, size, size] (ComfyUI's clip_preprocess)."""
    image = images[..., :3].movedim(-1, 1).float()
    if image.shape[-2:] != (size, size):
        if crop:
            scale = size / min(image.shape[2], image.shape[3])
            target = (round(scale * image.shape[2]), round(scale * image.shape[3]))
        else:
            target = (size, size)
        image = F.interpolate(image, size=target, mode="bicubic", antialias=True)
        top, left = (image.shape[2] - size) // 2, (image.shape[3] - size) // 2
        image = image[:, :, top:top + size, left:left + size]
    image = torch.clip(255.0 * image, 0, 255).round() / 255.0
    mean = torch.tensor(CLIP_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=image.device).view(3, 1, 1)
    return (image - mean) / std


@dataclass(frozen=True, eq=False)
class ClipVision:
    """CLIP_VISION: a loaded vision tower (shared weights, like the other handles)."""

    module: ClipVisionModel
    name: str = ""
    owner: Any = None

    def encode(self, images: Tensor, *, crop: bool = True) -> ClipVisionOutput:
        """ComfyUI's encode_image; runs on the module's device, returns float32 on the images' device."""
        weight = self.module.vision_model.pre_layrnorm.weight
        pixels = preprocess(images.to(weight.device), size=self.module.config.image_size, crop=crop)
        out = self.module(pixels.to(weight.dtype))
        back = images.device
        return ClipVisionOutput(*(t.float().to(back) for t in (out.last_hidden_state, out.penultimate_hidden_states,
                                                                out.image_embeds)))


# ---------------------------------------------------------------------------------------------------------------
# Detection and loading

_OPEN_CLIP_RENAMES = (
    (r"class_embedding", "vision_model.embeddings.class_embedding"),
    (r"conv1\.weight", "vision_model.embeddings.patch_embedding.weight"),
    (r"positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    (r"ln_pre\.(weight|bias)", r"vision_model.pre_layrnorm.\1"),
    (r"ln_post\.(weight|bias)", r"vision_model.post_layernorm.\1"),
    (r"transformer\.resblocks\.(\d+)\.ln_1\.(weight|bias)", r"vision_model.encoder.layers.\1.layer_norm1.\2"),
    (r"transformer\.resblocks\.(\d+)\.ln_2\.(weight|bias)", r"vision_model.encoder.layers.\1.layer_norm2.\2"),
    (r"transformer\.resblocks\.(\d+)\.attn\.out_proj\.(weight|bias)",
     r"vision_model.encoder.layers.\1.self_attn.out_proj.\2"),
    (r"transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"vision_model.encoder.layers.\1.mlp.fc1.\2"),
    (r"transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"vision_model.encoder.layers.\1.mlp.fc2.\2"),
)
_IN_PROJ = re.compile(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)")


def hf_names(tensors: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """The vision tower's tensors under `prefix` in transformers' names (OpenCLIP's layout converted as ComfyUI's
    convert_to_transformers does: q/k/v split from in_proj, `proj` transposed into visual_projection)."""
    own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if "transformer.resblocks.0.attn.in_proj_weight" not in own:
        return own
    out: dict[str, Tensor] = {}
    for key, tensor in own.items():
        if m := _IN_PROJ.fullmatch(key):
            for name, part in zip("qkv", tensor.chunk(3, dim=0)):
                out[f"vision_model.encoder.layers.{m.group(1)}.self_attn.{name}_proj.{m.group(2)}"] = part
        elif key == "proj":
            out["visual_projection.weight"] = tensor.t()
        else:
            for pattern, target in _OPEN_CLIP_RENAMES:
                if re.fullmatch(pattern, key):
                    key = re.sub(pattern, target, key)
                    break
            out[key] = tensor
    return out


def detect_config(shapes: Mapping[str, tuple[int, ...]], path: str | os.PathLike[str] = "") -> ClipVisionConfig:
    """The configuration from HF-named shapes (see the module docstring for heads and activation)."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise ClipVisionError(path, f"not a CLIP vision model: {key} is missing")
        return tuple(shapes[key])

    width, _, patch, _ = shape("vision_model.embeddings.patch_embedding.weight")
    positions = shape("vision_model.embeddings.position_embedding.weight")[0]
    layers = len({int(m.group(1)) for k in shapes if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))})
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1 or layers < 2:
        raise ClipVisionError(path, f"unsupported CLIP vision layout ({positions} positions, {layers} layers)")
    projection = shapes.get("visual_projection.weight")
    try:
        return ClipVisionConfig(
            width=width, layers=layers, intermediate=shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0],
            patch_size=patch, image_size=grid * patch, projection_dim=projection[0] if projection else None,
            activation="gelu" if layers >= GELU_FROM_LAYERS else "quick_gelu")
    except ValueError as exc:
        raise ClipVisionError(path, str(exc)) from None


def build_clip_vision(tensors: Mapping[str, Tensor], path: str | os.PathLike[str], *,
                      device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> ClipVisionModel:
    """A ClipVisionModel from HF-named tensors, strictly checked (unused text-tower tensors are dropped)."""
    used = {k: v for k, v in tensors.items() if not IGNORED.match(k)}
    strays = sorted(k for k in used if not k.startswith(HF_PREFIXES))
    if strays:
        raise ClipVisionError(path, f"tensors that are not a CLIP vision tower: {', '.join(strays[:5])}")
    config = detect_config({k: tuple(v.shape) for k, v in used.items()}, path)
    with torch.device("meta"):
        module = ClipVisionModel(config)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(expected.keys() - used.keys())
    wrong = sorted(k for k in expected.keys() & used.keys() if tuple(used[k].shape) != expected[k])
    unexpected = sorted(used.keys() - expected.keys())
    if missing or wrong or unexpected:
        raise ClipVisionError(path, f"CLIP vision tensors do not match the model: missing {missing[:3]}, wrong shape "
                                    f"{wrong[:3]}, unexpected {unexpected[:3]}")
    if dtype is None:
        dtype = torch.float32 if torch.device(device).type == "cpu" else next(iter(used.values())).dtype
    state = {k: v.to(device=device, dtype=dtype) for k, v in used.items()}
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval().requires_grad_(False)


@dataclass(frozen=True)
class LoadedClipVision:
    path: Path
    module: ClipVisionModel


def load_clip_vision_file(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
                          dtype: torch.dtype | None = None, prefix: str = "") -> LoadedClipVision:
    """Load a CLIP vision .safetensors file (HF or OpenCLIP layout; `prefix`: its tensors' prefix inside the file)."""
    header = read_header(path)
    keys = [k for k in header.tensors if k.startswith(prefix)]
    if not keys:
        raise ClipVisionError(header.path, f"no tensors under {prefix!r}")
    with open_tensors(header.path) as reader:
        tensors = hf_names({k: reader.get(k) for k in keys}, prefix)
    return LoadedClipVision(header.path, build_clip_vision(tensors, header.path, device=device, dtype=dtype))


__all__ = [
    "ClipVision",
    "ClipVisionConfig",
    "ClipVisionError",
    "ClipVisionModel",
    "ClipVisionOutput",
    "LoadedClipVision",
    "build_clip_vision",
    "detect_config",
    "hf_names",
    "load_clip_vision_file",
    "preprocess",
]
