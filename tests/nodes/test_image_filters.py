"""Pixel filters (nodes/image_filters.py) on small tensors against hand-computed values: blend modes, blur and
sharpen kernels, quantization, kornia-style morphology, and the YCbCr split."""

import math

import pytest
import torch

from nodes.image_filters import (BLEND_MODES, ImageBlend, ImageBlur, ImageQuantize, ImageRGBToYUV, ImageSharpen,
                                 ImageYUVToRGB, Morphology)
from tests.nodes.test_image import make_ctx, run

# blend of 0.2 (image1) and 0.6 (image2), before mixing by the factor: worked out by hand from ComfyUI's formulas
BLENDED = {"normal": 0.6, "multiply": 0.12, "screen": 1 - 0.8 * 0.4, "overlay": 2 * 0.2 * 0.6,
           "soft_light": 0.2 + (2 * 0.6 - 1) * (((16 * 0.2 - 12) * 0.2 + 4) * 0.2 - 0.2), "difference": -0.4}


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_blend_modes_mix_by_the_factor_and_clamp(tmp_path, mode):
    a, b = torch.full((1, 2, 2, 3), 0.2), torch.full((1, 2, 2, 3), 0.6)
    out = run(ImageBlend, make_ctx(tmp_path), image1=a, image2=b, blend_factor=0.5, blend_mode=mode).values[0]
    expected = min(max(0.2 * 0.5 + BLENDED[mode] * 0.5, 0.0), 1.0)
    assert torch.allclose(out, torch.full_like(out, expected), atol=1e-6)


def test_blend_resizes_image2_and_gives_it_image1s_alpha(tmp_path):
    a = torch.full((2, 4, 6, 4), 0.5)
    b = torch.full((1, 2, 2, 3), 0.1)
    out = run(ImageBlend, make_ctx(tmp_path), image1=a, image2=b, blend_factor=1.0, blend_mode="normal").values[0]
    assert out.shape == (2, 4, 6, 4)
    assert torch.allclose(out[..., :3], torch.full((2, 4, 6, 3), 0.1))
    assert torch.allclose(out[..., 3], torch.ones(2, 4, 6))


def _kernel3():
    """The 3x3 blur kernel for sigma 1: exp(-d²/2) on the grid {-1, 0, 1}², normalised."""
    weights = torch.tensor([[math.exp(-(x * x + y * y) / 2) for x in (-1, 0, 1)] for y in (-1, 0, 1)])
    return weights / weights.sum()


def test_blur_spreads_an_impulse_by_the_gaussian_and_keeps_flat_areas(tmp_path):
    image = torch.zeros(1, 5, 5, 3)
    image[0, 2, 2] = 1.0
    out = run(ImageBlur, make_ctx(tmp_path), image=image, blur_radius=1, sigma=1.0).values[0]
    assert torch.allclose(out[0, 1:4, 1:4, 0], _kernel3(), atol=1e-6)
    assert torch.all(out[0, 0] == 0)
    flat = run(ImageBlur, make_ctx(tmp_path), image=torch.full((1, 4, 4, 3), 0.3), blur_radius=2,
               sigma=3.0).values[0]
    assert torch.allclose(flat, torch.full_like(flat, 0.3), atol=1e-6)  # reflect borders: no dark edge


def test_blur_radius_must_fit_the_image(tmp_path):
    with pytest.raises(ValueError, match="blur_radius"):
        run(ImageBlur, make_ctx(tmp_path), image=torch.zeros(1, 3, 3, 3), blur_radius=3, sigma=1.0)


def test_sharpen_raises_the_centre_by_ten_alpha_times_the_blur(tmp_path):
    image = torch.full((1, 5, 5, 3), 0.5)
    image[0, 2, 2] = 0.6
    out = run(ImageSharpen, make_ctx(tmp_path), image=image, sharpen_radius=1, sigma=1.0, alpha=0.01).values[0]
    kernel = _kernel3() * -0.1
    kernel[1, 1] = kernel[1, 1] - kernel.sum() + 1.0  # sums to 1: flat areas stay as they are
    assert torch.allclose(out[0, 2, 2], torch.full((3,), 0.5 + 0.1 * kernel[1, 1].item()), atol=1e-6)
    assert torch.allclose(out[0, 1, 2], torch.full((3,), 0.5 + 0.1 * kernel[0, 1].item()), atol=1e-6)
    assert torch.allclose(out[0, 0, 0], torch.tensor(0.5).expand(3), atol=1e-6)


