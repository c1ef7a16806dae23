"""The built-in model's world: scenes of one simple shape on a flat background, their captions and renderings.

A scene is five choices (size, colour, shape, position, background colour) plus a little continuous jitter.
Every caption names the choices in one fixed grammar:

    "a small red star in the top left on a blue background"

Some exact combinations of the five choices are held out of training (`is_held_out`): the adherence evaluation
asks the model for combinations it never saw, each of whose parts it did see.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

# Named colours (sRGB). Chosen far apart (pairwise RGB distance >= 100) so "nearest palette entry" is a fair judge
# of a generated image whose colours drift a little.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 40),
    "orange": (240, 125, 25),
    "yellow": (250, 225, 50),
    "green": (45, 160, 70),
    "blue": (40, 90, 215),
    "purple": (135, 65, 175),
    "white": (240, 240, 235),
    "black": (25, 25, 30),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

Shape = Literal["circle", "square", "triangle", "star", "ring", "cross"]
SHAPES: tuple[Shape, ...] = ("circle", "square", "triangle", "star", "ring", "cross")

Size = Literal["small", "medium", "large"]
SIZES: tuple[Size, ...] = ("small", "medium", "large")
# Nominal extent (diameter of the shape's circumscribed circle) as a fraction of the image side.
SIZE_EXTENT: dict[str, float] = {"small": 0.26, "medium": 0.38, "large": 0.50}

Position = Literal[
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"
]
POSITIONS: tuple[Position, ...] = (
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"
)
# Grid coordinate of each third of the image, as a fraction of the side.
GRID: tuple[float, float, float] = (0.29, 0.5, 0.71)
POSITION_CELL: dict[str, tuple[int, int]] = {name: (i % 3, i // 3) for i, name in enumerate(POSITIONS)}  # (col, row)
POSITION_PHRASE: dict[str, str] = {
    "top left": "in the top left", "top": "at the top", "top right": "in the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left", "bottom": "at the bottom", "bottom right": "in the bottom right",
}

SIZE_JITTER = 0.07  # relative: extent × U(1 - j, 1 + j)
POSITION_JITTER = 0.02  # absolute fraction of the side
HELD_OUT_MODULUS = 25  # one combination in 25 (4 %) is held out of training


@dataclass(frozen=True)
class Combo:
    """The five named choices of a scene: what a caption says."""

    size: Size
    colour: str
    shape: Shape
    position: Position
    background: str

    def caption(self, *, with_size: bool = True, with_position: bool = True, with_background: bool = True) -> str:
        """The scene's caption; the optional parts can be left out (training varies them, evaluation never does)."""
        words = [self.size] if with_size else []
        words += [self.colour, self.shape]
        if with_position:
            words.append(POSITION_PHRASE[self.position])
        if with_background:
            words.append(f"on {_article(self.background)} {self.background} background")
        return f"{_article(words[0])} " + " ".join(words)


@dataclass(frozen=True)
class Scene:
    """A combo plus the jitter that places it: enough to render it exactly."""

    combo: Combo
    extent: float
    """Diameter of the circumscribed circle, as a fraction of the image side."""
    cx: float
    cy: float
    """Centre, as fractions of the image side (y grows downwards)."""


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def all_combos() -> list[Combo]:
    """Every combination of the five choices whose shape colour differs from its background (3·8·6·9·7 = 9072)."""
    return [
        Combo(size, colour, shape, position, background)
        for size, colour, shape, position, background in itertools.product(SIZES, COLOURS, SHAPES, POSITIONS, COLOURS)
        if colour != background
    ]


def is_held_out(combo: Combo) -> bool:
    """Whether this exact combination is kept out of training (a fixed hash of its caption, stable across runs)."""
    digest = hashlib.sha256(combo.caption().encode()).digest()
    return int.from_bytes(digest[:8], "little") % HELD_OUT_MODULUS == 0


def split_combos(split: Literal["train", "held_out"]) -> list[Combo]:
    """The training or the held-out combinations, in a fixed order."""
    want = split == "held_out"
    return [c for c in all_combos() if is_held_out(c) == want]


def sample_scene(rng: np.random.Generator, combos: list[Combo]) -> Scene:
    """One scene: a uniformly chosen combo with its size and position jittered."""
    combo = combos[int(rng.integers(len(combos)))]
    col, row = POSITION_CELL[combo.position]
    extent = SIZE_EXTENT[combo.size] * float(rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER))
    cx = GRID[col] + float(rng.uniform(-POSITION_JITTER, POSITION_JITTER))
    cy = GRID[row] + float(rng.uniform(-POSITION_JITTER, POSITION_JITTER))
    return Scene(combo, extent, cx, cy)


def _star(n_points: int, inner_ratio: float) -> np.ndarray:
    """Unit star polygon, first point up: alternating outer (1) and inner vertices."""
    angles = -np.pi / 2 + np.arange(2 * n_points) * np.pi / n_points
    radii = np.where(np.arange(2 * n_points) % 2 == 0, 1.0, inner_ratio)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _polygon_centred(points: np.ndarray) -> np.ndarray:
    """Shift a polygon so its bounding box is centred on the origin (a triangle's circumcentre is not)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return points - (lo + hi) / 2


# Unit outlines (radius 1 = half the extent), bounding box centred on the origin.
_TRIANGLE = _polygon_centred(_star(3, 1.0)[::2])
_STAR = _polygon_centred(_star(5, 0.45))
_SQUARE_HALF = 0.85  # a square's half side, relative to the radius; keeps its area close to the circle's
_RING_INNER = 0.55
_CROSS_ARM = (0.95, 0.32)  # half length, half width of each arm


def render_alpha(scene: Scene, size: int, *, supersample: int = 4) -> np.ndarray:
    """Coverage of the shape on a size×size grid, float32 in [0, 1], antialiased by supersampling."""
    big = size * supersample
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    r = scene.extent / 2 * big
    cx, cy = scene.cx * big, scene.cy * big
    shape = scene.combo.shape

    def poly(unit: np.ndarray) -> None:
        draw.polygon([(cx + r * x, cy + r * y) for x, y in unit], fill=255)

    if shape in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if shape == "ring":
            ri = r * _RING_INNER
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    elif shape == "square":
        h = r * _SQUARE_HALF
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=255)
    elif shape == "triangle":
        poly(_TRIANGLE)
    elif shape == "star":
        poly(_STAR)
    elif shape == "cross":
        length, width = _CROSS_ARM
        draw.rectangle([cx - r * length, cy - r * width, cx + r * length, cy + r * width], fill=255)
        draw.rectangle([cx - r * width, cy - r * length, cx + r * width, cy + r * length], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    # (big, big) -> (size, supersample, size, supersample) -> mean over the sub-pixels: box-filter antialiasing.
    hi = np.asarray(canvas, dtype=np.float32) / 255.0
    return hi.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def render(scene: Scene, size: int) -> np.ndarray:
    """The scene as an sRGB image, uint8 [size, size, 3]."""
    alpha = render_alpha(scene, size)[:, :, None]  # (H, W, 1)
    fg = np.asarray(PALETTE[scene.combo.colour], dtype=np.float32)
    bg = np.asarray(PALETTE[scene.combo.background], dtype=np.float32)
    return np.clip(np.rint(bg * (1 - alpha) + fg * alpha), 0, 255).astype(np.uint8)
