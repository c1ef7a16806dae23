"""Image upscaling with super-resolution networks (ESRGAN and the other single-image architectures spandrel
detects from a state dict), run in overlapping tiles so a large image fits in memory.

Tiling as ComfyUI's ImageUpscaleWithModel (comfy/utils.py tiled_scale; here diffusion/tiling.py): 512-pixel tiles
overlapping by 32, blended with feathered masks, the result assembled on the CPU; on an out-of-memory error the tile
is halved and the image started again (down to 128).

Model files are .safetensors only (pickle checkpoints are refused, as everywhere in Chisel).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from diffusion.memory import is_out_of_memory
from diffusion.safetensors_io import CheckpointError, open_tensors, read_header
from diffusion.tiling import tile_count, tiled_scale

TILE = 512
OVERLAP = 32
MIN_TILE = 128
SWINIR_PREFIX = "module."  # SwinIR files saved from DataParallel ("module.layers.0.residual_group...")


class UpscaleModelError(CheckpointError):
    """The file is not a single-image upscale model spandrel knows."""


@dataclass(frozen=True, eq=False)
class UpscaleModel:
    """UPSCALE_MODEL: a loaded super-resolution network (spandrel's ImageModelDescriptor) and its file name."""

    descriptor: object
    name: str = ""

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)  # type: ignore[attr-defined]

    @property
    def module(self) -> torch.nn.Module:
        return self.descriptor.model  # type: ignore[attr-defined]

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)  # type: ignore[attr-defined]


def load_upscale_model(path: str | os.PathLike[str], *, device: torch.device | str = "cpu",
                       dtype: torch.dtype | None = None) -> UpscaleModel:
    """Load a .safetensors upscale model; spandrel detects the architecture (ESRGAN, Real-ESRGAN, SwinIR, ...).

    Raises:
        CheckpointFormatError: not a readable safetensors file (pickle .pth files included).
        UpscaleModelError: spandrel does not know the layout, or it is not a single-image model.
    """
    from diffusion.spandrel_import import import_spandrel

    spandrel = import_spandrel()  # imported on first use: it registers many architectures

    header = read_header(path)
    with open_tensors(header.path) as reader:
        state = {name: reader.get(name) for name in header.shapes}
    if "module.layers.0.residual_group.blocks.0.norm1.weight" in state:
        state = {k[len(SWINIR_PREFIX):] if k.startswith(SWINIR_PREFIX) else k: v for k, v in state.items()}
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        raise UpscaleModelError(header.path, f"not an upscale model spandrel knows ({exc})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UpscaleModelError(header.path, f"{descriptor.architecture.name} is not a single-image model")
    descriptor.to(torch.device(device))
    if dtype is not None and dtype != torch.float32:
        descriptor.to(dtype)
    descriptor.eval()
    return UpscaleModel(descriptor=descriptor, name=header.path.name)


def _is_oom(error: BaseException) -> bool:
    return is_out_of_memory(error) or (isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def upscale_images(model: UpscaleModel, images: Tensor, *, device: torch.device, tile: int = TILE,
                   overlap: int = OVERLAP, progress: Callable[[int, int], None] | None = None) -> Tensor:
    """Upscale IMAGE [B, H, W, C] in [0, 1] with `model`; returns [B, H·s, W·s, C] clamped to [0, 1] on the CPU.

    Runs in tiles of `tile` pixels; an out-of-memory error halves the tile and starts again, until the tile would
    drop below 128 pixels (then the error is raised).
    """
    net = model.descriptor
    dtype = next(model.module.parameters()).dtype
    pixels = images.movedim(-1, -3).to(device=device, dtype=dtype)  # (B, C, H, W)

    def run(piece: Tensor) -> Tensor:
        return net(piece)  # type: ignore[operator]

    while True:
        steps = pixels.shape[0] * tile_count(pixels.shape[2:], (tile, tile), overlap)
        done = [0]

        def tick() -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], steps)

        try:
            with torch.inference_mode():
                out = tiled_scale(pixels, run, (tile, tile), overlap, model.scale,
                                  int(net.output_channels), tick, out_device="cpu")  # type: ignore[attr-defined]
            break
        except (RuntimeError, MemoryError) as error:
            if not (isinstance(error, MemoryError) or _is_oom(error)):
                raise
            tile //= 2
            if tile < MIN_TILE:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out.movedim(-3, -1).clamp(0.0, 1.0)

