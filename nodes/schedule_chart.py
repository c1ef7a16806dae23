"""The SchedulePlot node's chart, drawn with PIL: one coloured line per schedule, σ on a log axis against the step,
a legend. Plain drawing code (no torch): curves in, a PIL image out.

σ = 0 (where every schedule ends) has no place on a log axis: a curve's last positive σ is its last point. Text is
ASCII ("sigma"): Pillow's built-in font has no Greek letters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 800, 500
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 190, 44, 52
BACKGROUND = (255, 255, 255)
AXIS = (60, 60, 60)
GRID = (228, 228, 228)
# Tableau's 10 colours: distinct for up to ten lines.
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _label(value: float) -> str:
    return f"{value:g}"


def draw_sigma_chart(curves: Mapping[str, Sequence[float]], *, title: str, width: int = WIDTH,
                     height: int = HEIGHT) -> Image.Image:
    """Every curve (name -> sigmas in step order) as a line of σ (log scale) over the step index, with a legend."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    positive = [s for values in curves.values() for s in values if s > 0]
    longest = max((len(values) for values in curves.values()), default=1)
    # Whole decades around the curves (a tolerance keeps float32's 0.00099999 in the 0.001 decade).
    low = 10 ** math.floor(math.log10(min(positive)) + 1e-4) if positive else 0.01
    high = 10 ** math.ceil(math.log10(max(positive)) - 1e-4) if positive else 10.0
    if high <= low:
        high = low * 10
    left, top = MARGIN_LEFT, MARGIN_TOP
    right, bottom = width - MARGIN_RIGHT, height - MARGIN_BOTTOM
    last_step = max(longest - 1, 1)

    def x_of(step: int) -> float:
        return left + (right - left) * step / last_step

    def y_of(sigma: float) -> float:
        fraction = (math.log10(sigma) - math.log10(low)) / (math.log10(high) - math.log10(low))
        return bottom - (bottom - top) * fraction

    # Decades (and 2x, 5x between them) as grid lines, labelled at the decades.
    decade = low
    while decade <= high * 1.0001:
        for factor in (1, 2, 5):
            value = decade * factor
            if low <= value <= high * 1.0001:
                y = y_of(value)
                draw.line([(left, y), (right, y)], fill=GRID if factor != 1 else (205, 205, 205))
                if factor == 1:
                    draw.text((left - 8, y), _label(value), fill=AXIS, font=small, anchor="rm")
        decade *= 10
    tick_every = max(1, math.ceil(last_step / 10))
    for step in range(0, last_step + 1, tick_every):
        x = x_of(step)
        draw.line([(x, bottom), (x, bottom + 5)], fill=AXIS)
        draw.text((x, bottom + 8), str(step), fill=AXIS, font=small, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline=AXIS)
    draw.text((width // 2 - MARGIN_RIGHT // 2, 12), title, fill=AXIS, font=font, anchor="mt")
    draw.text(((left + right) / 2, height - 16), "step", fill=AXIS, font=small, anchor="mm")
    draw.text((left, top - 6), "sigma (log scale)", fill=AXIS, font=small, anchor="ld")

    for index, (name, values) in enumerate(curves.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = [(x_of(i), y_of(s)) for i, s in enumerate(values) if s > 0]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2, joint="curve")
        for x, y in points:
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
        legend_y = top + 6 + index * 20
        draw.line([(right + 14, legend_y + 7), (right + 38, legend_y + 7)], fill=colour, width=3)
        draw.text((right + 44, legend_y + 7), name, fill=AXIS, font=small, anchor="lm")
    return image
