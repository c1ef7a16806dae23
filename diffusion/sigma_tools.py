"""Operations on SIGMAS (1-D float tensors) as ComfyUI's sigma nodes do them: split, flip, set the first, insert
intermediate steps, parse a typed list. Every function returns a new tensor and leaves its input untouched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from torch import Tensor

from diffusion.model_sampling import DiscreteSampling

# ComfyUI's pattern for ManualSigmas: optionally signed decimals; anything between them is a separator.
_NUMBER = re.compile(r"[-+]?(?:\d*\.*\d+)")
# The sigma FlipSigmas puts first when the flipped schedule starts at 0 (a sampler cannot start at sigma 0).
FLIP_START_SIGMA = 0.0001

Spacing = Callable[[Tensor], Tensor]
SPACINGS: dict[str, Spacing] = {
    "linear": lambda x: x,
    "cosine": lambda x: torch.sin(x * math.pi / 2),
    "sine": lambda x: 1 - torch.cos(x * math.pi / 2),
}


class SigmasError(ValueError):
    """A sigma operation that cannot apply to these sigmas (wrong rank, unknown spacing, ...)."""


def _check(sigmas: Tensor) -> None:
    if sigmas.ndim != 1:
        raise SigmasError(f"SIGMAS must be a 1-D tensor, got shape {tuple(sigmas.shape)}")


def split(sigmas: Tensor, step: int) -> tuple[Tensor, Tensor]:
    """(sigmas up to and including index `step`, sigmas from `step` on): the two share sigmas[step], so sampling
    the high part and then the low part runs every step once."""
    _check(sigmas)
    return sigmas[:step + 1].clone(), sigmas[step:].clone()


def split_denoise(sigmas: Tensor, denoise: float) -> tuple[Tensor, Tensor]:
    """Split so that the low part holds the last round(steps · denoise) steps (steps = len − 1).

    ComfyUI's slicing, quirks included: at denoise 0 the high part is empty (sigmas[:-0]) and the low part is the
    last sigma alone.
    """
    _check(sigmas)
    steps = max(sigmas.shape[-1] - 1, 0)
    low_steps = round(steps * denoise)
    return sigmas[:-low_steps].clone(), sigmas[-(low_steps + 1):].clone()


def flip(sigmas: Tensor) -> Tensor:
    """The sigmas in reverse order (for inversion: noising a latent step by step); a leading 0 becomes 0.0001."""
    _check(sigmas)
    if len(sigmas) == 0:
        return sigmas.clone()
    flipped = sigmas.flip(0)
    if flipped[0] == 0:
        flipped[0] = FLIP_START_SIGMA
    return flipped


def set_first(sigmas: Tensor, sigma: float) -> Tensor:
    """The same sigmas with the first replaced (e.g. to start above the model's sigma_max)."""
    _check(sigmas)
    out = sigmas.clone()
    out[0] = sigma  # an empty tensor raises IndexError, as in ComfyUI
    return out


def extend_intermediate(sigmas: Tensor, steps: int, *, start_at_sigma: float, end_at_sigma: float,
                        spacing: str) -> Tensor:
    """Insert steps − 1 sigmas inside each step whose starting sigma lies in [end_at_sigma, start_at_sigma]
    (start_at_sigma < 0: no upper bound), spaced by `spacing` ("linear", "cosine" or "sine") between its ends."""
    _check(sigmas)
    interpolate = SPACINGS.get(spacing)
    if interpolate is None:
        raise SigmasError(f"unknown spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
    upper = float("inf") if start_at_sigma < 0 else start_at_sigma
    fractions = interpolate(torch.linspace(0, 1, steps + 1, device=sigmas.device)[1:-1])
    extended: list[float] = []
    for current, following in zip(sigmas[:-1], sigmas[1:]):
        extended.append(float(current))
        if end_at_sigma <= current <= upper:
            extended.extend((fractions * (following - current) + current).tolist())
    if len(sigmas) > 0:
        extended.append(float(sigmas[-1]))
    return torch.tensor(extended, dtype=torch.float32)


def parse_manual(text: str) -> Tensor:
    """Every number in the text, in order, as sigmas ("14.6, 7.5, 1.2, 0" -> 4 sigmas); no number: empty."""
    return torch.tensor([float(n) for n in _NUMBER.findall(text)], dtype=torch.float32)


def percent_to_sigma(sampling: DiscreteSampling, percent: float, *, actual: bool = False) -> float:
    """The sigma reached after `percent` of the schedule (0 = start, 1 = end), as conditioning ranges use it.

    Those ranges treat 0 as "before any sigma" (a huge value) and 1 as sigma 0; `actual` gives the model's
    sigma_max and sigma_min at those two ends instead.
    """
    if actual and percent == 0.0:
        return sampling.sigma_max
    if actual and percent == 1.0:
        return sampling.sigma_min
    return sampling.percent_to_sigma(percent)
