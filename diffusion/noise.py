"""Seeded noise: the initial latent noise and the per-step noise of stochastic samplers.

Every generator here is a fresh CPU ``torch.Generator`` made from the seed; the global RNG is never touched, and
noise is drawn on the CPU and then moved, so a seed gives the same numbers on any machine. The draws follow
ComfyUI's (``comfy/sample.prepare_noise``, k-diffusion's ``default_noise_sampler`` on the CPU and
``BrownianTreeNoiseSampler(cpu=True)``), so a ComfyUI seed reproduces its CPU image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

SEED_MAX = 2**64 - 1

# torchsde's default resolution of the Brownian tree (ComfyUI keeps the default too).
_TREE_TOL = 1e-6
_TREE_DIGITS = 6

# (sigma, sigma_next) -> unit-variance noise shaped like the latent.
NoiseSampler = Callable[[Tensor, Tensor], Tensor]


class SeedError(ValueError):
    """A seed outside ComfyUI's range 0..2^64-1."""


class BatchIndexError(ValueError):
    """A batch_index that does not fit the latent batch."""


def _check_seed(seed: int) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
        raise SeedError(f"seed must be an integer in 0..{SEED_MAX}, got {seed!r}")


def cpu_generator(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``seed`` (0..2^64-1)."""
    _check_seed(seed)
    return torch.Generator(device="cpu").manual_seed(seed)


def initial_noise(shape: Sequence[int], seed: int, *, batch_index: Sequence[int] | None = None) -> Tensor:
    """Unit Gaussian noise for a latent of ``shape`` ([B, C, H, W]), float32 on the CPU.

    Args:
        shape: the latent's shape.
        seed: 0..2^64-1.
        batch_index: the batch positions of the latent's images (from LatentFromBatch / RepeatLatentBatch). When
            given, [1, C, H, W] draws are made one after another up to max(batch_index) and image k gets draw
            batch_index[k], so image k of a batch is reproduced alone.
    """
    generator = cpu_generator(seed)
    shape = tuple(int(s) for s in shape)
    if batch_index is None:
        # One call for the whole batch: a batch of 4 is not 4 batches of 1.
        return torch.randn(shape, dtype=torch.float32, generator=generator, device="cpu")
    if len(batch_index) != shape[0] or min(batch_index, default=0) < 0:
        raise BatchIndexError(f"batch_index must hold {shape[0]} non-negative positions, got {list(batch_index)}")
    needed = set(batch_index)
    draws: dict[int, Tensor] = {}
    for i in range(max(batch_index) + 1):
        draw = torch.randn((1,) + shape[1:], dtype=torch.float32, generator=generator, device="cpu")
        if i in needed:
            draws[i] = draw
    return torch.cat([draws[i] for i in batch_index], dim=0)


class StepNoiseSampler:
    """Fresh unit noise for each sampler step: one randn(x.shape) per call, from a CPU generator seeded seed + 1.

    Why seed + 1: the initial noise comes from the same CPU generator type seeded with ``seed``; the same seed would
    make the first step's noise a copy of the initial noise. (ComfyUI adds 1 on the CPU for this reason; on a GPU it
    uses the device generator, whose numbers differ per device. Drawing on the CPU keeps every machine identical.)
    """

    def __init__(self, like: Tensor, seed: int) -> None:
        _check_seed(seed)
        self._generator = cpu_generator((seed + 1) % (SEED_MAX + 1))
        self._shape = tuple(like.shape)
        self._dtype = like.dtype
        self._device = like.device

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        noise = torch.randn(self._shape, dtype=self._dtype, generator=self._generator, device="cpu")
        return noise.to(self._device)


class BrownianNoiseSampler:
    """Noise for SDE samplers from one seeded Brownian path W over sigma: (W(s_next) − W(s)) / sqrt|s_next − s|.

    Because every step reads increments of the same path (Li et al. 2020, "Scalable Gradients for Stochastic
    Differential Equations", the Brownian tree/interval of torchsde), the result converges as steps grow instead of
    re-rolling the noise. Built on the CPU, as ComfyUI's BrownianTreeNoiseSampler(cpu=True), for parity.
    """

    def __init__(self, like: Tensor, sigma_min: Tensor | float, sigma_max: Tensor | float, seed: int) -> None:
        try:
            import torchsde
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("the SDE samplers need the 'torchsde' package (pip install torchsde)") from err
        _check_seed(seed)
        t0 = torch.as_tensor(sigma_min).detach().cpu().float()
        t1 = torch.as_tensor(sigma_max).detach().cpu().float()
        if not t0 < t1:
            t0, t1 = t1, t0
        w0 = torch.zeros(like.shape, dtype=like.dtype)
        self._tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed, tol=_TREE_TOL)
        # Why: the tree rounds its ends to 6 digits and warns about float32 queries just outside them before
        # clamping; clamping here gives the same query without the warning.
        self._lo, self._hi = round(float(t0), _TREE_DIGITS), round(float(t1), _TREE_DIGITS)
        self._dtype = like.dtype
        self._device = like.device

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        a = torch.as_tensor(sigma).detach().cpu().float()
        b = torch.as_tensor(sigma_next).detach().cpu().float()
        lo, hi = (a, b) if a < b else (b, a)
        increment = self._tree(self._clamp(lo), self._clamp(hi))
        if not a < b:  # the tree is queried low -> high; a step down in sigma reads the increment reversed
            increment = -increment
        increment = increment.to(self._dtype).to(self._device)
        return increment / (b - a).abs().sqrt().to(self._device)

    def _clamp(self, t: Tensor) -> float:
        return min(max(float(t), self._lo), self._hi)
