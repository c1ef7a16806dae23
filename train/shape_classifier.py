"""A tiny CNN that names the shape of a foreground mask, trained in seconds on generated scenes.

Its training masks go through the same segmentation as the judged images (checker.largest_region), from renders
degraded the way a generated image is (blur, noise, a slightly skewed outline), so it judges imperfect shapes by
the nearest class rather than failing on them.

    .venv/bin/python -m train.shape_classifier      # retrain (seeded) and overwrite the committed weights
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from safefiles import atomic_path
from scipy import ndimage
from torch import nn

from train.checker import MASK_SIZE, background_rgb, largest_region, mask_crop
from train.scenes import SHAPES, PALETTE, all_combos, render, sample_scene

WEIGHTS = Path(__file__).with_name("shape_classifier.safetensors")
IMAGE_SIZES = (64, 128)
"""Renders at both sizes: the classifier judges the built-in model's 64x64 images and larger ones alike."""


class ShapeNet(nn.Module):
    """[N, 1, 32, 32] mask -> [N, len(SHAPES)] logits: three conv/pool stages and a linear head (~17k params)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
        )
        self.head = nn.Linear(32 * 4 * 4, len(SHAPES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))  # (N, 32, 4, 4) -> (N, 512) -> (N, n_shapes)


def classify_masks(model: nn.Module, masks: np.ndarray) -> list[str]:
    """Shape names for float [N, 32, 32] masks."""
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[:, None])
    return [SHAPES[i] for i in logits.argmax(dim=1).tolist()]


def degraded_mask(rng: np.random.Generator) -> tuple[np.ndarray, int] | None:
    """One training example: a rendered scene, blurred, noised and skewed, segmented and cropped; with its label."""
    scene = sample_scene(rng, _COMBOS)
    image_size = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    image = render(scene, image_size).astype(np.float32)
    sigma = float(rng.uniform(0.0, 1.6)) * (image_size / 128) ** 0.5  # relatively more blur on smaller images
    image = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))
    image = image + rng.normal(0.0, float(rng.uniform(0.0, 10.0)), image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    region = largest_region(image, background_rgb(image))
    if region is None:
        return None
    crop = mask_crop(region.mask, region.bbox)
    # A generated outline is never exact: a small random rotation and per-axis stretch.
    angle = float(rng.uniform(-10, 10))
    sx, sy = rng.uniform(0.88, 1.12, size=2)
    c = MASK_SIZE / 2
    cos, sin = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    # PIL's affine maps output (x, y) to input (a x + b y + c0, d x + e y + f0): inverse rotate-then-stretch about the centre.
    a, b, d, e = cos / sx, sin / sx, -sin / sy, cos / sy
    coeffs = (a, b, c - a * c - b * c, d, e, c - d * c - e * c)
    warped = Image.fromarray(crop).transform((MASK_SIZE, MASK_SIZE), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    return np.asarray(warped, dtype=np.float32), SHAPES.index(scene.combo.shape)


# Every combo, held-out ones included: the classifier judges shapes, not captions, so it may see them all.
_COMBOS = all_combos()


def make_examples(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` (mask, label) pairs from a seeded stream: float32 [count, 32, 32] and int64 [count]."""
    rng = np.random.default_rng(seed)
    masks, labels = [], []
    while len(masks) < count:
        example = degraded_mask(rng)
        if example is not None:
            masks.append(example[0])
            labels.append(example[1])
    return np.stack(masks), np.asarray(labels, dtype=np.int64)


def train_classifier(seed: int = 0, count: int = 4000, steps: int = 600, batch: int = 128) -> ShapeNet:
    """Train a ShapeNet from scratch on `count` generated examples (a few seconds on two cores)."""
    masks, labels = make_examples(seed, count)
    x, y = torch.from_numpy(masks)[:, None], torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # parameter initialisation uses the global generator; keep it local and seeded
        model = ShapeNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def load_classifier(path: Path = WEIGHTS) -> ShapeNet:
    """The committed classifier weights."""
    model = ShapeNet()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    model = train_classifier(args.seed)
    masks, labels = make_examples(args.seed + 1, 1200)
    predicted = classify_masks(model, masks)
    acc = np.mean([p == SHAPES[l] for p, l in zip(predicted, labels)])
    with atomic_path(args.out) as temp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(temp))
    print(f"held-out accuracy {acc:.4f} on {len(labels)} degraded masks; saved {args.out}")


if __name__ == "__main__":
    main()
