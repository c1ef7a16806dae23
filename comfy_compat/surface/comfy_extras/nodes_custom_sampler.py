"""ComfyUI's comfy_extras.nodes_custom_sampler: its node classes (comfy_extras/__init__.py) and the NOISE objects
packs build themselves (Noise_RandomNoise, Noise_EmptyNoise), which are Chisel's NOISE values: the core
SamplerCustomAdvanced takes them, and their generate_noise takes a LATENT dict or Chisel's Latent."""

from __future__ import annotations

import sys
from typing import Any

import torch

from comfy_compat.surface.comfy_extras import populate
from diffusion.sampling_values import DisableNoise, RandomNoise


def _latent(value: Any) -> Any:
    from nodes.legacy import from_comfy_latent

    return from_comfy_latent(value)


class Noise_RandomNoise(RandomNoise):  # noqa: N801 - ComfyUI's name
    """Seeded noise, the draw KSampler makes for the seed."""

    def __init__(self, seed: int):
        super().__init__(seed=int(seed))

    def generate_noise(self, input_latent: Any) -> torch.Tensor:
        return super().generate_noise(_latent(input_latent))


class Noise_EmptyNoise(DisableNoise):  # noqa: N801
    """No initial noise."""

    def __init__(self) -> None:
        super().__init__(seed=0)

    def generate_noise(self, input_latent: Any) -> torch.Tensor:
        return super().generate_noise(_latent(input_latent))


populate(sys.modules[__name__], "comfy_extras.nodes_custom_sampler")
