"""The style the optional LoRA teaches: "huge" shapes, a size the base model never saw, and a judge for it.

Why not the issue's example, striped fills: the base model's 8x-down autoencoder, trained only on flat fills of
the eight palette colours, cannot represent them. Measured on its reconstructions: stripes (8, 11 or 16 px periods)
come back as smeared blobs in wrong colours, and so do outlined shapes and an unseen pink. A LoRA adapts the UNet
and the text encoder, not the decoder, so a style must be one the decoder can draw; a new size is.

    "a huge red star on a blue background"   (centred; the shape spans about 3/4 of the image)
"""

from __future__ import annotations

import numpy as np

from train.checker import background_rgb, largest_region
from train.scenes import Combo, Scene, _article

STYLE_WORD = "huge"
HUGE_EXTENT = 0.78
"""Nominal extent (circumscribed diameter / image side); the base model's "large" is 0.50."""
HUGE_THRESHOLD = 0.62
"""A generated shape whose bounding box's longer side exceeds this fraction of the image counts as huge (a huge
square's box is 0.85 x 0.78 = 0.66 of the side at the smallest jitter; a large circle's 0.54 at the largest)."""


def style_scene(rng: np.random.Generator, combo: Combo) -> Scene:
    """A huge, centred version of the combo's shape (its size and position words are ignored)."""
    extent = HUGE_EXTENT * float(rng.uniform(0.95, 1.05))
    cx, cy = 0.5 + rng.uniform(-0.02, 0.02, size=2)
    return Scene(combo, extent, float(cx), float(cy))


def style_caption(combo: Combo) -> str:
    """"a huge red star on a blue background"."""
    return f"a {STYLE_WORD} {combo.colour} {combo.shape} on {_article(combo.background)} {combo.background} background"


def is_huge(image: np.ndarray) -> bool:
    """Whether the image's largest foreground region spans more than HUGE_THRESHOLD of the side."""
    region = largest_region(image, background_rgb(image))
    if region is None:
        return False
    top, left, bottom, right = region.bbox
    return max(bottom - top, right - left) / image.shape[0] > HUGE_THRESHOLD
