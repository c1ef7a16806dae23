"""Write tiny random SD1-layout checkpoints (real key names, tiny widths) for tests across the project.

    from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint
    tiny = write_tiny_sd1_checkpoint(tmp_path / "tiny.safetensors")
    # tiny.unet / tiny.vae / tiny.text_encoder are the modules whose weights the file holds.

The file loads with `nodes.diffusion.checkpoint.load_checkpoint` as family "sd1". The VAE downscales by 8 like SD's, so
image sizes and latent sizes relate as in ComfyUI. A few MB; writing it takes well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nodes.diffusion.checkpoint import save_sd1_checkpoint
from nodes.diffusion.text_encoders import TextEncoder, TextEncoderConfig, build_text_encoder, default_heads
from nodes.diffusion.unet import UNetConfig, UNetModel
from nodes.diffusion.vae import AutoencoderKL, VAEConfig


@dataclass(frozen=True)
class TinyCheckpoint:
    """The modules written to the file (fp32, CPU, eval mode)."""

    path: Path
    unet: UNetModel
    vae: AutoencoderKL
    text_encoder: TextEncoder


def tiny_configs(
    *, model_channels: int = 32, context_dim: int = 32, vae_ch_mult: tuple[int, ...] = (1, 1, 1, 1)
) -> tuple[UNetConfig, VAEConfig, TextEncoderConfig]:
    """SD1-layout configurations with tiny widths (two UNet levels with attention, a 4-level VAE)."""
    unet = UNetConfig(
        model_channels=model_channels,
        channel_mult=(1, 2),
        num_res_blocks=1,
        transformer_depth=(1, 1),
        transformer_depth_middle=1,
        transformer_depth_output=(1, 1),
        context_dim=context_dim,
        num_heads=8,
    )
    vae = VAEConfig(ch=32, ch_mult=vae_ch_mult, num_res_blocks=1)
    text = TextEncoderConfig(
        "clip_l_hf", width=context_dim, layers=2, heads=default_heads(context_dim), intermediate=4 * context_dim
    )
    return unet, vae, text


def write_tiny_sd1_checkpoint(
    path: str | Path,
    *,
    seed: int = 0,
    model_channels: int = 32,
    context_dim: int = 32,
    vae_ch_mult: tuple[int, ...] = (1, 1, 1, 1),
    metadata: dict[str, str] | None = None,
) -> TinyCheckpoint:
    """Build seeded random tiny SD1-layout modules, write them to `path` (.safetensors) and return them.

    Every parameter gets seeded noise on top of its default init, so no two tensors are equal by accident (a swapped
    key would show in a round-trip comparison). The global RNG state is left as it was.
    """
    unet_cfg, vae_cfg, text_cfg = tiny_configs(
        model_channels=model_channels, context_dim=context_dim, vae_ch_mult=vae_ch_mult
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, vae = UNetModel(unet_cfg), AutoencoderKL(vae_cfg)
        text_encoder = build_text_encoder(text_cfg)
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for module in (unet, vae, text_encoder):
                for param in module.parameters():
                    param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    path = Path(path)
    save_sd1_checkpoint(path, unet=unet, vae=vae, text_encoder=text_encoder, metadata=metadata)
    return TinyCheckpoint(path, unet, vae, text_encoder)
