"""Latent previews: the linear latent->RGB map, the file's own map from metadata, JPEG encoding and the rate limit."""

import io
import json

import torch
from PIL import Image

from diffusion.previews import (METADATA_KEY, LatentToRGB, PreviewThrottle, encode_preview,
                                      family_latent_rgb, latent_rgb_from_metadata)


def test_latent_to_rgb_maps_channels_linearly_into_bytes():
    to_rgb = LatentToRGB(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)))
    latent = torch.zeros(4, 2, 3)
    latent[0] = 1.0  # red at full, green and blue at the midpoint
    rgb = to_rgb.image(latent)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == torch.uint8
    assert rgb[0, 0].tolist() == [255, 127, 127]


def test_families_have_maps_and_files_may_carry_their_own():
    assert family_latent_rgb("sd1") is not None and family_latent_rgb("sdxl").bias != (0.0, 0.0, 0.0)
    own = {METADATA_KEY: json.dumps({"factors": [[0.1, 0.2, 0.3]] * 4, "bias": [0.0, 0.5, 0.0]})}
    assert latent_rgb_from_metadata(own) == LatentToRGB(((0.1, 0.2, 0.3),) * 4, (0.0, 0.5, 0.0))
    assert latent_rgb_from_metadata({METADATA_KEY: "{not json"}) is None
    assert latent_rgb_from_metadata({METADATA_KEY: json.dumps({"factors": [[1, 2]]})}) is None
    assert latent_rgb_from_metadata({}) is None


def test_previews_are_jpegs_no_larger_than_the_limit():
    preview = encode_preview(torch.zeros(64, 128, 3, dtype=torch.uint8), max_size=96)
    image = Image.open(io.BytesIO(preview.data))
    assert preview.format == "JPEG" and image.format == "JPEG" and image.size == (96, 48)


def test_throttle_lets_one_preview_through_per_interval_and_always_the_last():
    now = [0.0]
    throttle = PreviewThrottle(interval=1.0, clock=lambda: now[0])
    assert throttle.ready(0, 10)
    now[0] = 0.5
    assert not throttle.ready(1, 10)
    assert throttle.ready(9, 10)  # last step
    now[0] = 1.6
    assert throttle.ready(3, 10)
