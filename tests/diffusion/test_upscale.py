"""Upscale models: a random ESRGAN file in its real key layout loads through spandrel, upscales 4x, and the tiled
run (ComfyUI's 512/32 tiling, here smaller) agrees with the whole-image run; out of memory halves the tile."""

from __future__ import annotations

import pytest
import torch

from diffusion.safetensors_io import CheckpointFormatError, save_atomic
from diffusion.tiling import tile_count, tiled_scale
from diffusion.upscale import UpscaleModelError, load_upscale_model, upscale_images
from tests.diffusion.tiny_esrgan import write_esrgan

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def esrgan(tmp_path_factory):
    path = write_esrgan(tmp_path_factory.mktemp("upscale") / "4x_tiny.safetensors", nf=16, nb=1, seed=0)
    return load_upscale_model(path)


def _image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear").movedim(1, -1)


def test_an_esrgan_file_is_detected_and_upscales_4x(esrgan):
    assert (esrgan.architecture, esrgan.scale) == ("ESRGAN", 4)
    image = _image(24, 40)
    out = upscale_images(esrgan, image, device=CPU)
    assert out.shape == (1, 96, 160, 3)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert 0.05 < float(out.std())  # not clamped flat


def test_tiled_upscale_agrees_with_the_whole_image(esrgan):
    image = _image(72, 96, seed=1)
    whole = upscale_images(esrgan, image, device=CPU, tile=512)
    steps = []
    tiled = upscale_images(esrgan, image, device=CPU, tile=48, overlap=16,
                           progress=lambda done, total: steps.append((done, total)))
    assert steps[-1] == (6, 6) == (tile_count((72, 96), (48, 48), 16),) * 2
    difference = (tiled - whole).abs()
    assert float(difference.mean()) < 0.01 and float(difference.max()) < 0.15


def test_tile_blending_is_exact_for_a_pointwise_model():
    images = torch.rand(2, 3, 50, 70)
    nearest = lambda x: torch.nn.functional.interpolate(x * 2.0 - 0.5, scale_factor=2, mode="nearest")  # noqa: E731
    tiled = tiled_scale(images, nearest, (24, 24), 6, 2, 3, out_device="cpu")
    torch.testing.assert_close(tiled, nearest(images), atol=1e-5, rtol=1e-5)


def test_out_of_memory_halves_the_tile_until_it_fits(esrgan):
    sizes: list[int] = []

    def too_big(module, args):
        sizes.append(max(args[0].shape[-2:]))
        if max(args[0].shape[-2:]) > 128:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    hook = esrgan.module.register_forward_pre_hook(too_big)
    try:
        out = upscale_images(esrgan, _image(200, 136), device=CPU, tile=512)
        assert out.shape == (1, 800, 544, 3)
        # 512 and 256 hold the whole image (out of memory), 128 splits it into tiles that fit
        assert sizes[:2] == [200, 200] and len(sizes) > 3 and all(s <= 128 for s in sizes[2:])
        with pytest.raises(torch.OutOfMemoryError):
            upscale_images(esrgan, _image(200, 136), device=CPU, tile=300)  # 300 -> 150 -> 75 < 128: give up
    finally:
        hook.remove()


def test_pickle_and_foreign_files_are_refused(tmp_path):
    pth = tmp_path / "4x.pth"
    pth.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointFormatError):
        load_upscale_model(pth)
    save_atomic(tmp_path / "other.safetensors", {"something.weight": torch.zeros(3, 3)})
    with pytest.raises(UpscaleModelError, match="spandrel"):
        load_upscale_model(tmp_path / "other.safetensors")
