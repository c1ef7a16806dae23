"""Small deterministic stand-ins for the UNet, shared by the guidance and pipeline tests (not a test module)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from diffusion.model_sampling import DiscreteSampling
from nodes.types import Area, CondEntry, Conditioning

CONTEXT_DIM = 16
MU, S2 = 0.5, 0.09


class TinyUNet:
    """apply_model(x_in, t, context=..., y=None) -> eps-like output: a kernel x kernel conv, a bias from the prompt
    (mean over tokens, so repeating tokens changes nothing), a timestep term, an optional y term. Records each
    call's batch."""

    def __init__(self, seed: int = 0, channels: int = 4, kernel: int = 3) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.conv = torch.randn(channels, channels, kernel, kernel, generator=gen) * 0.2
        self.proj = torch.randn(CONTEXT_DIM, channels, generator=gen)
        self.y_proj = torch.randn(8, channels, generator=gen)
        self.calls: list[dict] = []

    def __call__(self, x_in, t, *, context, y=None):
        self.calls.append({"batch": x_in.shape[0], "context": context.shape, "y": None if y is None else y.shape})
        h = F.conv2d(x_in, self.conv, padding=self.conv.shape[-1] // 2)
        bias = context.mean(dim=1) @ self.proj  # (B, C)
        if y is not None:
            bias = bias + y @ self.y_proj
        return torch.tanh(h + bias[:, :, None, None] + 0.1 * torch.sin(t / 100.0)[:, None, None, None])


class AnalyticEps:
    """apply_model of the Gaussian data model N(MU, S2) per element, in eps form at the timestep's table sigma:
    eps = (x − D(x, σ_t)) / σ_t with D the exact posterior mean. Ignores the prompt."""

    def __init__(self, sampling: DiscreteSampling) -> None:
        self.sampling = sampling

    def __call__(self, x_in, t, *, context, y=None):
        sigma = self.sampling.sigma(t).reshape(-1, 1, 1, 1)
        x = x_in * (sigma**2 + 1) ** 0.5
        denoised = MU + S2 / (S2 + sigma**2) * (x - MU)
        return (x - denoised) / sigma


def prompt(seed: int, tokens: int = 77) -> torch.Tensor:
    """A [1, tokens, CONTEXT_DIM] fake text embedding."""
    return torch.randn(1, tokens, CONTEXT_DIM, generator=torch.Generator().manual_seed(seed))


def cond(*entries: CondEntry) -> Conditioning:
    return Conditioning(tuple(entries))


def entry(seed: int, **kw) -> CondEntry:
    return CondEntry(cross_attn=prompt(seed, kw.pop("tokens", 77)), **kw)


def area(h: int, w: int, y: int, x: int) -> Area:
    return Area(height=h, width=w, y=y, x=x)


def no_extra(entry, latent):
    return {}


def close_to_gaussian(x: torch.Tensor, tol: float = 0.03) -> bool:
    return abs(x.mean().item() - MU) < tol and abs(x.std().item() - math.sqrt(S2)) < tol
