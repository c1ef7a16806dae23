"""Importing spandrel (upscale model architectures) where torchvision cannot be imported.

spandrel imports `torchvision.transforms.functional` for two of its architectures (LaMa: `rotate` and
`InterpolationMode`; RestoreFormer: `normalize`), and importing spandrel imports every architecture. With the CPU
build of torch this project installs (`pip install torch==2.13.0`), pip would pair spandrel with PyPI's torchvision,
which is built for the CUDA torch of the same version and fails on import ("operator torchvision::nms does not
exist") -- and transformers imports torchvision whenever it is installed. So README and scripts/test.sh install
spandrel with `--no-deps`, and torchvision is usually absent here (a GPU user's working torchvision is used as is).

`import_spandrel()` imports spandrel normally when torchvision works. When it does not, it registers a small
pure-torch stand-in for exactly those three names under `torchvision.transforms.functional` (marked with
`CHISEL_STAND_IN = True`) while spandrel imports, and removes it again (spandrel's modules keep the functions they
bound), so that libraries that probe for torchvision (transformers, diffusers) never find it. Nothing else in Chisel uses torchvision; the stand-in is registered
only then, and only in place of a torchvision that could not be imported.
"""

from __future__ import annotations

import enum
import math
import sys
import types
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


class InterpolationMode(enum.Enum):
    """torchvision's names for the resampling filters (the values it uses)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def normalize(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float], inplace: bool = False
              ) -> torch.Tensor:
    """(x − mean) / std per channel of a [..., C, H, W] tensor, as torchvision's."""
    shape = (-1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(shape)
    std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(shape)
    if inplace:
        return tensor.sub_(mean_t).div_(std_t)
    return (tensor - mean_t) / std_t


def rotate(img: torch.Tensor, angle: float | torch.Tensor,
           interpolation: InterpolationMode = InterpolationMode.NEAREST, expand: bool = False,
           center: Sequence[int] | None = None, fill: float | Sequence[float] | None = None) -> torch.Tensor:
    """Rotate a [..., H, W] tensor by `angle` degrees counter-clockwise about its centre, keeping its size (the
    inverse affine map sampled with grid_sample, align_corners=False, as torchvision does for tensors)."""
    if expand or center is not None:
        raise NotImplementedError("the torchvision stand-in rotates about the centre without expanding only")
    mode = "bilinear" if interpolation == InterpolationMode.BILINEAR else "nearest"
    shape = img.shape
    x = img.reshape(-1, *shape[-3:]) if img.dim() >= 3 else img.reshape(1, 1, *shape[-2:])
    height, width = x.shape[-2:]
    radians = math.radians(float(angle))
    cos, sin = math.cos(radians), math.sin(radians)
    # Output pixel (normalized coords) -> input pixel: the inverse rotation, corrected for a non-square aspect.
    theta = torch.tensor([[cos, -sin * height / width, 0.0], [sin * width / height, cos, 0.0]],
                         dtype=torch.float32, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    work = x if x.is_floating_point() else x.float()
    ones = torch.ones_like(work[:, :1])
    sampled = F.grid_sample(torch.cat([work, ones], 1), grid.to(work.dtype), mode=mode, padding_mode="zeros",
                            align_corners=False)
    out, inside = sampled[:, :-1], sampled[:, -1:]
    if fill is not None:
        fill_t = torch.as_tensor(fill, dtype=out.dtype, device=out.device).reshape(1, -1, 1, 1)
        out = out * inside + fill_t * (1 - inside) if mode == "bilinear" else torch.where(inside > 0.5, out, fill_t)
    return out.to(img.dtype).reshape(shape)


def _torchvision_works() -> bool:
    try:
        import torchvision.transforms.functional  # noqa: F401
    except Exception:  # ImportError, or RuntimeError/OSError from a build for another torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


def _register_stand_in() -> None:
    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    for module in (package, transforms):
        module.__path__ = []  # a package, so that submodule imports resolve to the entries below
    functional.InterpolationMode = InterpolationMode  # type: ignore[attr-defined]
    functional.rotate = rotate  # type: ignore[attr-defined]
    functional.normalize = normalize  # type: ignore[attr-defined]
    package.transforms = transforms  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    for module in (package, transforms, functional):
        module.CHISEL_STAND_IN = True  # type: ignore[attr-defined]
        sys.modules[module.__name__] = module


class SpandrelMissing(ImportError):
    """spandrel is not installed (README installs it with `pip install --no-deps spandrel`)."""


def import_spandrel() -> Any:
    """The spandrel package (see the module docstring for the torchvision stand-in).

    Raises:
        SpandrelMissing: spandrel is not installed."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    import importlib.util

    if importlib.util.find_spec("spandrel") is None:
        raise SpandrelMissing("upscale models need spandrel, which is not installed: "
                              "pip install --no-deps spandrel==0.4.2 (see README.md)")
    if _torchvision_works():
        import spandrel

        return spandrel
    _register_stand_in()
    try:
        import spandrel  # its modules bind the stand-in's functions by name while importing
    finally:  # then the stand-in leaves: other libraries probing for torchvision must not find it
        for name in [m for m in sys.modules if getattr(sys.modules[m], "CHISEL_STAND_IN", False)]:
            del sys.modules[name]
    return spandrel
