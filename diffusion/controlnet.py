"""ControlNet for the SD1.x / SD2.x / SDXL UNet, and how its residuals reach the UNet while sampling.

Zhang, Rao & Agrawala (2023), "Adding Conditional Control to Text-to-Image Diffusion Models": a trainable copy of
the UNet's input half reads a hint image (edges, depth, pose...) and its outputs, through zero-initialised 1x1
convolutions, are added to the UNet's skip connections and middle block. The union variant (xinsir's
ControlNet++ / "ControlNetPlus") adds a control-type embedding and a small transformer fusing the hint features.

What this file holds, in ComfyUI's terms (comfy/cldm/cldm.py, comfy/controlnet.py):

    ControlNetModel     the network; module names equal the lllyasviel file keys (`control_model.` stripped):
                        time_embed, label_emb, input_blocks, zero_convs, input_hint_block, middle_block,
                        middle_block_out (+ task_embedding, transformer_layes, spatial_ch_projs,
                        control_add_embedding for union nets). Diffusers-layout files are renamed to these keys.
    ControlNet          the CONTROL_NET value as loaded (the module, its config, union type), no hint yet
    AppliedControl      a ControlNet with a hint, strength, start/end percent and the previous control of the
                        chain: what a conditioning entry carries (CondEntry.control)
    PreparedControl     an AppliedControl resolved for one sampling run (sigma window, model sampling): called by
                        guidance.GuidedDenoiser with each batched model call's inputs, returns ControlResiduals
    ControlResiduals    what the UNet adds (diffusion/unet.py consumes it in ComfyUI's pop order)

Family and every width come from tensor names and shapes (as diffusion/checkpoint.py does for checkpoints); the
module is built on the meta device and filled after a strict name-and-shape check.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.checkpoint import CheckpointMismatch, UnknownCheckpoint, check_shapes
from diffusion.lora_keys import unet_diffusers_to_ldm
from diffusion.model_sampling import DiscreteSampling
from diffusion.safetensors_io import open_tensors, read_header
from diffusion.t2i_adapter import LoadedT2IAdapter, T2IAdapterModel, detect_t2i_adapter, load_t2i_adapter_file
from diffusion.unet import (
    Conv2d,
    Downsample,
    ResBlock,
    SpatialTransformer,
    TimestepEmbedSequential,
    UNetConfig,
    timestep_embedding,
)

if TYPE_CHECKING:
    from diffusion.controlnet_flux import FluxControlNet, LoadedFluxControlNet

Shapes = Mapping[str, tuple[int, ...]]

LDM_PREFIX = "control_model."
"""Key prefix of the original lllyasviel .pth/.safetensors releases; later conversions drop it."""
DIFFERENCE_KEY = "difference"
"""Marks a "diff" ControlNet: its weights are stored minus the base UNet's (DiffControlNetLoader adds them back)."""
HINT_COMPRESSION = 8
"""Image pixels per latent pixel of the hint (the input hint block downsamples 8x)."""
HINT_UPSCALE = "nearest-exact"
"""How a hint image is resized to the latent size x 8 (ComfyUI's ControlBase.upscale_algorithm)."""

# The input hint block: 3x3 convolutions with SiLU between, widths 16 16 32 32 96 96 256 then model_channels;
# stride 2 at the 3rd, 5th and 7th (8x down). Sequential indices 0, 2, ..., 14 are the convolutions.
_HINT_WIDTHS = (16, 16, 32, 32, 96, 96, 256)
_HINT_STRIDES = (1, 1, 2, 1, 2, 1, 2, 1)

# Union ControlNet (ControlNet++): its fusion transformer is fixed in size by the released models.
UNION_WIDTH = 320
UNION_HEADS = 8
UNION_LAYERS = 1
UNION_TYPE_EMBED = 256
UNION_CONTROLNET_TYPES: Mapping[str, int] = {
    "openpose": 0, "depth": 1, "hed/pidi/scribble/ted": 2, "canny/lineart/anime_lineart/mlsd": 3, "normal": 4,
    "segment": 5, "tile": 6, "repaint": 7,
}
"""SetUnionControlNetType's types and their task-embedding rows (ComfyUI's UNION_CONTROLNET_TYPES)."""


class ControlNetError(ValueError):
    """A control model or hint that cannot be used here (wrong hint channels, unknown union type, ...)."""


# ---------------------------------------------------------------------------------------------------------------
# The network


@dataclass(frozen=True)
class ControlNetConfig:
    """Hyper-parameters of one ControlNet.

    unet            the UNet configuration its encoder half copies (in/model channels, levels, transformer depths,
                    heads, context width, adm); the output-side fields mirror the input side and are unused
    hint_channels   channels of the hint image (3 for RGB hints)
    union_types     rows of the union task embedding (ControlNet++), or None for an ordinary ControlNet
    """

    unet: UNetConfig
    hint_channels: int = 3
    union_types: int | None = None


