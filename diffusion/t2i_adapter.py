"""T2I-Adapter (Mou et al. 2023, "T2I-Adapter: Learning Adapters to Dig out More Controllable Ability for
Text-to-Image Diffusion Models"): a small convolutional network turns the hint image, once per sampling run, into
features added to the UNet's input blocks (and, for SDXL, its middle block), as ComfyUI's T2IAdapter does
(comfy/t2i_adapter/adapter.py, comfy/controlnet.py).

Three layouts, told apart by their keys (module names here equal the ComfyUI/TencentARC file keys):
    full      conv_in, body.N.{in_conv, block1, block2, down_opt.op}: pixel-unshuffle 8 (SD1.x), 4 levels x 2 blocks
    full XL   the same with pixel-unshuffle 16 and SDXL's three levels (input channels 256 or 768)
    light     body.N.{in_conv, body.M.block1/block2, out_conv}: one "extractor" per level (SD1.x)
Diffusers files (adapter.body.I.resnets.J...) are renamed to these keys.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.checkpoint import UnknownCheckpoint
from diffusion.safetensors_io import open_tensors, read_header

Shapes = Mapping[str, tuple[int, ...]]
LEVEL_WIDTHS = (1, 2, 4, 4)  # level widths as multiples of the first (320 in every released adapter)
FULL_BLOCKS_PER_LEVEL = 2
LIGHT_WIDTHS = (320, 640, 1280, 1280)
LIGHT_BLOCKS = 4


def _avg_down(x: Tensor) -> Tensor:
    """2x average pooling; an odd side is zero-padded first (the reference pads by H % 2, W % 2)."""
    return F.avg_pool2d(x, 2, 2, padding=(x.shape[2] % 2, x.shape[3] % 2))


class _Down(nn.Module):
    """Downsampling: a stride-2 3x3 convolution ("op") or, without parameters, 2x average pooling."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op: nn.Module | None = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else None

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x) if self.op is not None else _avg_down(x)


