"""Mask nodes (nodes/masks.py) on small tensors: values worked out by hand from ComfyUI's rules, its quirks kept
(FeatherMask's right/bottom ramps), and the error cases."""

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.masks import (CropMask, FeatherMask, GrowMask, ImageColorToMask, ImageToMask, InvertMask, MaskComposite,
                         MaskPreview, MaskToImage, SolidMask, ThresholdMask)
from tests.nodes.test_image import make_ctx, run


def test_image_color_to_mask_compares_rounded_8_bit_colours(tmp_path):
    image = torch.tensor([[[1.0, 0.0, 0.0], [0.998, 0.0, 0.0], [0.9981, 0.0, 0.0], [0.0, 0.0, 1.0]]])[None]
    out = run(ImageColorToMask, make_ctx(tmp_path), image=image, color=0xFF0000).values[0]
    # 0.998·255 = 254.49 rounds to 254 (no match); 0.9981·255 = 254.52 rounds to 255 (match)
    assert out.tolist() == [[[1.0, 0.0, 1.0, 0.0]]]


def test_image_to_mask_takes_a_channel_and_names_a_missing_alpha(tmp_path):
    image = torch.rand(2, 3, 4, 4)
    ctx = make_ctx(tmp_path)
    assert torch.equal(run(ImageToMask, ctx, image=image, channel="green").values[0], image[..., 1])
    assert torch.equal(run(ImageToMask, ctx, image=image, channel="alpha").values[0], image[..., 3])
    with pytest.raises(ValueError, match="channel 'alpha'"):
        run(ImageToMask, ctx, image=image[..., :3], channel="alpha")


def test_mask_to_image_solid_and_invert(tmp_path):
    ctx = make_ctx(tmp_path)
    mask = torch.rand(2, 3, 4)
    image = run(MaskToImage, ctx, mask=mask).values[0]
    assert image.shape == (2, 3, 4, 3) and torch.equal(image[..., 2], mask)
    assert run(MaskToImage, ctx, mask=mask[0]).values[0].shape == (1, 3, 4, 3)  # a single [H, W] mask
    solid = run(SolidMask, ctx, value=0.25, width=3, height=2).values[0]
    assert solid.shape == (1, 2, 3) and torch.all(solid == 0.25)
    assert torch.allclose(run(InvertMask, ctx, mask=mask).values[0], 1 - mask)


def test_crop_mask_cuts_the_region(tmp_path):
    mask = torch.arange(20, dtype=torch.float32).reshape(4, 5)
    out = run(CropMask, make_ctx(tmp_path), mask=mask, x=3, y=2, width=4, height=1).values[0]
    assert out.tolist() == [[[13.0, 14.0]]]


@pytest.mark.parametrize("operation, expected", [
    ("multiply", 0.7 * 0.6), ("add", 1.0), ("subtract", 0.7 - 0.6), ("and", 1.0), ("or", 1.0), ("xor", 0.0)])
def test_mask_composite_combines_the_overlap_and_clamps(tmp_path, operation, expected):
    destination = torch.full((1, 4, 4), 0.7)
    source = torch.full((1, 3, 3), 0.6)
    out = run(MaskComposite, make_ctx(tmp_path), destination=destination, source=source, x=2, y=3,
              operation=operation).values[0]
    assert out.shape == (1, 4, 4)
    assert torch.allclose(out[0, 3, 2:], torch.full((2,), expected))  # the overlap: row 3, columns 2-3
    assert torch.all(out[0, :3] == 0.7) and torch.all(out[0, 3, :2] == 0.7)
    assert torch.all(destination == 0.7)


def test_mask_composite_rounds_for_logic_and_ignores_a_source_outside(tmp_path):
    ctx = make_ctx(tmp_path)
    low = run(MaskComposite, ctx, destination=torch.full((1, 2, 2), 0.4), source=torch.ones(1, 2, 2), x=0, y=0,
              operation="and").values[0]
    assert torch.all(low == 0)  # 0.4 rounds to off (and 0.5 too: round half to even)
    outside = run(MaskComposite, ctx, destination=torch.full((1, 2, 2), 0.4), source=torch.ones(1, 2, 2), x=5, y=0,
                  operation="add").values[0]
    assert torch.all(outside == 0.4)


def test_feather_mask_ramps_like_comfyuis_loop(tmp_path):
    ctx = make_ctx(tmp_path)
    left = run(FeatherMask, ctx, mask=torch.ones(1, 1, 6), left=2, top=0, right=0, bottom=0).values[0]
    assert torch.allclose(left[0, 0], torch.tensor([0.5, 1, 1, 1, 1, 1]))
    # ComfyUI's right ramp scales column -0 (= the first) by 1/right, column -1 by 2/right, ...
    right = run(FeatherMask, ctx, mask=torch.ones(1, 1, 6), left=0, top=0, right=3, bottom=0).values[0]
    assert torch.allclose(right[0, 0], torch.tensor([1 / 3, 1, 1, 1, 1, 2 / 3]))
    top = run(FeatherMask, ctx, mask=torch.ones(4, 1), left=0, top=4, right=0, bottom=0).values[0]
    assert torch.allclose(top[0, :, 0], torch.tensor([0.25, 0.5, 0.75, 1.0]))
    big = run(FeatherMask, ctx, mask=torch.ones(1, 2, 2), left=99, top=0, right=0, bottom=0).values[0]
    assert torch.allclose(big[0, 0], torch.tensor([0.5, 1.0]))  # clamped to the width


def test_grow_mask_dilates_with_a_cross_or_a_square_and_shrinks(tmp_path):
    dot = torch.zeros(1, 5, 5)
    dot[0, 2, 2] = 1.0
    ctx = make_ctx(tmp_path)
    cross = run(GrowMask, ctx, mask=dot, expand=1, tapered_corners=True).values[0]
    assert cross[0, 1:4, 1:4].tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    square = run(GrowMask, ctx, mask=dot, expand=1, tapered_corners=False).values[0]
    assert torch.all(square[0, 1:4, 1:4] == 1) and square.sum() == 9
    assert torch.equal(run(GrowMask, ctx, mask=square, expand=-1, tapered_corners=False).values[0], dot)
    twice = run(GrowMask, ctx, mask=dot[0], expand=2, tapered_corners=True).values[0]
    assert twice.sum() == 13  # a diamond of radius 2
    assert torch.equal(run(GrowMask, ctx, mask=dot, expand=0, tapered_corners=True).values[0], dot)


def test_threshold_mask_is_strictly_above(tmp_path):
    out = run(ThresholdMask, make_ctx(tmp_path), mask=torch.tensor([[[0.2, 0.5, 0.51]]]), value=0.5).values[0]
    assert out.tolist() == [[[0.0, 0.0, 1.0]]]


def test_mask_preview_writes_grey_pngs_to_temp(tmp_path):
    mask = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]]).repeat(2, 1, 1)
    result = run(MaskPreview, make_ctx(tmp_path), mask=mask)
    assert result.values == () and result.ui["animated"] == (False,)
    images = result.ui["images"]
    assert len(images) == 2 and all(i["type"] == "temp" and i["filename"].startswith("ComfyUI_temp_")
                                    for i in images)
    with Image.open(tmp_path / "temp" / images[0]["filename"]) as saved:
        pixels = np.array(saved)
    assert pixels.shape == (2, 2, 3) and pixels[..., 0].tolist() == [[0, 127], [255, 63]]
