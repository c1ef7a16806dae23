"""Adherence checks on the networks being trained (before export): held-out captions through a small Euler sampler.

The evaluation of record (train/eval.py) runs the exported checkpoint through the library's loader and samplers;
this one only needs the modules in memory, so the training loop can report progress cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from diffusion.model_sampling import DiscreteSampling
from diffusion.noise import initial_noise
from diffusion.vae import AutoencoderKL
from train.checker import accuracy, judge_batch
from train.config import LATENT_SCALE
from train.diffusion import sample_euler_cfg
from train.loop import tensor_to_images
from train.scenes import Combo, split_combos

EVAL_SEED = 1234


def eval_combos(count: int, seed: int = EVAL_SEED) -> list[Combo]:
    """`count` held-out combos, a fixed choice for a given seed (never seen in training)."""
    held_out = split_combos("held_out")
    order = np.random.default_rng(seed).permutation(len(held_out))
    return [held_out[int(i)] for i in order[:count]]


def noise_for(seeds: Sequence[int], shape: tuple[int, int, int]) -> torch.Tensor:
    """[len(seeds), C, h, w]: each image's noise is what a batch-1 KSampler with that seed would draw."""
    return torch.cat([initial_noise((1, *shape), seed) for seed in seeds])


def generate(
    eps_model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    encode_text: Callable[[list[str]], torch.Tensor],
    vae: AutoencoderKL,
    captions: Sequence[str],
    seeds: Sequence[int],
    *,
    latent_size: int,
    cfg: float,
    steps: int = 20,
    batch: int = 50,
) -> list[np.ndarray]:
    """uint8 images for (caption, seed) pairs, sampled with Euler + CFG and decoded."""
    sampling = DiscreteSampling.linear()
    out: list[np.ndarray] = []
    for start in range(0, len(captions), batch):
        part = list(captions[start : start + batch])
        cond = encode_text(part)
        uncond = encode_text([""] * len(part))
        noise = noise_for(seeds[start : start + batch], (4, latent_size, latent_size))
        x0 = sample_euler_cfg(eps_model, cond, uncond, noise, sampling=sampling, steps=steps, cfg=cfg)
        with torch.no_grad():
            out += tensor_to_images(vae.decode(x0 / LATENT_SCALE))
    return out


def adherence(
    images: Sequence[np.ndarray], combos: Sequence[Combo], classifier: torch.nn.Module
) -> dict[str, float]:
    return accuracy(judge_batch(images, classifier), combos)


def contact_sheet(images: Sequence[np.ndarray], columns: int = 8) -> Image.Image:
    """Images side by side, `columns` per row (for eyeballing a run)."""
    rows = [np.concatenate(list(images[i : i + columns]), axis=1) for i in range(0, len(images), columns)]
    width = rows[0].shape[1]
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return Image.fromarray(np.concatenate(rows, axis=0))
