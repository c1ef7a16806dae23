"""The "striped" style the optional LoRA teaches: diagonal stripes across the shape, and a judge for them.

A striped shape is painted in its colour with diagonal bands of a stripe colour (white; black where the shape or the
background is white; grey for black-and-white scenes), so the shape stays one connected foreground region and the
ordinary checker still judges its colour and outline. Captions put the word after the colour:

    "a small red striped star in the top left on a blue background"
"""

from __future__ import annotations

import numpy as np

from train.checker import background_rgb, largest_region
from train.scenes import PALETTE, POSITION_PHRASE, Combo, Scene, _article, render_alpha

STYLE_WORD = "striped"
STRIPE_PERIOD = 1 / 8
"""Distance between stripes along the image axes, as a fraction of the side (8 px at 64x64)."""
STRIPE_WIDTH = 0.4
"""Fraction of each period painted in the stripe colour."""
GREY = (128, 128, 128)


def stripe_rgb(combo: Combo) -> tuple[int, int, int]:
    """The stripe colour: white, else black, else grey; never the shape's or the background's colour."""
    for name in ("white", "black"):
        if name not in (combo.colour, combo.background):
            return PALETTE[name]
    return GREY


def striped_caption(combo: Combo) -> str:
    """The full caption with the style word: "a small red striped star in the top left on a blue background"."""
    words = [combo.size, combo.colour, STYLE_WORD, combo.shape, POSITION_PHRASE[combo.position],
             f"on {_article(combo.background)} {combo.background} background"]
    return f"{_article(words[0])} " + " ".join(words)


def stripe_pattern(size: int, *, supersample: int = 4) -> np.ndarray:
    """Coverage of the diagonal stripes on a size×size grid, float32 in [0, 1] (antialiased)."""
    big = size * supersample
    y, x = np.mgrid[0:big, 0:big].astype(np.float32)
    phase = ((x + y) / big / STRIPE_PERIOD) % 1.0  # (big, big), 0..1 along each period
    hi = (phase < STRIPE_WIDTH).astype(np.float32)
    return hi.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def render_striped(scene: Scene, size: int) -> np.ndarray:
    """The scene with a striped shape, uint8 [size, size, 3]."""
    alpha = render_alpha(scene, size)[:, :, None]  # (H, W, 1)
    stripes = stripe_pattern(size)[:, :, None]
    fg = np.asarray(PALETTE[scene.combo.colour], dtype=np.float32)
    stripe = np.asarray(stripe_rgb(scene.combo), dtype=np.float32)
    bg = np.asarray(PALETTE[scene.combo.background], dtype=np.float32)
    shape = fg * (1 - stripes) + stripe * stripes
    return np.clip(np.rint(bg * (1 - alpha) + shape * alpha), 0, 255).astype(np.uint8)


def stripe_fraction(image: np.ndarray, combo: Combo) -> float:
    """Fraction of the largest foreground region's pixels nearer the stripe colour than the shape colour (0 when
    there is no region). A solid shape scores near 0, a striped one near STRIPE_WIDTH."""
    region = largest_region(image, background_rgb(image))
    if region is None:
        return 0.0
    pixels = image[region.mask].astype(np.float32)  # (N, 3)
    fg = np.asarray(PALETTE[combo.colour], dtype=np.float32)
    stripe = np.asarray(stripe_rgb(combo), dtype=np.float32)
    nearer = ((pixels - stripe) ** 2).sum(axis=1) < ((pixels - fg) ** 2).sum(axis=1)
    return float(nearer.mean())


STRIPED_THRESHOLD = 0.15
"""stripe_fraction above which an image counts as striped."""
