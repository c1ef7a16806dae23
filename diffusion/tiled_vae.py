"""Tiled VAE decode/encode as ComfyUI's VAEDecodeTiled / VAEEncodeTiled compute them (comfy/sd.py decode_tiled_,
encode_tiled_; comfy/utils.py tiled_scale_multidim).

Each batch item is cut into tiles of `tile` (rows, cols) with `overlap`; every tile's output is weighted by a mask
that ramps linearly from 1/feather to 1 over `feather` = round(overlap · scale) output pixels at each of its edges,
and the weighted sum is divided by the summed weights. Tile starts are 0, tile − overlap, ... below size − overlap;
the last tile is cut short at the border (never shifted back). Decoding averages three such passes (tiles of
(2h, w/2), (h/2, 2w) and (h, w)), encoding three passes too, so no seam lies in the same place in all of them.

Memory is bounded by one tile; the result is close to, not equal to, the untiled one (GroupNorm statistics are per
tile).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

TileFn = Callable[[Tensor], Tensor]


class TilingError(ValueError):
    """Tile sizes that cannot cover the image (a tile no larger than the overlap)."""


def tiled_scale(samples: Tensor, function: TileFn, tile: Sequence[int], overlap: int, scale: float,
                out_channels: int, on_tile: Callable[[], None] = lambda: None) -> Tensor:
    """Apply a resolution-changing `function` tile by tile with feathered blending (tiled_scale_multidim).

    Args:
        samples: [B, C, *spatial].
        function: [1, C, *tile_spatial] -> [1, out_channels, *(tile_spatial · scale)].
        tile: tile size per spatial dimension, in input pixels.
        overlap: input pixels shared by neighbouring tiles.
        scale: output pixels per input pixel (8 decoding, 1/8 encoding).
        out_channels: channels of the output.
        on_tile: called after each tile (progress, interrupts).

    Returns:
        [B, out_channels, *round(spatial · scale)] float32.
    """
    dims = len(tile)
    spatial = samples.shape[2:]
    out_size = [round(s * scale) for s in spatial]
    output = torch.empty([samples.shape[0], out_channels, *out_size], device=samples.device)
    for b in range(samples.shape[0]):
        item = samples[b:b + 1]
        if all(spatial[d] <= tile[d] for d in range(dims)):
            output[b:b + 1] = function(item).float()
            on_tile()
            continue
        for d in range(dims):
            if spatial[d] > tile[d] and tile[d] <= overlap:
                raise TilingError(f"a tile of {tile[d]} pixels does not exceed the overlap of {overlap}: lower the "
                                  f"overlap or raise the tile size")
        out = torch.zeros([1, out_channels, *out_size], device=samples.device)
        weight = torch.zeros_like(out)
        positions = [range(0, spatial[d] - overlap, tile[d] - overlap) if spatial[d] > tile[d] else [0]
                     for d in range(dims)]
        for start in itertools.product(*positions):
            piece = item
            at = []
            for d in range(dims):
                pos = max(0, min(spatial[d] - overlap, start[d]))
                length = min(tile[d], spatial[d] - pos)
                piece = piece.narrow(d + 2, pos, length)
                at.append(round(pos * scale))
            result = function(piece).float()
            mask = torch.ones_like(result)
            feather = round(overlap * scale)
            for d in range(2, dims + 2):
                if feather >= mask.shape[d]:
                    continue
                for t in range(feather):
                    a = (t + 1) / feather
                    mask.narrow(d, t, 1).mul_(a)
                    mask.narrow(d, mask.shape[d] - 1 - t, 1).mul_(a)
            target, target_weight = out, weight
            for d in range(dims):
                target = target.narrow(d + 2, at[d], mask.shape[d + 2])
                target_weight = target_weight.narrow(d + 2, at[d], mask.shape[d + 2])
            target.add_(result * mask)
            target_weight.add_(mask)
            on_tile()
        output[b:b + 1] = out / weight
    return output


def decode_tiled(decode: TileFn, latents: Tensor, *, tile_x: int = 64, tile_y: int = 64, overlap: int = 16,
                 downscale: int = 8, out_channels: int = 3, on_tile: Callable[[], None] = lambda: None) -> Tensor:
    """Raw latents [B, C, h, w] -> decoder output [B, out_channels, h·f, w·f] (about [-1, 1]), the mean of three
    tilings, tile sizes and overlap in latent pixels (ComfyUI's VAE.decode_tiled_)."""
    def run(tx: int, ty: int) -> Tensor:
        return tiled_scale(latents, decode, (ty, tx), overlap, downscale, out_channels, on_tile)

    return (run(tile_x // 2, tile_y * 2) + run(tile_x * 2, tile_y // 2) + run(tile_x, tile_y)) / 3.0


def encode_tiled(encode: TileFn, pixels: Tensor, *, tile_x: int = 512, tile_y: int = 512, overlap: int = 64,
                 downscale: int = 8, latent_channels: int = 4, on_tile: Callable[[], None] = lambda: None) -> Tensor:
    """Images [B, C, H, W] in [-1, 1] -> latents [B, latent_channels, H/f, W/f], the mean of three tilings, tile
    sizes and overlap in pixels (ComfyUI's VAE.encode_tiled_)."""
    def run(tx: int, ty: int) -> Tensor:
        return tiled_scale(pixels, encode, (ty, tx), overlap, 1 / downscale, latent_channels, on_tile)

    samples = run(tile_x, tile_y)
    samples += run(tile_x * 2, tile_y // 2)
    samples += run(tile_x // 2, tile_y * 2)
    return samples / 3.0


def tile_count(spatial: Sequence[int], tile: Sequence[int], overlap: int) -> int:
    """Tiles tiled_scale runs for one item (ComfyUI's get_tiled_scale_steps), for progress totals."""
    count = 1
    for size, t in zip(spatial, tile):
        count *= len(range(0, size - overlap, t - overlap)) if size > t else 1
    return count


__all__ = ["TilingError", "decode_tiled", "encode_tiled", "tile_count", "tiled_scale"]
