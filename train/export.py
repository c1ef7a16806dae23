"""Stage 4: write the trained networks as one SD1-layout .safetensors (fp16) and check it loads back.

The file is written by the library's `save_sd1_checkpoint`, which refuses modules that detection would not read
back identically; it is then loaded with `load_checkpoint` (detection from shapes alone) and the loaded UNet and
text encoder are compared with the trained ones.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from diffusion.checkpoint import load_checkpoint, save_sd1_checkpoint
from diffusion.previews import METADATA_KEY
from diffusion.tokenizer import ClipTokenizer
from diffusion.vae import AutoencoderKL
from train.config import LATENT_SCALE, RunConfig
from train.latents import pool_scenes
from train.loop import images_to_tensor
from train.scenes import render
from train.unet_stage import Networks

MAX_BYTES = 25_000_000


def latent_rgb_map(vae: AutoencoderKL, config: RunConfig, count: int = 256) -> dict[str, list]:
    """Least-squares linear map from the scaled latent (4 channels) to RGB in [-1, 1] at latent resolution, fitted on
    training scenes: the live-preview factors the loader reads from the file's metadata."""
    scenes = pool_scenes(config)[:count]
    x = images_to_tensor([render(s, config.arch.image_size) for s in scenes])
    with torch.no_grad():
        z = vae.encode(x)[0] * LATENT_SCALE  # (N, 4, h, w) scaled latents
    f = config.arch.image_size // z.shape[-1]
    rgb = torch.nn.functional.avg_pool2d(x, f)  # (N, 3, h, w)
    a = torch.cat([z, torch.ones_like(z[:, :1])], 1).permute(0, 2, 3, 1).reshape(-1, 5).double()  # (N·h·w, 5)
    b = rgb.permute(0, 2, 3, 1).reshape(-1, 3).double()
    solution = torch.linalg.lstsq(a, b).solution  # (5, 3)
    return {"factors": [[round(float(v), 5) for v in row] for row in solution[:4]],
            "bias": [round(float(v), 5) for v in solution[4]]}


def _half(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).half().eval()


def export_checkpoint(out: Path, config: RunConfig, *, vae: AutoencoderKL, nets: Networks, run_dir: Path,
                      extra_metadata: dict[str, str] | None = None) -> dict[str, float]:
    """Save the fp16 SD1-layout file, reload it through detection, and return checks (size, max differences)."""
    text = nets.text.export()
    metadata = {
        "modelspec.title": "chisel-shapes",
        "modelspec.architecture": "stable-diffusion-v1",
        "modelspec.description": "Chisel's built-in text-to-image model of simple coloured shapes (train/run.py).",
        "chisel.training": json.dumps({"seed": config.seed, "run": run_dir.name, "config": json.loads(config.to_json())}),
        METADATA_KEY: json.dumps(latent_rgb_map(vae, config)),
        **(extra_metadata or {}),
    }
    save_sd1_checkpoint(out, unet=_half(nets.unet), vae=_half(vae), text_encoder=_half(text), metadata=metadata)
    size = out.stat().st_size
    if size > MAX_BYTES:
        raise RuntimeError(f"{out} is {size:,} bytes, over the {MAX_BYTES:,} byte budget")

    loaded = load_checkpoint(out)
    if loaded.family.name != "sd1":
        raise RuntimeError(f"{out} was detected as {loaded.family.name}, not sd1")
    gen = torch.Generator().manual_seed(0)
    latent = config.arch.latent_size
    x = torch.randn(2, 4, latent, latent, generator=gen)
    t = torch.tensor([999.0, 500.0])
    tokens = ClipTokenizer().batch(["a small red star in the top left on a blue background", ""])
    with torch.no_grad():
        ctx_trained = text.encode(tokens).hidden
        ctx_loaded = loaded.text_encoders["clip_l"].module.encode(tokens).hidden
        eps_trained = nets.unet(x, t, ctx_trained)
        eps_loaded = loaded.unet(x, t, ctx_loaded)
        z = torch.randn(1, 4, latent, latent, generator=gen)
        img_trained = vae.decode(z)
        img_loaded = loaded.vae.decode(z)
    checks = {
        "bytes": float(size),
        "text_max_abs_diff": float((ctx_trained - ctx_loaded).abs().max()),
        "unet_max_abs_diff": float((eps_trained - eps_loaded).abs().max()),
        "vae_max_abs_diff": float((img_trained - img_loaded).abs().max()),
    }
    print(f"exported {out} ({size / 1e6:.2f} MB): " + ", ".join(f"{k} {v:.3g}" for k, v in checks.items()), flush=True)
    if max(checks["text_max_abs_diff"], checks["unet_max_abs_diff"], checks["vae_max_abs_diff"]) > 0.05:
        raise RuntimeError(f"the loaded checkpoint differs from the trained networks beyond fp16 rounding: {checks}")
    return checks
