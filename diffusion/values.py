"""The values the diffusion code works on, shared with the nodes that carry them. All of them are immutable: code
that changes a value returns a new one (`dataclasses.replace` / `.replace(...)`) and never writes into an input
tensor.

LATENT and CONDITIONING are typed dataclasses here (ComfyUI uses dicts and lists of pairs; nodes/legacy.py converts at
the boundary for ComfyUI-style custom nodes). MODEL, CLIP and VAE are the handles in diffusion/handles.py. A Preview is
an encoded image shown while a model runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch


@dataclass(frozen=True, eq=False)
class Latent:
    """A batch of latents in the VAE's raw latent space (not yet multiplied by the model's latent scale factor).

    samples      [B, C, H/8, W/8]
    noise_mask   None, or [B or 1, 1, h, w] in [0, 1] (1 = resample); resized to the latent size when sampling
    batch_index  which images of a seeded batch these are (keeps per-image noise when a batch is split/repeated)
    """

    samples: torch.Tensor
    noise_mask: torch.Tensor | None = None
    batch_index: tuple[int, ...] | None = None

    def replace(self, **changes: Any) -> Latent:
        return replace(self, **changes)

    @property
    def batch_size(self) -> int:
        return int(self.samples.shape[0])


@dataclass(frozen=True)
class Area:
    """A rectangle a conditioning applies to. unit "latent": latent pixels (image pixels // 8), ComfyUI's
    `area=(h, w, y, x)`; unit "percent": fractions of the image (ConditioningSetAreaPercentage)."""

    height: float
    width: float
    y: float
    x: float
    unit: Literal["latent", "percent"] = "latent"


@dataclass(frozen=True, eq=False)
class CondEntry:
    """One conditioning entry: text embeddings plus where and when they apply.

    cross_attn     [1, T, D] token embeddings (T = 77 * chunks)
    pooled         [1, P] pooled text embedding (SDXL's clip_g), or None
    area           None (whole image) or an Area
    strength       multiplies this entry's weight where it applies
    mask           None or [1, H, W] (latent or image resolution) weighting where it applies
    mask_strength  multiplies the mask
    start_percent / end_percent   the part of the sampling schedule (0 = first step, 1 = last) it is active in
    extra          family-specific values (e.g. SDXL "width"/"height"/"crop_w"/"crop_h"/"target_width"/...)
    control        None, or the ControlNet / T2I-adapter chain applied to this entry (controlnet.AppliedControl)
    control_apply_to_uncond  the control also applies to negative entries without one (ControlNetApply, the old
                   node, sets it on the positive only)
    """

    cross_attn: torch.Tensor
    pooled: torch.Tensor | None = None
    area: Area | None = None
    strength: float = 1.0
    mask: torch.Tensor | None = None
    mask_strength: float = 1.0
    set_area_to_bounds: bool = False
    start_percent: float = 0.0
    end_percent: float = 1.0
    extra: Mapping[str, Any] = field(default_factory=dict)
    control: Any = None
    control_apply_to_uncond: bool = False

    def replace(self, **changes: Any) -> CondEntry:
        return replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Conditioning:
    """A list of conditioning entries (ConditioningCombine concatenates; sampling averages where they overlap)."""

    entries: tuple[CondEntry, ...]

    def map(self, change: Callable[[CondEntry], CondEntry]) -> Conditioning:
        return Conditioning(tuple(change(entry) for entry in self.entries))

    def with_extra(self, **values: Any) -> Conditioning:
        """Every entry with `values` merged into its extra (these win over keys already there)."""
        return self.map(lambda e: e.replace(extra={**e.extra, **values}))

    def __add__(self, other: Conditioning) -> Conditioning:
        return Conditioning(self.entries + other.entries)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class Preview:
    """A preview image to show while a node runs: encoded bytes (JPEG or PNG) ready to send."""

    data: bytes
    format: str = "JPEG"  # "JPEG" | "PNG"
