"""Tiled VAE decode/encode as ComfyUI's VAEDecodeTiled / VAEEncodeTiled compute them (comfy/sd.py decode_tiled_,
encode_tiled_; comfy/utils.py tiled_scale_multidim).

Each pass tiles the batch with diffusion/tiling.py's tiled_scale (feathered blending, as ComfyUI's). Decoding
averages three such passes (tiles of (2h, w/2), (h/2, 2w) and (h, w)), encoding three passes too, so no seam lies in
the same place in all of them.

Memory is bounded by one tile; the result is close to, not equal to, the untiled one (GroupNorm statistics are per
tile).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from diffusion.tiling import TileFn, tiled_scale


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


__all__ = ["decode_tiled", "encode_tiled"]
