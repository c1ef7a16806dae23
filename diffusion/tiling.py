"""Running a resolution-changing function tile by tile with feathered blending, as ComfyUI's comfy/utils.py
tiled_scale_multidim: tiled VAE decode/encode (tiled_vae.py) and upscale models (upscale.py) both use it.

Each batch item is cut into tiles of `tile` (one size per spatial dimension) with `overlap`; every tile's output is
weighted by a mask that ramps linearly from 1/feather to 1 over `feather` = round(overlap · scale) output pixels at
each of its edges, and the weighted sum is divided by the summed weights. Tile starts are 0, tile − overlap, ...
below size − overlap; the last tile is cut short at the border (never shifted back). An item that fits one tile is
done whole. Memory beyond the output is one tile's result and a one-channel weight map.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

TileFn = Callable[[Tensor], Tensor]


class TilingError(ValueError):
    """Tile sizes that cannot cover the image (a tile no larger than the overlap)."""


def _starts(size: int, tile: int, overlap: int) -> Sequence[int]:
    return range(0, size - overlap, tile - overlap) if size > tile else [0]


def tile_count(spatial: Sequence[int], tile: Sequence[int], overlap: int) -> int:
    """Tiles tiled_scale runs for one item (ComfyUI's get_tiled_scale_steps), for progress totals."""
    count = 1
    for size, t in zip(spatial, tile):
        count *= len(_starts(size, t, overlap))
    return count


def tiled_scale(samples: Tensor, function: TileFn, tile: Sequence[int], overlap: int, scale: float,
                out_channels: int, on_tile: Callable[[], None] = lambda: None,
                out_device: torch.device | str | None = None) -> Tensor:
    """Apply `function` tile by tile and blend the tiles.

    Args:
        samples: [B, C, *spatial].
        function: [1, C, *tile_spatial] -> [1, out_channels, *(tile_spatial · scale)].
        tile: tile size per spatial dimension, in input pixels.
        overlap: input pixels shared by neighbouring tiles.
        scale: output pixels per input pixel (8 decoding, 1/8 encoding, 4 for a 4× upscaler).
        out_channels: channels of the output.
        on_tile: called after each tile (progress, interrupts).
        out_device: where the output is assembled (default: the samples' device; the CPU keeps a large upscale
            off the GPU).

    Returns:
        [B, out_channels, *round(spatial · scale)] float32.
    """
    dims = len(tile)
    spatial = samples.shape[2:]
    device = samples.device if out_device is None else torch.device(out_device)
    out_size = [round(s * scale) for s in spatial]
    output = torch.empty([samples.shape[0], out_channels, *out_size], device=device)
    feather = round(overlap * scale)
    for b in range(samples.shape[0]):
        item = samples[b:b + 1]
        if all(spatial[d] <= tile[d] for d in range(dims)):
            output[b:b + 1] = function(item).float().to(device)
            on_tile()
            continue
        for d in range(dims):
            if spatial[d] > tile[d] and tile[d] <= overlap:
                raise TilingError(f"a tile of {tile[d]} pixels does not exceed the overlap of {overlap}: lower the "
                                  f"overlap or raise the tile size")
        total = output[b:b + 1].zero_()  # accumulated in place: the output is the only full-size buffer
        weight = torch.zeros([1, 1, *out_size], device=device)  # the blend mask is the same for every channel
        for start in itertools.product(*(_starts(spatial[d], tile[d], overlap) for d in range(dims))):
            piece = item
            at = []
            for d in range(dims):
                pos = max(0, min(spatial[d] - overlap, start[d]))
                piece = piece.narrow(d + 2, pos, min(tile[d], spatial[d] - pos))
                at.append(round(pos * scale))
            result = function(piece).float().to(device)
            mask = torch.ones([1, 1, *result.shape[2:]], device=device)
            for d in range(2, dims + 2):
                if feather >= mask.shape[d]:
                    continue
                for t in range(feather):
                    ramp = (t + 1) / feather
                    mask.narrow(d, t, 1).mul_(ramp)
                    mask.narrow(d, mask.shape[d] - 1 - t, 1).mul_(ramp)
            target, target_weight = total, weight
            for d in range(dims):
                target = target.narrow(d + 2, at[d], mask.shape[d + 2])
                target_weight = target_weight.narrow(d + 2, at[d], mask.shape[d + 2])
            target.add_(result * mask)
            target_weight.add_(mask)
            on_tile()
        total.div_(weight)
    return output


__all__ = ["TileFn", "TilingError", "tile_count", "tiled_scale"]
