"""Stage 2: normalise the autoencoder's latent space to SD1's scale and encode the UNet's training pool.

SD1 samplers multiply raw VAE latents by 0.18215. So that our scaled latents have zero mean and unit variance per
channel (what the diffusion noise assumes), an affine map per channel is folded into the VAE's 1x1 convs:
quant_conv outputs z' = a·(z - m) with a = 1 / (0.18215·s) and post_quant_conv reads z = z'/a + m; m and s are the
per-channel mean and std of the training latents. The decoder's output for a given image is unchanged.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from safefiles import atomic_path
from tqdm import tqdm

from diffusion.vae import AutoencoderKL
from train.config import LATENT_SCALE, RunConfig
from train.loop import images_to_tensor
from train.scenes import render, sample_scene, split_combos

STAGE = 2


def fold_latent_affine(vae: AutoencoderKL, mean: torch.Tensor, std: torch.Tensor) -> AutoencoderKL:
    """A copy of `vae` whose raw latents are a·(z - mean) with a = 1 / (LATENT_SCALE·std) per channel ([C] each)."""
    out = AutoencoderKL(vae.config)
    out.load_state_dict(vae.state_dict())
    a = 1.0 / (LATENT_SCALE * std.double())  # (C,)
    c = vae.config.embed_dim
    with torch.no_grad():
        qw = vae.quant_conv.weight.double()  # (2C, 2Z, 1, 1): rows [0:C] mean, [C:2C] log-variance
        qb = vae.quant_conv.bias.double()
        new_w, new_b = qw.clone(), qb.clone()
        new_w[:c] = qw[:c] * a[:, None, None, None]
        new_b[:c] = (qb[:c] - mean.double()) * a
        new_b[c:] = qb[c:] + 2.0 * torch.log(a)  # var(a·z) = a²·var(z)
        out.quant_conv.weight.copy_(new_w.float())
        out.quant_conv.bias.copy_(new_b.float())
        pw = vae.post_quant_conv.weight.double()  # (Z, C, 1, 1)
        pb = vae.post_quant_conv.bias.double()
        out.post_quant_conv.weight.copy_((pw / a[None, :, None, None]).float())
        out.post_quant_conv.bias.copy_((pb + pw[:, :, 0, 0] @ mean.double()).float())
    return out.eval()


def pool_scenes(config: RunConfig):
    """The UNet's training scenes, in a fixed order from the seed."""
    rng = np.random.default_rng([config.seed, STAGE])
    combos = split_combos("train")
    return [sample_scene(rng, combos) for _ in range(config.diffusion.pool_size)]


def encode_pool(run_dir: Path, config: RunConfig, vae: AutoencoderKL) -> tuple[AutoencoderKL, dict[str, torch.Tensor]]:
    """(normalised VAE, pool) where pool holds scaled latent "mean"/"std" [N, 4, h, w] and "combo" indices [N]
    into split_combos("train"); cached in the run folder."""
    vae_path, pool_path = run_dir / "vae" / "normalised.safetensors", run_dir / "pool.safetensors"
    if vae_path.exists() and pool_path.exists():
        folded = AutoencoderKL(vae.config)
        folded.load_state_dict(load_file(str(vae_path)))
        return folded.eval(), load_file(str(pool_path))

    scenes = pool_scenes(config)
    combos = split_combos("train")
    index = {c: i for i, c in enumerate(combos)}
    means, stds = [], []
    chunk = 64
    with torch.no_grad():
        for start in tqdm(range(0, len(scenes), chunk), desc="encode pool", mininterval=10, ascii=True):
            x = images_to_tensor([render(s, config.arch.image_size) for s in scenes[start : start + chunk]])
            mean, logvar = vae.encode(x)
            means.append(mean)
            stds.append((0.5 * logvar).exp())
    raw_mean, raw_std = torch.cat(means), torch.cat(stds)  # (N, C, h, w)
    m = raw_mean.mean(dim=(0, 2, 3))
    s = raw_mean.std(dim=(0, 2, 3))
    folded = fold_latent_affine(vae, m, s)
    check = images_to_tensor([render(sc, config.arch.image_size) for sc in scenes[:16]])
    with torch.no_grad():
        before = vae.decode(vae.encode(check)[0])
        after = folded.decode(folded.encode(check)[0])
    drift = float((before - after).abs().max())
    if drift > 1e-3:
        raise RuntimeError(f"folding the latent scale changed the reconstruction by {drift:.2e}")
    # Scaled latents (what the UNet sees): LATENT_SCALE·a·(z - m) = (z - m) / s.
    pool = {
        "mean": ((raw_mean - m[None, :, None, None]) / s[None, :, None, None]).contiguous(),
        "std": (raw_std / s[None, :, None, None]).contiguous(),
        "combo": torch.tensor([index[sc.combo] for sc in scenes], dtype=torch.int64),
        "channel_mean": m,
        "channel_std": s,
    }
    with atomic_path(vae_path) as temp:
        save_file({k: v.contiguous() for k, v in folded.state_dict().items()}, str(temp))
    with atomic_path(pool_path) as temp:
        save_file(pool, str(temp))
    tqdm.write(
        f"latents: raw channel mean {[round(float(v), 3) for v in m]}, std {[round(float(v), 3) for v in s]}; "
        f"fold drift {drift:.1e}; posterior std (scaled) median {float(pool['std'].median()):.3g}"
    )
    assert math.isfinite(drift)
    return folded, pool
