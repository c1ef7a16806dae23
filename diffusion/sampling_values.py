"""NOISE and SAMPLER: two of the values ComfyUI's custom-sampling nodes pass along (GUIDER is in guiders.py).

NOISE is where the initial noise of a run comes from: ``seed`` (also the seed of the sampler's own step noise) and
``generate_noise(latent)``. RandomNoise draws exactly what KSampler draws for that seed; DisableNoise gives zeros.

SAMPLER is a sampler function with keyword options bound into it (ComfyUI's KSAMPLER): ``Sampler.named(name)`` is
a sampler of the table in diffusion/samplers/ as KSampler runs it, ``with_options(...)`` binds options such as eta
or s_noise (functools.partial over the plain function), and ``run`` calls it the way samplers.run_sampler does.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from diffusion.noise import initial_noise
from diffusion.samplers import DenoiserFn, InpaintNoise, NoiseKind, StepCallback, get_sampler
from diffusion.values import Latent


class Noise(Protocol):
    """NOISE: the source of a sampling run's initial noise."""

    @property
    def seed(self) -> int: ...

    def generate_noise(self, latent: Latent) -> Tensor:
        """Unit noise shaped like ``latent.samples``, float32 on the CPU."""
        ...


@dataclass(frozen=True)
class RandomNoise:
    """Seeded noise, the same draw KSampler makes (one CPU generator; batch_index keeps per-image noise)."""

    seed: int

    def generate_noise(self, latent: Latent) -> Tensor:
        return initial_noise(tuple(latent.samples.shape), self.seed, batch_index=latent.batch_index)


@dataclass(frozen=True)
class DisableNoise:
    """No initial noise (zeros): for continuing from a latent that already holds its noise. Seed 0 feeds the
    sampler's step noise, as in ComfyUI."""

    seed: int = 0

    def generate_noise(self, latent: Latent) -> Tensor:
        return torch.zeros(tuple(latent.samples.shape), dtype=torch.float32)


class SamplerOptionError(ValueError):
    """An option the sampler function does not take (or one it cannot honour at this value)."""


@dataclass(frozen=True, eq=False)
class Sampler:
    """SAMPLER: a sampler function with its bound options.

    Attributes:
        name: the sampler's name (a table name, or a descriptive one for node-defined samplers).
        function: ``function(model, x, sigmas, *, extra_args, callback[, seed]) -> Tensor``.
        noise: what randomness it draws ("none": it takes no seed).
        inpaint_noise: how the kept region of an inpainting latent is re-noised ("random": ddim's seed + 1 draw).
        options: the options bound into ``function`` (for messages and tests).
    """

    name: str
    function: Callable[..., Tensor]
    noise: NoiseKind = "none"
    inpaint_noise: InpaintNoise = "given"
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def named(cls, name: str) -> Sampler:
        """The table's sampler of this ComfyUI name, as KSampler runs it (raises UnknownSamplerError)."""
        spec = get_sampler(name)
        return cls(name=spec.name, function=spec.function, noise=spec.noise, inpaint_noise=spec.inpaint_noise)

    def with_options(self, options: Mapping[str, Any], *, neutral: Mapping[str, Any] | None = None) -> Sampler:
        """This sampler with ``options`` bound as keyword arguments.

        An option the function does not take is dropped when it equals its ``neutral`` value (the value that
        changes nothing, e.g. a PID term of 0); any other unknown option raises SamplerOptionError, so a setting is
        never silently ignored.
        """
        accepted = _keyword_names(self.function)
        bound: dict[str, Any] = {}
        for key, value in options.items():
            if accepted is None or key in accepted:
                bound[key] = value
            elif neutral is None or key not in neutral or neutral[key] != value:
                raise SamplerOptionError(f"sampler {self.name!r} does not support option {key}={value!r} here")
        function = functools.partial(self.function, **bound) if bound else self.function
        return Sampler(name=self.name, function=function, noise=self.noise, inpaint_noise=self.inpaint_noise,
                       options={**self.options, **bound})

    def run(self, model: DenoiserFn, x: Tensor, sigmas: Tensor, *, seed: int,
            callback: StepCallback | None = None) -> Tensor:
        """Sample from the noised latent ``x`` over ``sigmas`` (samplers.run_sampler's calling convention)."""
        if self.noise == "none":
            return self.function(model, x, sigmas, extra_args=None, callback=callback)
        return self.function(model, x, sigmas, extra_args=None, callback=callback, seed=seed)


def _keyword_names(function: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword parameters a function accepts (None: it takes **kwargs, so any)."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters
                     if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))


# ---- option values that sampler option nodes bind ----------------------------------------------------------------
@dataclass(frozen=True)
class ReverseTimeNoiseScaler:
    """ER-SDE's noise scaler for the reverse-time SDE: x ** (eta + 1) (eta 0: the ODE's)."""

    eta: float

    def __call__(self, x: Tensor) -> Tensor:
        return x ** (self.eta + 1)

