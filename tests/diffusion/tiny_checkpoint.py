"""Write tiny random SD1-layout checkpoints (real key names, tiny widths) for tests across the project.

    from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint
    tiny = write_tiny_sd1_checkpoint(tmp_path / "tiny.safetensors")
    # tiny.unet / tiny.vae / tiny.text_encoder are the modules whose weights the file holds.

The file loads with `diffusion.checkpoint.load_checkpoint` as family "sd1". The VAE downscales by 8 like SD's, so
image sizes and latent sizes relate as in ComfyUI. A few MB; writing it takes well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from diffusion.checkpoint import save_sd1_checkpoint
from diffusion.text_encoders import TextEncoder, TextEncoderConfig, build_text_encoder, default_heads
from diffusion.unet import UNetConfig, UNetModel
from diffusion.vae import AutoencoderKL, VAEConfig


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


def write_tiny_family_checkpoint(path: str | Path, family: str, *, seed: int = 0) -> Path:
    """A tiny random single file in the SD2.x ("sd2": OpenCLIP-H slot, linear projections, 64-wide heads), SDXL
    ("sdxl": CLIP-L + OpenCLIP-bigG slots, label_emb with SDXL's 2816 adm inputs) or SDXL refiner ("sdxl_refiner":
    the OpenCLIP-bigG slot alone, 2560 adm inputs) key layout, detected as that
    family by `load_checkpoint` from its shapes alone. SD1: use write_tiny_sd1_checkpoint."""
    from diffusion.checkpoint import UNET_PREFIX, VAE_PREFIX
    from diffusion.families import SD2, SDXL, SDXL_REFINER
    from diffusion.safetensors_io import save_atomic
    from diffusion.text_encoders import checkpoint_state_dict

    open_clip = dict(layers=2, heads=1, intermediate=128, activation="gelu", pad_token=0)
    if family == "sd2":
        slots = SD2.text_encoders
        encoders = [TextEncoderConfig("open_clip", width=64, projection_dim=64, **open_clip)]
        adm = None
    elif family == "sdxl":
        slots = SDXL.text_encoders
        encoders = [TextEncoderConfig("clip_l_hf", width=32, layers=2, heads=default_heads(32), intermediate=128),
                    TextEncoderConfig("open_clip", width=32, projection_dim=1280, **open_clip)]
        adm = 1280 + 6 * 256  # clip_g's pooled projection + six 256-wide size embeddings = SDXL's 2816
    elif family == "sdxl_refiner":
        slots = SDXL_REFINER.text_encoders
        encoders = [TextEncoderConfig("open_clip", width=32, projection_dim=1280, **open_clip)]
        adm = 1280 + 5 * 256  # clip_g's pooled projection + five size/aesthetic embeddings = the refiner's 2560
    else:
        raise ValueError(f"unknown family {family!r}")
    unet_cfg = UNetConfig(model_channels=64, channel_mult=(1, 2), num_res_blocks=1, transformer_depth=(1, 1),
                          transformer_depth_middle=1, transformer_depth_output=(1, 1),
                          context_dim=sum(c.width for c in encoders), num_heads=None, num_head_channels=64,
                          use_linear_in_transformer=True, adm_in_channels=adm)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, vae = UNetModel(unet_cfg), AutoencoderKL(VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1))
        text = [build_text_encoder(c) for c in encoders]
    tensors = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
    tensors |= {VAE_PREFIX + k: v for k, v in vae.state_dict().items()}
    for slot, module, cfg in zip(slots, text, encoders):
        tensors |= checkpoint_state_dict(module, slot.prefix, cfg)
    path = Path(path)
    save_atomic(path, tensors)
    return path