def test_quantize_keeps_a_two_colour_image_and_limits_the_palette(tmp_path):
    two = torch.zeros(1, 4, 4, 3)
    two[0, :2] = 1.0
    ctx = make_ctx(tmp_path)
    assert torch.equal(run(ImageQuantize, ctx, image=two, colors=2, dither="none").values[0], two)
    ramp = torch.linspace(0, 1, 16 * 16 * 3).reshape(1, 16, 16, 3)
    for dither in ("none", "floyd-steinberg", "bayer-4"):
        out = run(ImageQuantize, ctx, image=ramp, colors=4, dither=dither).values[0]
        assert out.shape == ramp.shape and len(torch.unique(out.reshape(-1, 3), dim=0)) <= 4


def test_quantize_needs_rgb(tmp_path):
    with pytest.raises(ValueError, match="RGB"):
        run(ImageQuantize, make_ctx(tmp_path), image=torch.zeros(1, 2, 2, 4), colors=2, dither="none")


def _morph(tmp_path, image, operation, size):
    return run(Morphology, make_ctx(tmp_path), image=image, operation=operation, kernel_size=size).values[0]


def test_morphology_dilates_and_erodes_with_a_flat_square(tmp_path):
    dot = torch.zeros(1, 8, 8, 1)
    dot[0, 3, 3] = 1.0
    grown = _morph(tmp_path, dot, "dilate", 3)
    assert torch.equal(grown[0, :, :, 0].nonzero().unique(dim=0), torch.tensor(
        [[r, c] for r in (2, 3, 4) for c in (2, 3, 4)]))
    assert torch.equal(_morph(tmp_path, grown, "erode", 3), dot)
    # an even kernel's origin is size // 2: a 4-wide window covers 2 pixels before and 1 after
    even = _morph(tmp_path, dot, "dilate", 4)[0, 3, :, 0]
    assert even.tolist() == [0, 0, 1, 1, 1, 1, 0, 0]


def test_morphology_borders_do_not_erode_and_hats_of_flat_images_are_zero(tmp_path):
    ones = torch.ones(1, 5, 5, 3)
    assert torch.equal(_morph(tmp_path, ones, "erode", 3), ones)  # kornia's geodesic border
    for operation in ("gradient", "top_hat", "bottom_hat"):
        assert torch.all(_morph(tmp_path, ones * 0.4, operation, 5) == 0)
    dot = torch.zeros(1, 6, 6, 1)
    dot[0, 2, 2] = 1.0
    assert torch.equal(_morph(tmp_path, dot, "open", 3), torch.zeros_like(dot))  # a lone pixel is opened away
    assert torch.equal(_morph(tmp_path, dot, "top_hat", 3), dot)


def test_rgb_to_yuv_uses_kornias_coefficients_and_round_trips(tmp_path):
    red = torch.zeros(1, 1, 2, 3)
    red[..., 0] = 1.0
    y, u, v = run(ImageRGBToYUV, make_ctx(tmp_path), image=red).values
    assert y.shape == u.shape == v.shape == red.shape
    assert torch.allclose(y, torch.full_like(y, 0.299))
    assert torch.allclose(u, torch.full_like(u, (0 - 0.299) * 0.564 + 0.5))
    assert torch.allclose(v, torch.full_like(v, (1 - 0.299) * 0.713 + 0.5))
    image = torch.rand(2, 3, 4, 3)
    back = run(ImageYUVToRGB, make_ctx(tmp_path), **dict(zip("YUV", run(ImageRGBToYUV, make_ctx(tmp_path),
                                                                         image=image).values))).values[0]
    assert torch.allclose(back, image, atol=2e-3)  # kornia's rounded coefficients
