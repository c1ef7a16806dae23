"""VAEDecodeTiled / VAEEncodeTiled: the VAE run tile by tile with ComfyUI's tile sizes, overlaps and blending
(diffusion/tiled_vae.py), for images too large to decode or encode at once. The temporal inputs only concern video
VAEs, which Chisel has none of; they are accepted and unused. Progress counts every tile of the three passes."""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffusion.handles import Vae
from diffusion.tiled_vae import decode_tiled, encode_tiled
from diffusion.tiling import tile_count
from nodes.context import RunContext
from nodes.inputs import Int, Link
from nodes.registry import Node, Output
from nodes.types import Latent


def _progress(ctx: RunContext, batch: int, spatial: tuple[int, int], passes: list[tuple[int, int]],
              overlap: int) -> Callable[[], None]:
    """A per-tile callback reporting progress over every tile of the three passes (and noticing interrupts)."""
    total = batch * sum(tile_count(spatial, tile, overlap) for tile in passes)
    done = [0]

    def on_tile() -> None:
        done[0] += 1
        ctx.progress(min(done[0], total), total)

    return on_tile


def _temporal(tooltip: str) -> tuple[Int, Int]:
    return (Int(64, min=8, max=4096, step=4, tooltip=f"Only used for video VAEs: Amount of frames to {tooltip} at a "
                                                      f"time."),
            Int(8, min=4, max=4096, step=4, tooltip="Only used for video VAEs: Amount of frames to overlap."))


class VAEDecodeTiled(Node):
    """Decodes latents in overlapping tiles (bounded memory); close to VAEDecode's result."""

    description = ""
    display_name = "VAE Decode (Tiled)"
    category = "_for_testing"
    samples = Link("LATENT")
    vae = Link("VAE")
    tile_size = Int(512, min=64, max=4096, step=32)
    overlap = Int(64, min=0, max=4096, step=32)
    temporal_size, temporal_overlap = _temporal("decode")
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx: RunContext, samples: Latent, vae: Vae, tile_size: int, overlap: int, temporal_size: int = 64,
            temporal_overlap: int = 8) -> tuple[torch.Tensor]:
        if tile_size < overlap * 4:
            overlap = tile_size // 4  # ComfyUI keeps the overlap at most a quarter of the tile
        f = vae.downscale
        module = vae.module
        with torch.inference_mode(), ctx.services.models.on_device(module) as device:
            latents = samples.samples.to(device)
            t, o = tile_size // f, overlap // f
            on_tile = _progress(ctx, latents.shape[0], tuple(latents.shape[-2:]), [(t * 2, t // 2), (t // 2, t * 2),
                                                                                    (t, t)], o)
            decoded = decode_tiled(module.decode, latents, tile_x=t, tile_y=t, overlap=o, downscale=f,
                                   out_channels=module.config.out_channels, on_tile=on_tile)
            images = ((decoded + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)  # (B, H, W, 3) in [0, 1]
        return (images.to(samples.samples.device),)


class VAEEncodeTiled(Node):
    """Encodes images in overlapping tiles (bounded memory); close to VAEEncode's result."""

    description = ""
    display_name = "VAE Encode (Tiled)"
    category = "_for_testing"
    pixels = Link("IMAGE")
    vae = Link("VAE")
    tile_size = Int(512, min=64, max=4096, step=64)
    overlap = Int(64, min=0, max=4096, step=32)
    temporal_size, temporal_overlap = _temporal("encode")
    outputs = (Output("LATENT"),)

    @classmethod
    def run(cls, ctx: RunContext, pixels: torch.Tensor, vae: Vae, tile_size: int, overlap: int,
            temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[Latent]:
        f = vae.downscale
        height, width = pixels.shape[1] // f * f, pixels.shape[2] // f * f
        y, x = (pixels.shape[1] % f) // 2, (pixels.shape[2] % f) // 2
        pixels = pixels[:, y:y + height, x:x + width, :3]  # centre crop to the downscale, as ComfyUI's encode
        module = vae.module

        def encode_mean(tile: torch.Tensor) -> torch.Tensor:
            return module.encode(tile)[0]

        with torch.inference_mode(), ctx.services.models.on_device(module) as device:
            x_in = pixels.movedim(-1, 1).to(device=device, dtype=torch.float32) * 2.0 - 1.0  # (B, 3, H, W)
            t = tile_size
            on_tile = _progress(ctx, x_in.shape[0], tuple(x_in.shape[-2:]), [(t, t), (t // 2, t * 2), (t * 2, t // 2)],
                                overlap)
            latents = encode_tiled(encode_mean, x_in, tile_x=t, tile_y=t, overlap=overlap, downscale=f,
                                   latent_channels=vae.latent_channels, on_tile=on_tile)
        return (Latent(latents),)


NODES = (VAEDecodeTiled, VAEEncodeTiled)
