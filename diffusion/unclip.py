"""SD 2.1 unCLIP: a v-prediction SD2 UNet whose "y" (label_emb) input is a noise-augmented CLIP image embedding,
as ComfyUI computes it (model_base.SD21UNCLIP, unclip_adm; ldm/modules/encoders/noise_aug_modules.py).

A checkpoint is unCLIP when its UNet has linear transformer projections and adm_in_channels 1536 (unclip-l: ViT-L
embeds, 768 wide) or 2048 (unclip-h: ViT-H, 1024). It also carries the image tower (`embedder.model.visual.`,
OpenCLIP layout; unCLIPCheckpointLoader's CLIP_VISION) and the noise augmentor's schedule buffers
(`noise_augmentor.*`), which ComfyUI does not read but recomputes from its config, as done here:

    y = Σ_i strength_i · [augment(embed_i, level_i) ⊕ timestep_embedding(level_i)]     level = round(999 · aug)

augment(x, t) = sqrt(ᾱ_t)·x + sqrt(1 − ᾱ_t)·ε on the "squaredcos_cap_v2" schedule (1000 steps; the data mean/std
are 0/1 in ComfyUI: its buffers are not loaded from the file), ε from a CPU generator seeded with the sampler's
seed − 10 (the same ε for every image). With more than one image embedding the sum is noise-augmented once more at
the merge level (0.05), with the next draw of that generator. Without unCLIP conditioning y is zeros.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from diffusion.clip_vision import ClipVisionOutput
from diffusion.families import SD2, ModelFamily
from diffusion.unet import timestep_embedding

SD2_UNCLIP: ModelFamily = dataclasses.replace(SD2, prediction="v", adm="unclip")  # type: ignore[arg-type]
"""SD2 with the unCLIP adm (v-prediction, as ComfyUI's SD21UNCLIP)."""
UNCLIP_EMBED_WIDTH = {1536: 768, 2048: 1024}
"""adm_in_channels -> image embedding width (unclip-l, unclip-h)."""
CLIP_VISION_PREFIX = "embedder.model.visual."
UNCLIP_CONDITIONING = "unclip_conditioning"
MAX_NOISE_LEVEL = 1000
MERGE_NOISE_AUGMENT = 0.05
SEED_OFFSET = 10


@dataclass(frozen=True, eq=False)
class UnclipCond:
    """One unCLIPConditioning application: the image embedding(s), their weight and noise augmentation."""

    output: ClipVisionOutput
    strength: float
    noise_augmentation: float

    def __getitem__(self, key: str) -> object:
        """ComfyUI's dict keys ("clip_vision_output", "strength", "noise_augmentation"), for ported code."""
        return {"clip_vision_output": self.output, "strength": self.strength,
                "noise_augmentation": self.noise_augmentation}[key]


def _betas_squaredcos(steps: int) -> list[float]:
    """Nichol & Dhariwal (2021) cosine schedule, capped at 0.999 (ComfyUI's betas_for_alpha_bar)."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)]


@lru_cache(maxsize=1)
def noise_schedule() -> tuple[Tensor, Tensor]:
    """(sqrt ᾱ_t, sqrt(1 − ᾱ_t)), float32 [1000], computed in float64 as ComfyUI's register_schedule."""
    alphas_cumprod = torch.cumprod(1.0 - torch.tensor(_betas_squaredcos(MAX_NOISE_LEVEL), dtype=torch.float64), 0)
    return alphas_cumprod.sqrt().float(), (1.0 - alphas_cumprod).sqrt().float()


def augment(embed: Tensor, level: int, noise: Tensor) -> Tensor:
    """[1, D] embedding noised to `level` of the augmentor's schedule, followed by the level's timestep embedding:
    [1, 2D]."""
    sqrt_ac, sqrt_1m = noise_schedule()
    z = sqrt_ac[level] * embed + sqrt_1m[level] * noise.to(embed)
    level_emb = timestep_embedding(torch.tensor([level], device=embed.device), embed.shape[-1])
    return torch.cat([z, level_emb.to(z)], dim=1)


def _level(noise_augmentation: float) -> int:
    return round((MAX_NOISE_LEVEL - 1) * noise_augmentation)


def unclip_adm(conds: Sequence[UnclipCond] | None, *, adm_channels: int, seed: int,
               device: torch.device | str = "cpu", merge_augmentation: float = MERGE_NOISE_AUGMENT) -> Tensor:
    """The unCLIP UNet's y [1, adm_channels] for an entry's unCLIP conditionings (zeros without any)."""
    if not conds:
        return torch.zeros((1, adm_channels), device=device)
    width = adm_channels // 2
    generator = torch.Generator().manual_seed(seed - SEED_OFFSET)
    noise = torch.randn((1, width), generator=generator)  # ComfyUI re-seeds per embedding: all get this draw
    outputs: list[Tensor] = []
    for cond in conds:
        embeds = cond.output.image_embeds.float().to(device)
        if embeds.shape[-1] != width:
            raise ValueError(f"unCLIP: the image embedding is {embeds.shape[-1]} wide, this model takes {width} "
                             f"(a CLIP vision model of another size?)")
        for embed in embeds.reshape(-1, width):
            outputs.append(augment(embed[None], _level(cond.noise_augmentation), noise) * cond.strength)
    if len(outputs) == 1:
        return outputs[0]
    merged = torch.stack(outputs).sum(0)  # the merge takes the generator's next draw
    return augment(merged[:, :width], _level(merge_augmentation), torch.randn((1, width), generator=generator))


__all__ = [
    "CLIP_VISION_PREFIX",
    "SD2_UNCLIP",
    "UNCLIP_CONDITIONING",
    "UNCLIP_EMBED_WIDTH",
    "UnclipCond",
    "augment",
    "noise_schedule",
    "unclip_adm",
]
