"""Cheap latent previews while sampling: a linear map from latent channels to RGB, encoded as a small JPEG.

The map is a per-family fact (ComfyUI's Latent2RGB factors for the SD1.x/SD2.x and SDXL latent spaces) or, for a
checkpoint with its own latent space such as the built-in model, the `chisel.latent_rgb` entry of the file's
metadata: JSON {"factors": [[r, g, b] per channel], "bias": [r, g, b]}. It maps the sampler's (scaled) latent to RGB
in [-1, 1].
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from PIL import Image

from diffusion.values import Preview

LatentRGBFactors = tuple[tuple[float, float, float], ...]

# Latent2RGB factors of the SD1.x/SD2.x and SDXL latent spaces (ComfyUI latent_formats.py), [C, 3].
SD1_LATENT_RGB: LatentRGBFactors = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350),
                                    (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177))
SDXL_LATENT_RGB: LatentRGBFactors = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068),
                                     (0.1076, 0.1111, -0.0362), (-0.3165, -0.2492, -0.2188))
SDXL_LATENT_RGB_BIAS = (0.1084, -0.0175, -0.0011)
METADATA_KEY = "chisel.latent_rgb"


@dataclass(frozen=True)
class LatentToRGB:
    factors: LatentRGBFactors
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def image(self, latent: torch.Tensor) -> torch.Tensor:
        """[C, h, w] latent (model space) -> [h, w, 3] uint8 RGB."""
        weights = torch.tensor(self.factors, dtype=torch.float32, device=latent.device)  # (C, 3)
        bias = torch.tensor(self.bias, dtype=torch.float32, device=latent.device)
        rgb = torch.einsum("chw,cr->hwr", latent.float(), weights) + bias  # (h, w, 3) in ~[-1, 1]
        return ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)


def family_latent_rgb(family_name: str) -> LatentToRGB | None:
    if family_name in ("sd1", "sd2"):
        return LatentToRGB(SD1_LATENT_RGB)
    if family_name in ("sdxl", "sdxl_refiner"):
        return LatentToRGB(SDXL_LATENT_RGB, SDXL_LATENT_RGB_BIAS)
    return None


def latent_rgb_from_metadata(metadata: Mapping[str, str]) -> LatentToRGB | None:
    """The file's own preview map, if it carries one (malformed entries are ignored: previews are optional)."""
    raw = metadata.get(METADATA_KEY)
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
        factors = tuple(tuple(float(v) for v in row) for row in parsed["factors"])
        bias = tuple(float(v) for v in parsed.get("bias", (0.0, 0.0, 0.0)))
        if any(len(row) != 3 for row in factors) or len(bias) != 3:
            return None
        return LatentToRGB(factors, bias)  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError):
        return None


def encode_preview(rgb: torch.Tensor, *, max_size: int, min_size: int = 256) -> Preview:
    """[h, w, 3] uint8 -> a JPEG preview, scaled so its longer side is between min_size and max_size."""
    image = Image.fromarray(rgb.cpu().numpy())
    longest = max(image.size)
    target = max(min(max_size, max(longest, min_size)), 1)
    if target != longest:
        scale = target / longest
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return Preview(buffer.getvalue(), "JPEG")


class PreviewThrottle:
    """Lets a preview through at most every `interval` seconds, and always on the last step."""

    def __init__(self, interval: float = 0.25, clock=time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last = float("-inf")

    def ready(self, step: int, total: int | None) -> bool:
        now = self._clock()
        if (total is not None and step + 1 >= total) or now - self._last >= self.interval:
            self._last = now
            return True
        return False