class _ResnetBlock(nn.Module):
    """Full adapter block: optional downsample, a conv when the width changes, then conv-ReLU-conv plus skip."""

    def __init__(self, in_c: int, out_c: int, *, down: bool, ksize: int, use_conv: bool) -> None:
        super().__init__()
        pad = ksize // 2
        self.down_opt: _Down | None = _Down(in_c, use_conv) if down else None
        self.in_conv: nn.Conv2d | None = nn.Conv2d(in_c, out_c, ksize, 1, pad) if in_c != out_c else None
        self.block1 = nn.Conv2d(out_c, out_c, 3, 1, 1)
        self.block2 = nn.Conv2d(out_c, out_c, ksize, 1, pad)

    def forward(self, x: Tensor) -> Tensor:
        if self.down_opt is not None:
            x = self.down_opt(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return x + self.block2(F.relu(self.block1(x)))


class _LightBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.block2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block2(F.relu(self.block1(x)))


class _Extractor(nn.Module):
    """Light adapter level: optional average-pool downsample, 1x1 in, residual blocks at 1/4 width, 1x1 out."""

    def __init__(self, in_c: int, inter_c: int, out_c: int, blocks: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.in_conv = nn.Conv2d(in_c, inter_c, 1)
        self.body = nn.Sequential(*(_LightBlock(inter_c) for _ in range(blocks)))
        self.out_conv = nn.Conv2d(inter_c, out_c, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            x = _avg_down(x)
        return self.out_conv(self.body(self.in_conv(x)))


@dataclass(frozen=True)
class T2IAdapterConfig:
    """kind "full" | "full_xl" | "light"; cin = hint channels x unshuffle²; width = level-0 width; ksize of the
    full blocks' convs; use_conv: downsample with a strided conv instead of average pooling."""

    kind: str
    cin: int
    width: int = 320
    ksize: int = 3
    use_conv: bool = False

    @property
    def unshuffle(self) -> int:
        return 16 if self.kind == "full_xl" else 8

    @property
    def hint_channels(self) -> int:
        return self.cin // (self.unshuffle ** 2)


class T2IAdapterModel(nn.Module):
    """The adapter; forward(hint) -> {"input": [...], "middle": [...]} residual lists in ComfyUI's pop order."""

    def __init__(self, config: T2IAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.conv_in: nn.Conv2d | None = None
        blocks: list[nn.Module] = []
        if config.kind == "light":
            widths = LIGHT_WIDTHS
            for i, width in enumerate(widths):
                blocks.append(_Extractor(config.cin if i == 0 else widths[i - 1], width // 4, width, LIGHT_BLOCKS,
                                         down=i > 0))
        else:
            xl = config.kind == "full_xl"
            widths = tuple(config.width * m for m in LEVEL_WIDTHS)
            down_levels, no_down_levels = ((2,), (1,)) if xl else ((1, 2, 3), ())
            self.conv_in = nn.Conv2d(config.cin, widths[0], 3, 1, 1)
            for i, width in enumerate(widths):
                for j in range(FULL_BLOCKS_PER_LEVEL):
                    first = j == 0 and (i in down_levels or i in no_down_levels)
                    blocks.append(_ResnetBlock(widths[i - 1] if first else width, width, down=first and i in down_levels,
                                               ksize=config.ksize, use_conv=config.use_conv))
        self.body = nn.ModuleList(blocks)
        self.widths = widths

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, hint: Tensor) -> dict[str, list[Tensor | None]]:
        x = F.pixel_unshuffle(hint, self.config.unshuffle)  # (B, cin, H/u, W/u)
        levels: list[Tensor] = []
        if self.config.kind == "light":
            for block in self.body:
                x = block(x)
                levels.append(x)
        else:
            assert self.conv_in is not None
            x = self.conv_in(x)
            for i in range(len(self.widths)):
                for j in range(FULL_BLOCKS_PER_LEVEL):
                    x = self.body[i * FULL_BLOCKS_PER_LEVEL + j](x)
                levels.append(x)
        # Each level's output sits where the UNet's last block of that level pops it (None elsewhere).
        features: list[Tensor | None] = []
        for i, level in enumerate(levels):
            if self.config.kind == "full_xl":
                features += [None, None, None] if i == 0 else [None, None] if i == 2 else [None]
            else:
                features += [None, None]
            features.append(level)
        features.reverse()
        if self.config.kind == "full_xl":
            return {"input": features[1:], "middle": features[:1]}
        return {"input": features, "middle": []}


# ---------------------------------------------------------------------------------------------------------------
# Detection and loading

_DIFFUSERS_BLOCK = re.compile(r"adapter\.body\.(\d+)\.resnets\.(\d+)\.")
_DIFFUSERS_LEVEL = re.compile(r"adapter\.body\.(\d+)\.")


def t2i_names(keys: list[str] | tuple[str, ...] | Mapping[str, object]) -> dict[str, str]:
    """file key -> module key: identity for the ComfyUI/TencentARC layout; diffusers' adapter.body.I.resnets.J ->
    body.(2I+J), adapter.body.I. -> body.(2I)., adapter.X -> X."""
    names = {}
    for key in keys:
        name = key
        if key.startswith("adapter."):
            name = _DIFFUSERS_BLOCK.sub(lambda m: f"body.{int(m.group(1)) * 2 + int(m.group(2))}.", name)
            name = _DIFFUSERS_LEVEL.sub(lambda m: f"body.{int(m.group(1)) * 2}.", name)
            name = name.removeprefix("adapter.")
        names[key] = name
    return names


def detect_t2i_adapter(shapes: Shapes, *, path: str | os.PathLike[str]) -> tuple[T2IAdapterConfig, dict[str, str]]:
    """The adapter's configuration and key mapping from names and shapes; UnknownCheckpoint if it is none."""
    names = t2i_names(tuple(shapes))
    renamed = {names[k]: v for k, v in shapes.items()}
    if "body.0.in_conv.weight" in renamed:
        return T2IAdapterConfig(kind="light", cin=renamed["body.0.in_conv.weight"][1]), names
    if "conv_in.weight" in renamed and "body.0.block2.weight" in renamed:
        width, cin = renamed["conv_in.weight"][:2]
        use_conv = any(k.endswith("down_opt.op.weight") for k in renamed)
        kind = "full_xl" if cin in (256, 768) else "full"
        return T2IAdapterConfig(kind=kind, cin=cin, width=width, ksize=renamed["body.0.block2.weight"][2],
                                use_conv=use_conv), names
    raise UnknownCheckpoint(path, "not a T2I-adapter: no conv_in / body.0.in_conv")


@dataclass(frozen=True, eq=False)
class LoadedT2IAdapter:
    path: Path
    model: T2IAdapterModel
    config: T2IAdapterConfig


def load_t2i_adapter_file(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
                          dtype: torch.dtype | None = None) -> LoadedT2IAdapter:
    """Load a .safetensors T2I-adapter (strict names and shapes; fp32 unless `dtype`)."""
    from diffusion.controlnet import check_names  # shared strict check (controlnet imports this module lazily)

    header = read_header(path)
    config, names = detect_t2i_adapter(header.shapes, path=header.path)
    with torch.device("meta"):
        module = T2IAdapterModel(config)
    check_names(module, {names[k]: v for k, v in header.shapes.items()}, header.path, "T2I-adapter")
    with open_tensors(header.path) as reader:
        tensors = {names[k]: reader.get(k).to(device=device, dtype=dtype or torch.float32) for k in header.shapes}
    module.load_state_dict(tensors, strict=True, assign=True)
    return LoadedT2IAdapter(header.path, module.eval().requires_grad_(False), config)
