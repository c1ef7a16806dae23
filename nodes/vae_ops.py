"""Running a VAE handle on image batches: device placement, bounded memory, and the IMAGE <-> latent layouts.

IMAGE is [B, H, W, C] in [0, 1] (ComfyUI's layout); the autoencoder works on [B, 3, H, W] in [-1, 1].
Large batches are processed in slices so memory stays bounded; on a GPU out-of-memory error the slice is retried
with the tiled decoder/encoder, which needs far less activation memory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffusion.handles import Vae
from diffusion.memory import ModelManager, is_out_of_memory

# Pixels per slice: a 512x512 image is 262,144 pixels; the SD VAE decoder peaks near 1.7 GB for one on the CPU.
SLICE_PIXELS = 2 * 512 * 512


def _slices(batch: int, pixels_per_item: int) -> list[slice]:
    step = max(1, SLICE_PIXELS // max(1, pixels_per_item))
    return [slice(i, min(batch, i + step)) for i in range(0, batch, step)]


def decode_images(models: ModelManager, vae: Vae, latents: torch.Tensor,
                  check_interrupted: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Raw latents [B, C, h, w] -> images [B, h*f, w*f, 3] float32 in [0, 1], on the latents' device."""
    module = vae.module
    out = []
    with torch.inference_mode(), models.on_device(module) as device:
        pixels = latents.shape[-2] * latents.shape[-1] * vae.downscale ** 2
        for part in _slices(latents.shape[0], pixels):
            check_interrupted()
            z = latents[part].to(device)
            try:
                decoded = module.decode(z)
            except Exception as error:  # noqa: BLE001 - only out-of-memory is retried, anything else re-raised
                if not is_out_of_memory(error):
                    raise
                torch.cuda.empty_cache()
                decoded = module.decode_tiled(z)
            # [-1, 1] -> [0, 1]; [b, 3, H, W] -> [b, H, W, 3]
            out.append(((decoded.float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).to(latents.device))
    return torch.cat(out)


def encode_images(models: ModelManager, vae: Vae, images: torch.Tensor) -> torch.Tensor:
    """Images [B, H, W, C] in [0, 1] (H, W multiples of the downscale) -> raw latents [B, C, H/f, W/f] (the
    posterior mean: deterministic, as an encode should be)."""
    module = vae.module
    out = []
    with torch.inference_mode(), models.on_device(module) as device:
        for part in _slices(images.shape[0], images.shape[1] * images.shape[2]):
            x = images[part, ..., :3].movedim(-1, 1).to(device=device, dtype=torch.float32) * 2.0 - 1.0
            try:
                mean, _ = module.encode(x)
            except Exception as error:  # noqa: BLE001 - only out-of-memory is retried
                if not is_out_of_memory(error):
                    raise
                torch.cuda.empty_cache()
                mean = module.encode_tiled(x)
            out.append(mean.float())
    return torch.cat(out)
