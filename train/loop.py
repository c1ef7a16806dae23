"""Pieces every training stage shares: the learning-rate curve, seeded per-step randomness, the loss log."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch


def lr_at(step: int, *, base: float, warmup: int, total: int, floor: float = 0.05) -> float:
    """Linear warm-up over `warmup` steps, then a cosine from `base` down to `floor`·base at `total`
    (Loshchilov & Hutter 2017, "SGDR", without restarts)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_rng(seed: int, stage: int, step: int) -> np.random.Generator:
    """The numpy generator of one step: a function of (seed, stage, step) only, so a resumed run draws the same."""
    return np.random.default_rng([seed, stage, step])


def step_generator(seed: int, stage: int, step: int) -> torch.Generator:
    """The torch generator of one step (noise draws), keyed like step_rng."""
    key = int(np.random.default_rng([seed, stage, step, 7]).integers(0, 2**62))
    return torch.Generator().manual_seed(key)


class LossLog:
    """Appends one CSV row per logged step; a resumed run drops rows past its checkpoint first."""

    def __init__(self, path: Path, columns: list[str], *, resume_step: int) -> None:
        self.path = path
        self.columns = ["step", *columns]
        path.parent.mkdir(parents=True, exist_ok=True)
        rows: list[list[str]] = []
        if path.exists() and resume_step > 0:
            with path.open(newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header == self.columns:
                    rows = [r for r in reader if r and int(r[0]) < resume_step]
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.columns)
            writer.writerows(rows)

    def write(self, step: int, values: Mapping[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([step, *(f"{values[c]:.6g}" for c in self.columns[1:])])


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W, 3] images -> float32 [B, 3, H, W] in [-1, 1]."""
    batch = np.stack(images).astype(np.float32)  # (B, H, W, 3)
    return torch.from_numpy(batch).permute(0, 3, 1, 2) / 127.5 - 1.0


def tensor_to_images(x: torch.Tensor) -> list[np.ndarray]:
    """float [B, 3, H, W] in about [-1, 1] -> uint8 [H, W, 3] images."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(arr.permute(0, 2, 3, 1).numpy())  # (B, H, W, 3)