@dataclass(frozen=True, eq=False)
class ControlResiduals:
    """What a control model adds to the UNet, as ComfyUI's {"input", "middle", "output"} lists.

    The UNet consumes each list from its end: `input` after each input block (block 0 takes the last entry),
    `middle` after the middle block, `output` to each skip as the output blocks take them (the deepest skip takes
    the last entry, so a ControlNet's `output[i]` belongs to input block i). None entries add nothing.
    """

    input: tuple[Tensor | None, ...] = ()
    middle: tuple[Tensor | None, ...] = ()
    output: tuple[Tensor | None, ...] = ()


def _zero_conv(channels: int) -> TimestepEmbedSequential:
    return TimestepEmbedSequential(Conv2d(channels, channels, 1))


def _hint_block(hint_channels: int, model_channels: int) -> TimestepEmbedSequential:
    widths = (hint_channels, *_HINT_WIDTHS, model_channels)
    layers: list[nn.Module] = []
    for i, stride in enumerate(_HINT_STRIDES):
        if i:
            layers.append(nn.SiLU())
        layers.append(Conv2d(widths[i], widths[i + 1], 3, stride=stride, padding=1))
    return TimestepEmbedSequential(*layers)


class _UnionAttention(nn.Module):
    """Self-attention with one fused q|k|v projection ("attn.in_proj", "attn.out_proj")."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(width, width * 3)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = (y.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for y in self.in_proj(x).split(c, dim=2))  # 3 x (B, heads, T, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, c))


class _QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class _UnionBlock(nn.Module):
    """The CLIP-style residual attention block of ControlNet++'s fusion transformer."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = _UnionAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _ControlAddEmbedding(nn.Module):
    """The union net's control-type vector: a sinusoidal embedding of a one-hot type vector, then an MLP."""

    def __init__(self, num_types: int, out_dim: int) -> None:
        super().__init__()
        self.num_types = num_types
        self.linear_1 = nn.Linear(UNION_TYPE_EMBED * num_types, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, control_type: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        one_hot = torch.zeros(self.num_types, device=device)
        one_hot[list(control_type)] = 1.0
        emb = timestep_embedding(one_hot, UNION_TYPE_EMBED).to(dtype).reshape(1, -1)  # (1, types·256)
        return self.linear_2(F.silu(self.linear_1(emb)))


class ControlNetModel(nn.Module):
    """The ControlNet: the UNet's input half and middle, a hint encoder and zero convolutions."""

    def __init__(self, config: ControlNetConfig) -> None:
        super().__init__()
        self.config = config
        u = config.unet
        mc = u.model_channels
        emb_dim = u.time_embed_dim

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb: nn.Sequential | None = None
        if u.adm_in_channels is not None:
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(u.adm_in_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            )

        def transformer(width: int, depth: int) -> SpatialTransformer:
            heads, dim_head = u.attention_heads(width)
            return SpatialTransformer(width, heads, dim_head, depth, u.context_dim, u.use_linear_in_transformer)

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(Conv2d(u.in_channels, mc, 3, padding=1))])
        self.zero_convs = nn.ModuleList([_zero_conv(mc)])
        self.input_hint_block = _hint_block(config.hint_channels, mc)
        ch = mc
        levels = len(u.channel_mult)
        for level, mult in enumerate(u.channel_mult):
            for _ in range(u.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc)]
                ch = mult * mc
                if u.transformer_depth[level] > 0:
                    layers.append(transformer(ch, u.transformer_depth[level]))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                self.zero_convs.append(_zero_conv(ch))
            if level != levels - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                self.zero_convs.append(_zero_conv(ch))

        middle: list[nn.Module] = [ResBlock(ch, emb_dim, ch)]
        if u.transformer_depth_middle > 0:
            middle.append(transformer(ch, u.transformer_depth_middle))
        middle.append(ResBlock(ch, emb_dim, ch))
        self.middle_block = TimestepEmbedSequential(*middle)
        self.middle_block_out = _zero_conv(ch)

        self.task_embedding: nn.Parameter | None = None
        self.transformer_layes: nn.Sequential | None = None  # sic: the released files' spelling
        self.spatial_ch_projs: nn.Linear | None = None
        self.control_add_embedding: _ControlAddEmbedding | None = None
        if config.union_types is not None:
            self.task_embedding = nn.Parameter(torch.empty(config.union_types, UNION_WIDTH))
            self.transformer_layes = nn.Sequential(*(_UnionBlock(UNION_WIDTH, UNION_HEADS) for _ in range(UNION_LAYERS)))
            self.spatial_ch_projs = nn.Linear(UNION_WIDTH, UNION_WIDTH)
            self.control_add_embedding = _ControlAddEmbedding(config.union_types, emb_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def _union_hint(self, hint: Tensor, control_type: tuple[int, ...], emb: Tensor, context: Tensor) -> Tensor:
        """ControlNet++'s fusion of the (single) hint with its task embedding (ComfyUI union_controlnet_merge)."""
        assert self.task_embedding is not None and self.transformer_layes is not None
        assert self.spatial_ch_projs is not None
        features = self.input_hint_block(hint, emb, context)  # (B, 320, h, w)
        tokens = features.mean(dim=(2, 3)) + self.task_embedding[control_type[0]].to(features.dtype)  # (B, 320)
        fused = self.transformer_layes(tokens.unsqueeze(1))  # (B, 1, 320)
        alpha = self.spatial_ch_projs(fused[:, 0])[:, :, None, None]  # (B, 320, 1, 1)
        return features + alpha

    def forward(self, x: Tensor, hint: Tensor, timesteps: Tensor, context: Tensor, y: Tensor | None = None,
                control_type: tuple[int, ...] = ()) -> ControlResiduals:
        """The residuals for one batch.

        Args:
            x: [B, C, h, w] latents already scaled by c_in (the UNet's input).
            hint: [B, hint_channels, 8h, 8w] the hint image.
            timesteps: [B] discrete timesteps.
            context: [B, T, context_dim] text embeddings.
            y: [B, adm] SDXL's extra vector (when the net has label_emb).
            control_type: union nets: the task-embedding rows to use (empty: the plain hint path).
        """
        dtype = self.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.unet.model_channels).to(dtype))
        context = context.to(dtype)
        hint = hint.to(dtype)
        guided = None
        if self.control_add_embedding is not None:
            if any(t >= self.control_add_embedding.num_types for t in control_type):
                raise ControlNetError(
                    f"union control type {max(control_type)} is out of range: this ControlNet knows "
                    f"{self.control_add_embedding.num_types} types (the ProMax union model knows all 8)")
            emb = emb + self.control_add_embedding(control_type, dtype, emb.device)
            if control_type:
                guided = self._union_hint(hint, control_type, emb, context)
        if guided is None:
            guided = self.input_hint_block(hint, emb, context)  # (B, model_channels, h, w)
        if self.label_emb is not None:
            if y is None:
                raise ControlNetError("this ControlNet is for SDXL and needs the model's 'y' vector")
            emb = emb + self.label_emb(y.to(dtype))

        h = x.to(dtype)
        outputs: list[Tensor] = []
        for index, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if index == 0:
                h = h + guided  # the hint enters after the first convolution
            outputs.append(zero_conv(h, emb, context))
        h = self.middle_block(h, emb, context)
        return ControlResiduals(middle=(self.middle_block_out(h, emb, context),), output=tuple(outputs))


