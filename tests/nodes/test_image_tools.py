"""Image geometry and batch nodes (nodes/image_tools.py): sizes, values on small tensors, ComfyUI's rounding and
clamping rules, and the error cases."""

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.image_tools import (GetImageSize, ImageAddNoise, ImageCrop, ImageFlip, ImageFromBatch,
                               ImagePadForOutpaint, ImageRotate, ImageScaleToMaxDimension, ImageScaleToTotalPixels,
                               ImageStitch, LoadImageOutput, RepeatImageBatch, ResizeAndPadImage)
from tests.nodes.test_image import make_ctx, run


def numbered(batch=1, height=2, width=3, channels=3):
    """Pixels numbered 0, 1, 2... (distinct values make any reordering visible)."""
    return torch.arange(batch * height * width * channels, dtype=torch.float32).reshape(batch, height, width,
                                                                                          channels)


def test_get_image_size_returns_width_height_and_batch(tmp_path):
    assert run(GetImageSize, make_ctx(tmp_path), image=torch.zeros(3, 5, 7, 3)).values == (7, 5, 3)


def test_scale_to_total_pixels_keeps_the_aspect_and_rounds_to_the_steps(tmp_path):
    image = torch.rand(1, 64, 128, 3)
    # 0.01 MP = 10485.76 px; scale = sqrt(10485.76 / 8192) = 1.1314; 144.8 -> 145, 72.4 -> 72; steps of 16: 9·16, 5·16
    out = run(ImageScaleToTotalPixels, make_ctx(tmp_path), image=image, upscale_method="bilinear", megapixels=0.01,
              resolution_steps=1).values[0]
    assert out.shape == (1, 72, 145, 3)
    out = run(ImageScaleToTotalPixels, make_ctx(tmp_path), image=image, upscale_method="area", megapixels=0.01,
              resolution_steps=16).values[0]
    assert out.shape == (1, 80, 144, 3)


def test_scale_to_max_dimension_sets_the_longer_side(tmp_path):
    ctx = make_ctx(tmp_path)
    tall = run(ImageScaleToMaxDimension, ctx, image=torch.rand(2, 30, 20, 3), upscale_method="area",
               largest_size=45).values[0]
    wide = run(ImageScaleToMaxDimension, ctx, image=torch.rand(1, 20, 30, 3), upscale_method="lanczos",
               largest_size=45).values[0]
    square = run(ImageScaleToMaxDimension, ctx, image=torch.rand(1, 8, 8, 3), upscale_method="bicubic",
                 largest_size=5).values[0]
    assert (tall.shape, wide.shape, square.shape) == ((2, 45, 30, 3), (1, 30, 45, 3), (1, 5, 5, 3))


def test_resize_and_pad_fits_inside_and_centres_on_the_padding_colour(tmp_path):
    image = torch.full((1, 2, 4, 3), 0.25)
    out = run(ResizeAndPadImage, make_ctx(tmp_path), image=image, target_width=8, target_height=8,
              padding_color="black", interpolation="nearest-exact").values[0]
    assert out.shape == (1, 8, 8, 3)
    # scale min(8/4, 8/2) = 2 -> 8x4 image, offset (8-4)//2 = 2 rows from the top
    assert torch.all(out[:, 2:6] == 0.25) and torch.all(out[:, :2] == 0) and torch.all(out[:, 6:] == 0)
    white = run(ResizeAndPadImage, make_ctx(tmp_path), image=image, target_width=5, target_height=5,
                padding_color="white", interpolation="area").values[0]
    # scale 5/4 -> int(5.0) x int(2.5) = 5x2, top offset (5-2)//2 = 1
    assert white.shape == (1, 5, 5, 3) and torch.all(white[:, 0] == 1) and torch.all(white[:, 3:] == 1)


def test_stitch_without_image2_returns_image1(tmp_path):
    image = torch.rand(1, 4, 4, 3)
    out = run(ImageStitch, make_ctx(tmp_path), image1=image, direction="right", match_image_size=True,
              spacing_width=0, spacing_color="white").values[0]
    assert out is image


def test_stitch_places_image2_on_the_chosen_side_with_coloured_spacing(tmp_path):
    a, b = torch.zeros(1, 2, 2, 3), torch.ones(1, 2, 3, 3)
    ctx = make_ctx(tmp_path)
    left = run(ImageStitch, ctx, image1=a, image2=b, direction="left", match_image_size=False, spacing_width=1,
               spacing_color="red").values[0]
    # spacing rounds up to an even width: b (3) | red (2) | a (2)
    assert left.shape == (1, 2, 7, 3)
    assert torch.all(left[:, :, :3] == 1) and torch.all(left[:, :, 5:] == 0)
    assert left[0, 0, 3].tolist() == [1.0, 0.0, 0.0]
    down = run(ImageStitch, ctx, image1=a, image2=b, direction="down", match_image_size=False, spacing_width=0,
               spacing_color="white").values[0]
    # widths differ (2 vs 3): a is padded by 0 left, 1 right with the (white) spacing colour
    assert down.shape == (1, 4, 3, 3) and torch.all(down[:, :2, 2] == 1) and torch.all(down[:, :2, :2] == 0)


def test_stitch_matches_heights_and_repeats_the_shorter_batch(tmp_path):
    a = torch.zeros(2, 4, 4, 4)  # RGBA
    b = torch.full((1, 2, 6, 3), 0.5)  # aspect 3, RGB
    out = run(ImageStitch, make_ctx(tmp_path), image1=a, image2=b, direction="right", match_image_size=True,
              spacing_width=0, spacing_color="white").values[0]
    # b is resized to height 4, width int(4·3) = 12; gets an opaque alpha; its one image is repeated for the batch
    assert out.shape == (2, 4, 16, 4)
    assert torch.all(out[:, :, 4:, 3] == 1) and torch.allclose(out[1, :, 4:, :3], torch.full((4, 12, 3), 0.5),
                                                               atol=1 / 255)


