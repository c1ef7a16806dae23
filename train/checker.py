"""Deterministic judge of a generated scene: which colours, which shape, where, how big.

- background: the palette colour nearest to the median of the image's border pixels;
- foreground: the largest connected region of pixels far from that background colour; its colour is the palette
  colour nearest to the median of its interior;
- shape: the region's mask, cropped and scaled to 32x32, through a small classifier trained on generated masks
  (train/shape_classifier.py);
- position and size: the region's bounding box, snapped to the caption grammar's 3x3 grid and three sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from train.scenes import COLOURS, PALETTE, POSITIONS, SIZE_EXTENT, SIZES, Combo

BORDER_PX = 3
FOREGROUND_DISTANCE = 60.0
"""RGB distance from the background colour above which a pixel is foreground (palette entries are >= 100 apart)."""
MIN_REGION_FRACTION = 0.003
"""A region smaller than this fraction of the image is noise, not a shape."""
MASK_SIZE = 32
"""Side of the square mask the shape classifier reads."""

_PALETTE = np.asarray([PALETTE[c] for c in COLOURS], dtype=np.float32)  # (n_colours, 3)

# Visible bounding-box side relative to the nominal extent, per shape (a square's side is 0.85 of its circle's).
_BOX_FACTOR = {"circle": 1.0, "ring": 1.0, "square": 0.85, "triangle": 0.87, "star": 0.95, "cross": 0.95}


@dataclass(frozen=True)
class Region:
    """The largest foreground region of an image."""

    mask: np.ndarray
    """bool [H, W]."""
    colour: str
    bbox: tuple[int, int, int, int]
    """(top, left, bottom, right), bottom/right exclusive."""


@dataclass(frozen=True)
class Judgement:
    """What the checker sees in one image; None where there is no foreground region to judge."""

    background: str
    foreground: str | None
    shape: str | None
    position: str | None
    size: str | None

    def matches(self, combo: Combo) -> dict[str, bool]:
        """Per attribute, whether the image shows what the combo's caption asked for."""
        return {
            "background": self.background == combo.background,
            "foreground": self.foreground == combo.colour,
            "shape": self.shape == combo.shape,
            "position": self.position == combo.position,
            "size": self.size == combo.size,
        }


def nearest_colour(rgb: np.ndarray) -> str:
    """Name of the palette colour nearest (Euclidean sRGB) to one RGB triple."""
    d = ((_PALETTE - np.asarray(rgb, dtype=np.float32)[None]) ** 2).sum(axis=1)
    return COLOURS[int(np.argmin(d))]


def background_rgb(image: np.ndarray) -> np.ndarray:
    """Median colour of the border pixels, float32 [3]."""
    b = BORDER_PX
    border = np.concatenate(
        [image[:b].reshape(-1, 3), image[-b:].reshape(-1, 3), image[b:-b, :b].reshape(-1, 3), image[b:-b, -b:].reshape(-1, 3)]
    )
    return np.median(border.astype(np.float32), axis=0)


def largest_region(image: np.ndarray, bg_rgb: np.ndarray) -> Region | None:
    """The largest 8-connected region of pixels farther than FOREGROUND_DISTANCE from the background colour."""
    img = image.astype(np.float32)
    far = np.sqrt(((img - bg_rgb[None, None]) ** 2).sum(axis=-1)) > FOREGROUND_DISTANCE  # (H, W) bool
    labels, n = ndimage.label(far, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return None
    areas = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(areas)) + 1
    if areas[best - 1] < MIN_REGION_FRACTION * image.shape[0] * image.shape[1]:
        return None
    mask = labels == best
    # The interior (one pixel eroded) avoids the blended edge colours; tiny regions have none, so fall back.
    interior = ndimage.binary_erosion(mask)
    pixels = img[interior] if interior.any() else img[mask]
    rows, cols = np.nonzero(mask)
    bbox = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
    return Region(mask=mask, colour=nearest_colour(np.median(pixels, axis=0)), bbox=bbox)


def mask_crop(mask: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
    """The region's mask cropped to its bounding box, padded to a centred square and resized: float32 [32, 32]."""
    top, left, bottom, right = bbox
    crop = mask[top:bottom, left:right].astype(np.float32)
    h, w = crop.shape
    side = max(h, w) + 2  # one pixel of background all round
    square = np.zeros((side, side), dtype=np.float32)
    oy, ox = (side - h) // 2, (side - w) // 2
    square[oy : oy + h, ox : ox + w] = crop
    resized = Image.fromarray(square).resize((MASK_SIZE, MASK_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def position_of(bbox: tuple[int, int, int, int], side: int) -> str:
    """The 3x3 grid cell holding the bounding box's centre."""
    top, left, bottom, right = bbox
    col = min(2, int(3 * (left + right) / 2 / side))
    row = min(2, int(3 * (top + bottom) / 2 / side))
    return POSITIONS[3 * row + col]


def size_of(bbox: tuple[int, int, int, int], side: int, shape: str | None) -> str:
    """The named size whose nominal extent is nearest the box's longer side (corrected for the shape's box)."""
    top, left, bottom, right = bbox
    extent = max(bottom - top, right - left) / side / _BOX_FACTOR.get(shape or "circle", 1.0)
    return min(SIZES, key=lambda s: abs(SIZE_EXTENT[s] - extent))


def judge_batch(images: Sequence[np.ndarray], classifier: torch.nn.Module) -> list[Judgement]:
    """Judge uint8 [H, W, 3] images; the classifier maps [N, 1, 32, 32] masks to [N, len(SHAPES)] logits."""
    from train.shape_classifier import classify_masks  # the classifier module imports this one for mask_crop

    bgs = [nearest_colour(background_rgb(im)) for im in images]
    regions = [largest_region(im, background_rgb(im)) for im in images]
    crops = [mask_crop(r.mask, r.bbox) for r in regions if r is not None]
    shapes = iter(classify_masks(classifier, np.stack(crops)) if crops else [])
    out = []
    for image, bg, region in zip(images, bgs, regions):
        if region is None:
            out.append(Judgement(background=bg, foreground=None, shape=None, position=None, size=None))
            continue
        shape = next(shapes)
        side = image.shape[0]
        out.append(
            Judgement(
                background=bg,
                foreground=region.colour,
                shape=shape,
                position=position_of(region.bbox, side),
                size=size_of(region.bbox, side, shape),
            )
        )
    return out


def accuracy(judgements: Sequence[Judgement], combos: Sequence[Combo]) -> dict[str, float]:
    """Fraction right per attribute over paired judgements and the combos that were asked for."""
    if len(judgements) != len(combos) or not combos:
        raise ValueError(f"accuracy needs as many judgements as combos (got {len(judgements)} and {len(combos)})")
    keys = ("background", "foreground", "shape", "position", "size")
    hits = {k: 0 for k in keys}
    for j, c in zip(judgements, combos):
        for k, ok in j.matches(c).items():
            hits[k] += ok
    return {k: hits[k] / len(combos) for k in keys}