# ---------------------------------------------------------------------------------------------------------------
# Detection and loading


def count_blocks(shapes: Shapes, prefix: str) -> int:
    """Number of blocks `prefix{i}.` when they are numbered 0..n-1, else -1."""
    regex = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = sorted({int(m.group(1)) for k in shapes if (m := regex.match(k))})
    return len(found) if found == list(range(len(found))) else -1


def _depth(shapes: Shapes, block: str) -> int:
    depth = 0
    while f"{block}.transformer_blocks.{depth}.norm1.weight" in shapes:
        depth += 1
    return depth


def _encoder_config(shapes: Shapes, path: Path, p: str) -> UNetConfig:
    """The UNet configuration of a ControlNet's input half (keys under `p`, lllyasviel layout)."""
    conv_in = shapes[p + "input_blocks.0.0.weight"]
    model_channels, in_channels = conv_in[0], conv_in[1]
    label = shapes.get(p + "label_emb.0.0.weight")
    adm = label[1] if label is not None else None
    levels: list[list[tuple[int, int]]] = [[]]
    for n in range(1, count_blocks(shapes, p + "input_blocks.")):
        block = f"{p}input_blocks.{n}"
        if f"{block}.0.op.weight" in shapes:
            levels.append([])
            continue
        width = shapes.get(f"{block}.0.out_layers.3.weight")
        if width is None:
            raise UnknownCheckpoint(path, f"ControlNet input block {n} is neither a ResBlock nor a downsample")
        levels[-1].append((width[0], _depth(shapes, f"{block}.1")))
    nrb = len(levels[0])
    if nrb == 0 or any(len(level) != nrb for level in levels):
        raise UnknownCheckpoint(path, f"ControlNet levels have different ResBlock counts: {[len(v) for v in levels]}")
    mult, depth = [], []
    for i, level in enumerate(levels):
        widths, depths = {w for w, _ in level}, {d for _, d in level}
        if len(widths) != 1 or len(depths) != 1 or next(iter(widths)) % model_channels:
            raise UnknownCheckpoint(path, f"ControlNet level {i} is irregular: widths {sorted(widths)}, "
                                          f"depths {sorted(depths)}")
        mult.append(next(iter(widths)) // model_channels)
        depth.append(next(iter(depths)))
    to_k = next((s for k, s in shapes.items() if k.startswith(p) and k.endswith(".attn2.to_k.weight")), None)
    proj_in = next((s for k, s in shapes.items() if k.startswith(p) and k.endswith(".proj_in.weight")), None)
    if to_k is None or proj_in is None:
        raise UnknownCheckpoint(path, "ControlNet has no cross-attention (attn2.to_k / proj_in)")
    use_linear = len(proj_in) == 2
    sd1_heads = not use_linear and adm is None  # SD1: 8 heads everywhere; SD2/SDXL: 64-wide heads
    try:
        return UNetConfig(
            in_channels=in_channels, out_channels=in_channels, model_channels=model_channels,
            channel_mult=tuple(mult), num_res_blocks=nrb, transformer_depth=tuple(depth),
            transformer_depth_middle=_depth(shapes, f"{p}middle_block.1"),
            transformer_depth_output=tuple(reversed(depth)), context_dim=to_k[1],
            num_heads=8 if sd1_heads else None, num_head_channels=None if sd1_heads else 64,
            use_linear_in_transformer=use_linear, adm_in_channels=adm,
        )
    except ValueError as exc:
        raise UnknownCheckpoint(path, f"ControlNet configuration read from the shapes is invalid: {exc}") from None


# diffusers ControlNetModel -> lllyasviel names of the parts that are not the UNet's (comfy/controlnet.py maps the
# same): zero convs, the middle zero conv and the hint encoder's convolutions.
_DIFFUSERS_HINT = re.compile(r"controlnet_cond_embedding\.blocks\.(\d+)\.")


def _diffusers_config(shapes: Shapes, path: Path) -> UNetConfig:
    """The UNet configuration of a diffusers-layout ControlNet, read from its down/mid block shapes."""
    conv_in = shapes["conv_in.weight"]
    model_channels, in_channels = conv_in[0], conv_in[1]
    n_levels = count_blocks(shapes, "down_blocks.")
    nrb = count_blocks(shapes, "down_blocks.0.resnets.")
    if n_levels <= 0 or nrb <= 0:
        raise UnknownCheckpoint(path, "diffusers ControlNet has no down_blocks.N.resnets.M")
    mult, depth = [], []
    for level in range(n_levels):
        width = shapes.get(f"down_blocks.{level}.resnets.0.conv2.weight")
        if width is None or width[0] % model_channels:
            raise UnknownCheckpoint(path, f"diffusers ControlNet level {level} has no regular resnets")
        mult.append(width[0] // model_channels)
        depth.append(_depth(shapes, f"down_blocks.{level}.attentions.0"))
    label = shapes.get("add_embedding.linear_1.weight")
    adm = label[1] if label is not None else None
    to_k = next((s for k, s in shapes.items() if k.endswith(".attn2.to_k.weight")), None)
    proj_in = next((s for k, s in shapes.items() if k.endswith(".proj_in.weight")), None)
    if to_k is None or proj_in is None:
        raise UnknownCheckpoint(path, "diffusers ControlNet has no cross-attention (attn2.to_k / proj_in)")
    use_linear = len(proj_in) == 2
    sd1_heads = not use_linear and adm is None
    try:
        return UNetConfig(
            in_channels=in_channels, out_channels=in_channels, model_channels=model_channels,
            channel_mult=tuple(mult), num_res_blocks=nrb, transformer_depth=tuple(depth),
            transformer_depth_middle=_depth(shapes, "mid_block.attentions.0"),
            transformer_depth_output=tuple(reversed(depth)), context_dim=to_k[1],
            num_heads=8 if sd1_heads else None, num_head_channels=None if sd1_heads else 64,
            use_linear_in_transformer=use_linear, adm_in_channels=adm,
        )
    except ValueError as exc:
        raise UnknownCheckpoint(path, f"ControlNet configuration read from the shapes is invalid: {exc}") from None


def diffusers_controlnet_names(config: UNetConfig, shapes: Shapes) -> dict[str, str]:
    """Every tensor name of a diffusers-layout ControlNet -> its lllyasviel name (module names, then suffixes)."""
    modules = {d: ldm for d, ldm in unet_diffusers_to_ldm(config).items()
               if not d.startswith(("up_blocks.", "conv_norm_out", "conv_out"))}
    names: dict[str, str] = {}
    for key in shapes:
        module, _, suffix = key.rpartition(".")
        if module in modules:
            names[key] = f"{modules[module]}.{suffix}"
        elif (m := re.fullmatch(r"controlnet_down_blocks\.(\d+)", module)) is not None:
            names[key] = f"zero_convs.{m.group(1)}.0.{suffix}"
        elif module == "controlnet_mid_block":
            names[key] = f"middle_block_out.0.{suffix}"
        elif module == "controlnet_cond_embedding.conv_in":
            names[key] = f"input_hint_block.0.{suffix}"
        elif (m := _DIFFUSERS_HINT.match(key)) is not None:
            names[key] = f"input_hint_block.{2 * (int(m.group(1)) + 1)}.{suffix}"
        elif module == "controlnet_cond_embedding.conv_out":
            names[key] = f"input_hint_block.{2 * (len(_HINT_WIDTHS))}.{suffix}"
        elif key.startswith(("task_embedding", "transformer_layes.", "spatial_ch_projs.", "control_add_embedding.")):
            names[key] = key.replace(".attn.in_proj_", ".attn.in_proj.")
    return names


@dataclass(frozen=True)
class ControlNetLayout:
    """What detection reads from a ControlNet file: the config and each file key's module name."""

    config: ControlNetConfig
    names: Mapping[str, str]
    """file key -> ControlNetModel state-dict key (every key of the file except `difference`)."""
    layout: str
    """"ldm" (lllyasviel, with or without `control_model.`) or "diffusers"."""
    is_difference: bool = False


def detect_controlnet(shapes: Shapes, *, path: str | os.PathLike[str]) -> ControlNetLayout:
    """The ControlNet's configuration and key mapping from names and shapes alone.

    Raises:
        UnknownCheckpoint: not a ControlNet layout known here (T2I-adapter, ControlLoRA, DiT control models...).
    """
    path = Path(path)
    diff = DIFFERENCE_KEY in shapes
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        unet = _diffusers_config(shapes, path)
        names = diffusers_controlnet_names(unet, shapes)
        hint = shapes["controlnet_cond_embedding.conv_in.weight"][1]
        task = shapes.get("task_embedding")
        config = ControlNetConfig(unet=unet, hint_channels=hint, union_types=task[0] if task else None)
        return ControlNetLayout(config, names, "diffusers", diff)
    for prefix in (LDM_PREFIX, ""):
        if f"{prefix}zero_convs.0.0.weight" in shapes and f"{prefix}input_blocks.0.0.weight" in shapes:
            unet = _encoder_config(shapes, path, prefix)
            hint = shapes[f"{prefix}input_hint_block.0.weight"][1] if f"{prefix}input_hint_block.0.weight" in shapes else 3
            task = shapes.get(f"{prefix}task_embedding")
            config = ControlNetConfig(unet=unet, hint_channels=hint, union_types=task[0] if task else None)
            names = {k: k[len(prefix):] for k in shapes if k.startswith(prefix) and k != DIFFERENCE_KEY}
            return ControlNetLayout(config, names, "ldm", diff)
    if "lora_controlnet" in shapes:
        raise UnknownCheckpoint(path, "ControlLoRA files are not supported")
    raise UnknownCheckpoint(path, "not a ControlNet: no zero_convs.0.0 (lllyasviel layout) or "
                                  "controlnet_cond_embedding.conv_in (diffusers layout)")


def check_names(module: nn.Module, renamed: Shapes, path: Path, what: str = "ControlNet") -> None:
    """Strict name-and-shape match of renamed file tensors against a module's state dict (checkpoint's)."""
    check_shapes(module, renamed, path, what)


def check_controlnet_layout(shapes: Shapes, *, path: str | os.PathLike[str]) -> ControlNetLayout:
    """Detection plus the strict match of every tensor against the module built on the meta device."""
    layout = detect_controlnet(shapes, path=path)
    with torch.device("meta"):
        module = ControlNetModel(layout.config)
    renamed = {layout.names[k]: shapes[k] for k in layout.names if k in shapes}
    unmapped = sorted(k for k in shapes if k not in layout.names and k != DIFFERENCE_KEY)
    if unmapped:
        raise CheckpointMismatch(path, "ControlNet", missing=[], unexpected=unmapped, wrong_shapes={})
    check_names(module, renamed, Path(path))
    return layout


@dataclass(frozen=True, eq=False)
class LoadedControlNet:
    """A ControlNet file loaded: its module (shared by every value made from it) and configuration."""

    path: Path
    model: ControlNetModel
    config: ControlNetConfig


def load_controlnet_file(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
                         dtype: torch.dtype | None = None,
                         base_unet: Mapping[str, Tensor] | None = None) -> LoadedControlNet:
    """Load a .safetensors ControlNet (lllyasviel or diffusers layout).

    Args:
        path: the file (pickle formats are refused).
        device, dtype: where the module lives and its dtype (default fp32 on the CPU, the file's float dtype
            elsewhere).
        base_unet: the UNet state dict a "diff" ControlNet (one with a `difference` tensor) was stored against;
            its weights are added back to the matching ControlNet weights (DiffControlNetLoader).

    Raises:
        CheckpointFormatError, UnknownCheckpoint, CheckpointMismatch: unreadable, unknown, or not matching.
    """
    device = torch.device(device)
    header = read_header(path)
    layout = check_controlnet_layout(header.shapes, path=header.path)
    if dtype is None:
        floats = [header.tensors[k].dtype for k in layout.names if header.tensors[k].dtype in ("F32", "F16", "BF16")]
        code = max(set(floats), key=floats.count) if floats and device.type != "cpu" else "F32"
        dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[code]
    with torch.device("meta"):
        module = ControlNetModel(layout.config)
    tensors: dict[str, Tensor] = {}
    with open_tensors(header.path) as reader:
        for key, name in layout.names.items():
            value = reader.get(key).to(device=device, dtype=dtype)
            if layout.is_difference and base_unet is not None and name in base_unet:
                value = value + base_unet[name].to(device=device, dtype=dtype)
            tensors[name] = value
    module.load_state_dict(tensors, strict=True, assign=True)
    return LoadedControlNet(header.path, module.eval().requires_grad_(False), layout.config)


def load_control_file(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
                      dtype: torch.dtype | None = None,
                      base_unet: Mapping[str, Tensor] | None = None,
                      ) -> LoadedControlNet | LoadedT2IAdapter | LoadedFluxControlNet:
    """Load what a ControlNet loader node may be given: a ControlNet (either layout), a T2I-adapter or a Flux
    ControlNet (diffusion/controlnet_flux.py, told apart by its tensor names as ComfyUI does).

    Raises:
        UnknownCheckpoint: none of them, or a Flux ControlNet layout not supported (the message names what was
            looked for); and as load_controlnet_file.
    """
    from diffusion.controlnet_flux import flux_controlnet_kind, load_flux_controlnet_file  # imports this module

    header = read_header(path)
    if flux_controlnet_kind(header.shapes) is not None:
        return load_flux_controlnet_file(header.path, device=device, dtype=dtype)
    try:
        detect_controlnet(header.shapes, path=header.path)
    except UnknownCheckpoint as not_controlnet:
        try:
            detect_t2i_adapter(header.shapes, path=header.path)
        except UnknownCheckpoint:
            raise UnknownCheckpoint(header.path, f"{not_controlnet.reason}; nor a T2I-adapter (conv_in / "
                                                 "body.0.in_conv); nor a Flux ControlNet (controlnet_blocks.0 "
                                                 "with double_blocks.0)") from None
        return load_t2i_adapter_file(header.path, device=device, dtype=dtype)
    return load_controlnet_file(header.path, device=device, dtype=dtype, base_unet=base_unet)


# ---------------------------------------------------------------------------------------------------------------
# The CONTROL_NET value and applying it


@dataclass(frozen=True, eq=False)
class ControlNet:
    """CONTROL_NET as a loader gives it: the model and how it reads its hint; no hint yet.

    model                   the shared module (never mutated)
    union_type              SetUnionControlNetType's choice: task-embedding rows (empty: "auto", the plain path)
    global_average_pooling  "shuffle" ControlNets: each residual is replaced by its spatial mean
    concat_mask             the net takes an inpainting mask beside its hint (none of the SD nets here do)
    name / owner            the file it came from; the loaded file (keeps the manager's shared copy alive)
    """

    model: ControlNetModel
    union_type: tuple[int, ...] = ()
    global_average_pooling: bool = False
    concat_mask: bool = False
    name: str = ""
    owner: Any = None

    @property
    def hint_channels(self) -> int:
        return self.model.config.hint_channels

    def with_union_type(self, union_type: tuple[int, ...]) -> ControlNet:
        return replace(self, union_type=union_type)

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        return (self.model,)

    def check_hint(self, hint: Tensor) -> None:
        if hint.shape[1] != self.hint_channels:
            raise ControlNetError(f"{self.name or 'this ControlNet'} reads {self.hint_channels}-channel hint images, "
                                  f"the image has {hint.shape[1]} channels")

    def residuals(self, prepared: PreparedControl, x: Tensor, sigma: Tensor, model_inputs: Mapping[str, Any],
                  batched_number: int) -> ControlResiduals:
        """This net's residuals for one model call (ComfyUI ControlNet.get_control): the hint at the latent size x
        8, the input scaled by c_in, the discrete timestep in the net's dtype."""
        model = self.model
        context = model_inputs["context"]
        expected = model.config.unet.context_dim
        if context.shape[-1] != expected or (model.label_emb is not None) != ("y" in model_inputs):
            raise ControlNetError(
                f"{self.name or 'this ControlNet'} is for a model with {expected}-wide text embeddings"
                f"{' and an SDXL y vector' if model.label_emb is not None else ''}; this model gives "
                f"{context.shape[-1]}-wide ones{' and a y vector' if 'y' in model_inputs else ''} "
                "(a ControlNet of another model family?)")
        hint = prepared.cached(("hint", *x.shape[-2:], x.shape[0], batched_number), lambda: broadcast_hint(
            resize_hint(prepared.applied.hint.to(x.device, torch.float32), x.shape[-2] * HINT_COMPRESSION,
                        x.shape[-1] * HINT_COMPRESSION), x.shape[0], batched_number).to(model.dtype))
        own = model(prepared.sampling.calculate_input(sigma, x), hint,
                    prepared.sampling.timestep(sigma).to(model.dtype), context,
                    y=model_inputs.get("y"), control_type=self.union_type)
        return merge_residuals(own, prepared.applied.strength, self.global_average_pooling, None)


@dataclass(frozen=True, eq=False)
class T2IAdapter:
    """CONTROL_NET for a T2I-adapter (diffusion/t2i_adapter.py): its features depend on the hint only, so they
    are computed once per latent size and run, and added to the UNet's input (and SDXL middle) blocks."""

    model: T2IAdapterModel
    name: str = ""
    owner: Any = None
    union_type: tuple[int, ...] = ()  # SetUnionControlNetType accepts any control model; adapters ignore it
    global_average_pooling: bool = False
    concat_mask: bool = False

    @property
    def hint_channels(self) -> int:
        return self.model.config.hint_channels

    def with_union_type(self, union_type: tuple[int, ...]) -> T2IAdapter:
        return replace(self, union_type=union_type)

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        return (self.model,)

    def check_hint(self, hint: Tensor) -> None:
        if hint.shape[1] != self.hint_channels and self.hint_channels != 1:
            raise ControlNetError(f"{self.name or 'this T2I-adapter'} reads {self.hint_channels}-channel hint "
                                  f"images, the image has {hint.shape[1]} channels")

    def residuals(self, prepared: PreparedControl, x: Tensor, sigma: Tensor, model_inputs: Mapping[str, Any],
                  batched_number: int) -> ControlResiduals:
        """ComfyUI T2IAdapter.get_control: the hint resized to the latent size x 8 rounded up to the adapter's
        pixel-unshuffle, grey for one-channel adapters, run once per size and batch."""

        def features() -> ControlResiduals:
            unshuffle = self.model.config.unshuffle
            height = math.ceil(x.shape[-2] * HINT_COMPRESSION / unshuffle) * unshuffle
            width = math.ceil(x.shape[-1] * HINT_COMPRESSION / unshuffle) * unshuffle
            hint = resize_hint(prepared.applied.hint.to(x.device, torch.float32), height, width)
            if self.hint_channels == 1 and hint.shape[1] > 1:
                hint = hint.mean(dim=1, keepdim=True)
            hint = broadcast_hint(hint, x.shape[0], batched_number)
            out = self.model(hint.to(self.model.dtype))
            return ControlResiduals(input=tuple(out["input"]), middle=tuple(out["middle"]))

        own = prepared.cached(("t2i", *x.shape[-2:], x.shape[0], batched_number), features)
        merged = merge_residuals(own, prepared.applied.strength, self.global_average_pooling, None)
        return ControlResiduals(*(tuple(None if t is None else t.to(x.dtype) for t in part)
                                  for part in (merged.input, merged.middle, merged.output)))


ControlModel = Union[ControlNet, T2IAdapter, "FluxControlNet"]  # noqa: UP007 (a forward reference)
"""What a CONTROL_NET value is."""


@dataclass(frozen=True, eq=False)
class AppliedControl:
    """A ControlNet with its hint, as a conditioning entry carries it (ComfyUI's control object after
    set_cond_hint / set_previous_controlnet).

    hint           [B, C, H, W] in [0, 1] (IMAGE moved to channels-first); resized to the latent x 8 when used
    strength       multiplies every residual
    start_percent / end_percent  the part of the schedule the control acts in (outside it only `previous` acts)
    previous       the control applied before this one to the same entry (chained ControlNets add up)
    """

    net: ControlModel
    hint: Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: AppliedControl | None = None

    def __post_init__(self) -> None:
        if self.hint.ndim != 4:
            raise ControlNetError(f"a ControlNet hint must be [B, C, H, W], got shape {tuple(self.hint.shape)}")
        self.net.check_hint(self.hint)

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        """Every module of the chain (to place on the compute device while sampling)."""
        return self.net.modules + (self.previous.modules if self.previous is not None else ())

    def prepared(self, sampling: DiscreteSampling) -> PreparedControl:
        """This control resolved for one sampling run (ComfyUI pre_run): sigma window and the model sampling."""
        return PreparedControl(
            applied=self, sampling=sampling, sigma_start=sampling.percent_to_sigma(self.start_percent),
            sigma_end=sampling.percent_to_sigma(self.end_percent),
            previous=self.previous.prepared(sampling) if self.previous is not None else None)


def resize_hint(hint: Tensor, height: int, width: int) -> Tensor:
    """[B, C, H', W'] -> [B, C, height, width]: centre-crop to the target aspect ratio, then nearest-exact
    (ComfyUI's common_upscale(..., "nearest-exact", "center"))."""
    old_h, old_w = hint.shape[-2:]
    if (old_h, old_w) == (height, width):
        return hint
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    cropped = hint[:, :, y:old_h - y, x:old_w - x]
    return F.interpolate(cropped, size=(height, width), mode=HINT_UPSCALE)


def broadcast_hint(hint: Tensor, batch: int, batched_number: int) -> Tensor:
    """The hint batch for a model call of `batch` latents made of `batched_number` conditioning chunks: a single
    hint serves all; otherwise the first batch/batched_number hints (cycled), repeated per chunk (ComfyUI's
    broadcast_image_to)."""
    if hint.shape[0] == 1 or hint.shape[0] == batch:
        return hint
    per_chunk = batch // batched_number
    hint = hint[:per_chunk]
    if per_chunk > hint.shape[0]:
        reps = math.ceil(per_chunk / hint.shape[0])
        hint = hint.repeat(reps, 1, 1, 1)[:per_chunk]
    return hint if hint.shape[0] == batch else torch.cat([hint] * batched_number)


def merge_residuals(own: ControlResiduals, strength: float, global_average_pooling: bool,
                    previous: ControlResiduals | None) -> ControlResiduals:
    """Scale this control's residuals by its strength and add the previous control's (ComfyUI control_merge)."""

    def scaled(x: Tensor | None) -> Tensor | None:
        if x is None:
            return None
        if global_average_pooling:
            x = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        return x * strength

    merged: dict[str, list[Tensor | None]] = {}
    for key in ("input", "middle", "output"):
        out = [scaled(x) for x in getattr(own, key)]
        for i, prev in enumerate(getattr(previous, key) if previous is not None else ()):
            if i >= len(out):
                out.append(prev)
            elif prev is not None:
                out[i] = prev if out[i] is None else prev + out[i]
        merged[key] = out
    return ControlResiduals(input=tuple(merged["input"]), middle=tuple(merged["middle"]),
                            output=tuple(merged["output"]))


@dataclass(frozen=True, eq=False)
class PreparedControl:
    """An AppliedControl during one sampling run; guidance calls it per batched model call.

    `_cache` keeps, for this run only, what depends on the latent size but not on the step (the resized hint,
    a T2I-adapter's features).
    """

    applied: AppliedControl
    sampling: DiscreteSampling
    sigma_start: float
    sigma_end: float
    previous: PreparedControl | None = None
    _cache: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)

    def cached(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def __call__(self, x: Tensor, sigma: Tensor, model_inputs: Mapping[str, Any],
                 batched_number: int) -> ControlResiduals | None:
        """The residuals for one model call.

        Args:
            x: [N, C, h, w] the noisy latents of the call (unscaled; c_in is applied here as for the UNet).
            sigma: [N] their sigmas.
            model_inputs: the call's UNet inputs ("context", and "y" for SDXL).
            batched_number: how many conditioning chunks the call concatenates (the hint is repeated per chunk).

        Returns:
            None when neither this control nor a previous one is active at this sigma.
        """
        previous = self.previous(x, sigma, model_inputs, batched_number) if self.previous is not None else None
        s = float(sigma.reshape(-1)[0])
        if s > self.sigma_start or s < self.sigma_end:
            return previous
        own = self.applied.net.residuals(self, x, sigma, model_inputs, batched_number)
        return merge_residuals(own, 1.0, False, previous) if previous is not None else own


def control_modules(*conditionings: Any) -> tuple[nn.Module, ...]:
    """The control modules the entries of these Conditioning values use (distinct, in order of appearance)."""
    seen: dict[int, nn.Module] = {}
    for conditioning in conditionings:
        for entry in getattr(conditioning, "entries", ()):
            control = getattr(entry, "control", None)
            for module in (control.modules if control is not None else ()):
                seen.setdefault(id(module), module)
    return tuple(seen.values())