def test_crop_clamps_the_corner_into_the_image(tmp_path):
    image = numbered(height=4, width=5, channels=1)
    ctx = make_ctx(tmp_path)
    out = run(ImageCrop, ctx, image=image, width=2, height=3, x=1, y=1).values[0]
    assert out[0, :, :, 0].tolist() == [[6, 7], [11, 12], [16, 17]]
    corner = run(ImageCrop, ctx, image=image, width=8, height=8, x=100, y=100).values[0]
    assert corner.shape == (1, 1, 1, 1) and corner.item() == 19  # x, y clamped to the last pixel


def test_flip_and_rotate(tmp_path):
    image = numbered(height=2, width=3, channels=1)  # [[0 1 2] [3 4 5]]
    ctx = make_ctx(tmp_path)
    assert run(ImageFlip, ctx, image=image, flip_method="x-axis: vertically").values[0][0, :, :, 0].tolist() == \
        [[3, 4, 5], [0, 1, 2]]
    assert run(ImageFlip, ctx, image=image, flip_method="y-axis: horizontally").values[0][0, :, :, 0].tolist() == \
        [[2, 1, 0], [5, 4, 3]]
    assert run(ImageRotate, ctx, image=image, rotation="90 degrees").values[0][0, :, :, 0].tolist() == \
        [[3, 0], [4, 1], [5, 2]]  # clockwise
    assert run(ImageRotate, ctx, image=image, rotation="270 degrees").values[0][0, :, :, 0].tolist() == \
        [[2, 5], [1, 4], [0, 3]]
    assert torch.equal(run(ImageRotate, ctx, image=image, rotation="none").values[0], image)


def test_from_batch_clamps_and_repeat_repeats_the_whole_batch(tmp_path):
    batch = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1, 1)
    ctx = make_ctx(tmp_path)
    assert run(ImageFromBatch, ctx, image=batch, batch_index=2, length=5).values[0].flatten().tolist() == [2, 3]
    assert run(ImageFromBatch, ctx, image=batch, batch_index=9, length=1).values[0].flatten().tolist() == [3]
    assert run(RepeatImageBatch, ctx, image=batch[:2], amount=3).values[0].flatten().tolist() == [0, 1] * 3


def test_add_noise_is_seeded_clamped_and_leaves_the_input_alone(tmp_path):
    image = torch.full((1, 4, 4, 3), 0.5)
    ctx = make_ctx(tmp_path)
    first = run(ImageAddNoise, ctx, image=image, seed=7, strength=0.5).values[0]
    again = run(ImageAddNoise, ctx, image=image, seed=7, strength=0.5).values[0]
    other = run(ImageAddNoise, ctx, image=image, seed=8, strength=0.5).values[0]
    expected = torch.clip(0.5 + 0.5 * torch.randn((1, 4, 4, 3), generator=torch.Generator().manual_seed(7)), 0, 1)
    assert torch.equal(first, again) and torch.equal(first, expected) and not torch.equal(first, other)
    assert torch.all(image == 0.5)
    assert run(ImageAddNoise, ctx, image=image, seed=2**64 - 1, strength=0.1).values[0].shape == image.shape


def test_pad_for_outpaint_greys_the_border_and_feathers_the_mask(tmp_path):
    image = torch.zeros(1, 10, 10, 3)
    out, mask = run(ImagePadForOutpaint, make_ctx(tmp_path), image=image, left=2, top=0, right=0, bottom=0,
                    feathering=3).values
    assert out.shape == (1, 10, 12, 3) and mask.shape == (1, 10, 12)
    assert torch.all(out[:, :, :2] == 0.5) and torch.all(out[:, :, 2:] == 0)
    assert torch.all(mask[:, :, :2] == 1)
    # only the left side is padded: columns at distance 0, 1, 2 get ((3 - d) / 3)²
    assert torch.allclose(mask[0, 5, 2:6], torch.tensor([1.0, 4 / 9, 1 / 9, 0.0]))
    assert torch.all(mask[:, :, 5:] == 0)
    _, unfeathered = run(ImagePadForOutpaint, make_ctx(tmp_path), image=image, left=2, top=0, right=0, bottom=0,
                         feathering=5).values  # 2 · 5 is not below 10: no feathering
    assert torch.all(unfeathered[:, :, 2:] == 0)


def test_load_image_output_reads_the_named_file_and_serves_the_remote_combo(tmp_path):
    ctx = make_ctx(tmp_path)
    Image.fromarray(np.full((3, 4, 3), 255, dtype=np.uint8)).save(tmp_path / "input" / "a.png")
    image, mask = run(LoadImageOutput, ctx, image="a.png").values
    assert image.shape == (1, 3, 4, 3) and torch.all(image == 1) and mask.shape == (1, 64, 64)
    spec = LoadImageOutput.image.schema()
    assert spec == ["COMBO", {"image_upload": True, "image_folder": "output",
                              "remote": {"route": "/internal/files/output", "refresh_button": True,
                                         "control_after_refresh": "first"}}]
    assert LoadImageOutput.image.coerce("x.png [output]") == "x.png [output]"
    with pytest.raises(Exception, match="missing.png"):
        run(LoadImageOutput, ctx, image="missing.png")
