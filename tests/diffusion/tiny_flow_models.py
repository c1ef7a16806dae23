"""Write tiny random Flux.1 parts in the released files' layouts (the same key names, fewer blocks, small widths):
a diffusion model (dev: guidance_in; schnell: none), the 16-channel VAE without quant convs (ae.safetensors),
CLIP-L (``text_model.*``, no position_ids, fp16) and T5 v1.1 (with the duplicate ``encoder.embed_tokens.weight``,
fp16). The vocabularies are full size (the real tokenizers' ids), everything else is narrow; all files together
are a few MB and take well under a second to write.

    from tests.diffusion.tiny_flow_models import write_tiny_flux_parts
    parts = write_tiny_flux_parts(folder)  # parts.flux / parts.vae / parts.clip_l / parts.t5 are the modules
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffusion.dit_layers import RMSNorm
from diffusion.flux import Flux, FluxConfig
from diffusion.mmdit import MMDiT, MMDiTConfig
from diffusion.t5 import DUPLICATE_EMBEDDING, T5Config, T5Encoder, T5LayerNorm
from diffusion.text_encoders import TextEncoder, TextEncoderConfig, build_text_encoder, checkpoint_state_dict
from diffusion.vae import AutoencoderKL, VAEConfig

TEXT_WIDTH = 32
TINY_FLUX = FluxConfig(hidden_size=64, num_heads=2, depth=1, depth_single_blocks=2, context_in_dim=TEXT_WIDTH,
                       vec_in_dim=TEXT_WIDTH)
TINY_AE = VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=16, embed_dim=16, use_quant_conv=False)
TINY_CLIP_L = TextEncoderConfig("clip_l_hf", width=TEXT_WIDTH, layers=2, heads=1, intermediate=64)  # 64-wide heads rule
TINY_T5 = T5Config(d_model=TEXT_WIDTH, num_layers=2, num_heads=2, d_kv=16, d_ff=64)


@dataclass(frozen=True)
class TinyFluxParts:
    """The files written and the fp32 modules whose weights they hold (rounded to the files' dtypes)."""

    flux_path: Path
    schnell_path: Path
    vae_path: Path
    clip_l_path: Path
    t5_path: Path
    flux: Flux
    vae: AutoencoderKL
    clip_l: TextEncoder
    t5: T5Encoder


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Norm scales near 1, small biases, weights ~ N(0, 1/fan_in): activations stay O(1) through the blocks."""
    gen = torch.Generator().manual_seed(seed)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm, RMSNorm, T5LayerNorm)
    with torch.no_grad():
        for child in module.modules():
            for name, p in child.named_parameters(recurse=False):
                if isinstance(child, norms) and name != "bias":
                    p.copy_(1.0 + 0.05 * torch.randn(p.shape, generator=gen))
                elif p.ndim == 1:
                    p.copy_(0.02 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * p[0].numel() ** -0.5)


def _round_trip(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Round the weights to the file's dtype, so the module equals what loading the file gives in fp32."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(dtype).float())


def write_tiny_flux_parts(folder: str | Path, *, seed: int = 0) -> TinyFluxParts:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flux = Flux(TINY_FLUX).eval()
    _randomize(flux, seed)
    _round_trip(flux, torch.bfloat16)
    flux_path = folder / "tiny-flux1-dev.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in flux.state_dict().items()}, flux_path)
    schnell = Flux(FluxConfig(**{**TINY_FLUX.__dict__, "guidance_embed": False})).eval()
    _randomize(schnell, seed + 1)
    schnell_path = folder / "tiny-flux1-schnell.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in schnell.state_dict().items()}, schnell_path)

    vae = AutoencoderKL(TINY_AE).eval()
    _randomize(vae, seed + 2)
    vae_path = folder / "tiny-ae.safetensors"
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, vae_path)

    clip_l = build_text_encoder(TINY_CLIP_L).eval()
    _randomize(clip_l, seed + 3)
    _round_trip(clip_l, torch.float16)
    clip_path = folder / "tiny-clip_l.safetensors"
    clip_sd = {k: v.to(torch.float16).contiguous() for k, v in checkpoint_state_dict(clip_l, "", TINY_CLIP_L).items()
               if not k.endswith("position_ids")}
    save_file(clip_sd, clip_path)

    t5 = T5Encoder(TINY_T5).eval()
    _randomize(t5, seed + 4)
    _round_trip(t5, torch.float16)
    t5_path = folder / "tiny-t5xxl_fp16.safetensors"
    t5_sd = {k: v.to(torch.float16).contiguous() for k, v in t5.state_dict().items()}
    t5_sd[DUPLICATE_EMBEDDING] = t5_sd["shared.weight"].clone()
    save_file(t5_sd, t5_path)
    return TinyFluxParts(flux_path, schnell_path, vae_path, clip_path, t5_path, flux, vae, clip_l, t5)


# ---- SD3 / SD3.5 ------------------------------------------------------------------------------------------------

TINY_MMDIT = MMDiTConfig(hidden_size=128, num_heads=2, depth=2, adm_in_channels=32 + 48, context_in_dim=96,
                         pos_embed_max_size=16, x_block_self_attn_layers=(0,))
TINY_CLIP_G = TextEncoderConfig("clip_l_hf", width=48, layers=2, heads=1, intermediate=96, projection_dim=48,
                                activation="gelu", pad_token=0)
TINY_T5_SD3 = T5Config(d_model=96, num_layers=2, num_heads=2, d_kv=16, d_ff=64)


@dataclass(frozen=True)
class TinySD3Parts:
    mmdit_path: Path
    clip_g_path: Path
    t5_path: Path
    checkpoint_path: Path
    """A single-file checkpoint of all of it (model.diffusion_model., first_stage_model., text_encoders.*)."""
    mmdit: MMDiT
    clip_g: TextEncoder
    t5: T5Encoder


def write_tiny_sd3_parts(folder: str | Path, flux_parts: TinyFluxParts, *, seed: int = 10,
                         pos_embed_max_size: int = 16) -> TinySD3Parts:
    """SD3.5-medium-layout parts; CLIP-L and the VAE are the Flux set's (the same architectures). The position
    table covers pos_embed_max_size² patches (16: up to 256² pixels; SD3.5 medium's real 384 covers 6144²)."""
    folder = Path(folder)
    mmdit = MMDiT(dataclasses.replace(TINY_MMDIT, pos_embed_max_size=pos_embed_max_size)).eval()
    _randomize(mmdit, seed)
    with torch.no_grad():
        mmdit.pos_embed.copy_(0.5 * torch.randn(mmdit.pos_embed.shape, generator=torch.Generator().manual_seed(seed)))
    _round_trip(mmdit, torch.bfloat16)
    mmdit_sd = {k: v.to(torch.bfloat16).contiguous() for k, v in mmdit.state_dict().items()}
    mmdit_path = folder / "tiny-sd3.5_medium.safetensors"
    save_file({"model.diffusion_model." + k: v for k, v in mmdit_sd.items()}, mmdit_path)

    clip_g = build_text_encoder(TINY_CLIP_G).eval()
    _randomize(clip_g, seed + 1)
    _round_trip(clip_g, torch.float16)
    clip_g_sd = {k: v.to(torch.float16).contiguous() for k, v in checkpoint_state_dict(clip_g, "", TINY_CLIP_G).items()
                 if not k.endswith("position_ids")}
    clip_g_path = folder / "tiny-clip_g.safetensors"
    save_file(clip_g_sd, clip_g_path)

    t5 = T5Encoder(TINY_T5_SD3).eval()
    _randomize(t5, seed + 2)
    _round_trip(t5, torch.float16)
    t5_sd = {k: v.to(torch.float16).contiguous() for k, v in t5.state_dict().items()}
    t5_path = folder / "tiny-t5xxl-sd3.safetensors"
    save_file(t5_sd, t5_path)

    from safetensors.torch import load_file

    checkpoint = {"model.diffusion_model." + k: v for k, v in mmdit_sd.items()}
    checkpoint.update({"first_stage_model." + k: v for k, v in load_file(flux_parts.vae_path).items()})
    for name, sd in (("clip_l", load_file(flux_parts.clip_l_path)), ("clip_g", clip_g_sd), ("t5xxl", t5_sd)):
        checkpoint.update({f"text_encoders.{name}.transformer.{k}": v for k, v in sd.items()})
    checkpoint_path = folder / "tiny-sd3.5_medium_incl_clips.safetensors"
    save_file(checkpoint, checkpoint_path)
    return TinySD3Parts(mmdit_path, clip_g_path, t5_path, checkpoint_path, mmdit, clip_g, t5)


def write_tiny_flux_checkpoint(path: str | Path, parts: TinyFluxParts) -> Path:
    """ComfyUI's all-in-one Flux layout: model.diffusion_model.*, first_stage_model.*, text_encoders.{clip_l,t5xxl}
    .transformer.* (the same tensors as the separate files)."""
    from safetensors.torch import load_file

    path = Path(path)
    checkpoint = {"model.diffusion_model." + k: v for k, v in load_file(parts.flux_path).items()}
    checkpoint.update({"first_stage_model." + k: v for k, v in load_file(parts.vae_path).items()})
    for name, file in (("clip_l", parts.clip_l_path), ("t5xxl", parts.t5_path)):
        checkpoint.update({f"text_encoders.{name}.transformer.{k}": v for k, v in load_file(file).items()})
    save_file(checkpoint, path)
    return path
