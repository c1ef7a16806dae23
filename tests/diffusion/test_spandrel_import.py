"""The torchvision stand-in spandrel gets when torchvision cannot be imported (a CPU torch beside PyPI's CUDA
torchvision): its rotate and normalize give torchvision's results, and spandrel imports either way."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from diffusion.spandrel_import import InterpolationMode, import_spandrel, normalize, rotate


def _real_torchvision():
    try:
        import torchvision.transforms.functional as functional
    except Exception:
        return None
    return None if getattr(functional, "CHISEL_STAND_IN", False) else functional


def test_rotate_by_right_angles_is_exact_and_counter_clockwise():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(rotate(x, 90.0, InterpolationMode.NEAREST), torch.rot90(x, 1, (2, 3)))
    assert torch.equal(rotate(x, 180.0, InterpolationMode.BILINEAR, fill=0), torch.rot90(x, 2, (2, 3)))


def test_normalize_per_channel():
    x = torch.rand(2, 3, 4, 4)
    out = normalize(x, [0.5, 0.25, 0.0], [0.5, 0.5, 2.0])
    assert torch.allclose(out[:, 1], (x[:, 1] - 0.25) / 0.5)


@pytest.mark.skipif(_real_torchvision() is None, reason="torchvision does not import here (the stand-in's case)")
@pytest.mark.parametrize("angle", [90.0, 30.0, -45.0])
@pytest.mark.parametrize("mode", ["BILINEAR", "NEAREST"])
def test_rotate_equals_torchvision(angle, mode):
    tv = _real_torchvision()
    x = torch.rand(1, 3, 6, 8)
    ours = rotate(x, angle, InterpolationMode[mode], fill=0)
    assert torch.allclose(ours, tv.rotate(x, angle, tv.InterpolationMode[mode], fill=0), atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("spandrel") is None, reason="spandrel not installed")
def test_spandrel_imports_and_leaves_no_stand_in_behind():
    import sys

    assert import_spandrel().ModelLoader is not None
    assert not any(getattr(module, "CHISEL_STAND_IN", False) for module in list(sys.modules.values()))
