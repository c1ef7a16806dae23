"""Classifier-free guidance over regional conditioning, as ComfyUI computes it (``comfy/samplers.py``).

Ho & Salimans (2022), "Classifier-Free Diffusion Guidance", applied to the denoised predictions:
D_cfg = D_uncond + (D_cond − D_uncond)·cfg, where D_cond (and D_uncond) is the weighted average of every active
conditioning entry's prediction over the pixels it covers (area crop × mask × strength, feathered area edges).

Entries are resolved once per sampling run (``prepare_conditioning``: areas to latent pixels, masks to latent size,
start/end percent to sigmas, model inputs via the injected ``extra_conds``), then ``GuidedDenoiser`` evaluates them
each step, batching every entry of the same shape, positive and negative alike, into one model call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusion.model_sampling import DiscreteSampling
from diffusion.samplers.cfg_pp import publish_uncond, uncond_wanted
from diffusion.values import Area, CondEntry, Conditioning

# The model-input name of the text embeddings (the UNet's ``context``). Prompts of different token counts are
# batched by repeating the shorter along the token axis, which leaves cross-attention unchanged.
CROSS_ATTN_KEY = "context"
# Most a shorter prompt is repeated to batch it with a longer one (ComfyUI's limit).
MAX_TOKEN_REPEAT = 4
# Width in latent pixels of the linear fade at an area's inner edges (ComfyUI's "fuzz").
AREA_FEATHER = 8
# Start value of the per-pixel weight sum: avoids 0/0 where no entry applies (those pixels predict 0).
_COUNT_EPS = 1e-37

Slot = Literal["cond", "uncond"]
ExtraConds = Callable[[CondEntry, Tensor], Mapping[str, Any]]
"""(entry, noise-shaped latent) -> extra model inputs for this entry (e.g. SDXL's {"y": ...}); may be empty."""
ApplyDenoiser = Callable[..., Tensor]
"""D(x, sigma, **model_inputs) -> x0 (e.g. model_sampling.Denoiser)."""
PredictionObserver = Callable[[Tensor, Tensor, Mapping[Slot, Tensor]], None]
"""(x, sigma, {"cond": x0, "uncond": x0}) after each evaluation; "uncond" is absent when cfg is 1 (not evaluated).
An observer only looks (diffusion/timeline.py records a run): it must not change the tensors."""


class GuidanceError(ValueError):
    """Conditioning that cannot be applied to this latent (empty, bad mask or area, ...)."""


@dataclass(frozen=True)
class LatentArea:
    """A rectangle in latent pixels: height, width, top, left (ComfyUI's ``area`` tuple order)."""

    height: int
    width: int
    y: int
    x: int

    def inside(self, other: LatentArea) -> bool:
        return (self.y >= other.y and self.x >= other.x and self.y + self.height <= other.y + other.height
                and self.x + self.width <= other.x + other.width)

    @property
    def size(self) -> int:
        return self.height * self.width


@dataclass(frozen=True, eq=False)
class PreparedCond:
    """A conditioning entry resolved for one latent size.

    Attributes:
        slot: "cond" (positive) or "uncond" (negative).
        area: where it applies, or None for the whole latent.
        mask: None, or [M, H, W] at the latent's size (M = 1 or the batch).
        mask_strength / strength: multipliers of the mask and of the whole entry.
        sigma_start / sigma_end: the entry is evaluated while sigma_end <= sigma <= sigma_start.
        model_inputs: keyword inputs of the model: {"context": [1, T, D], ...extra_conds}.
    """

    slot: Slot
    area: LatentArea | None
    mask: Tensor | None
    mask_strength: float
    strength: float
    sigma_start: float
    sigma_end: float
    model_inputs: Mapping[str, Any]


def _resolve_area(area: Area | None, height: int, width: int) -> LatentArea | None:
    if area is None:
        return None
    if area.unit == "percent":
        # Python's round, as ComfyUI: sizes at least one latent pixel.
        return LatentArea(max(1, round(area.height * height)), max(1, round(area.width * width)),
                          round(area.y * height), round(area.x * width))
    return LatentArea(int(area.height), int(area.width), int(area.y), int(area.x))


def _resize_mask(mask: Tensor, height: int, width: int) -> Tensor:
    """[H', W'] / [M, H', W'] -> [M, H, W] float32, bilinear when the size differs."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise GuidanceError(f"a conditioning mask must be [H, W] or [M, H, W], got shape {tuple(mask.shape)}")
    mask = mask.float()
    if tuple(mask.shape[1:]) != (height, width):
        mask = F.interpolate(mask.unsqueeze(1), size=(height, width), mode="bilinear").squeeze(1)  # (M, H, W)
    return mask


def _mask_bounds(mask: Tensor) -> LatentArea:
    """The bounding box of a mask's nonzero pixels (over the batch), at least 8×8; 8×8 at 0,0 when empty."""
    covered = mask.abs().amax(dim=0) > 0  # (H, W)
    if not covered.any():
        return LatentArea(8, 8, 0, 0)
    rows = covered.any(dim=1).nonzero().flatten()
    cols = covered.any(dim=0).nonzero().flatten()
    y, x = int(rows[0]), int(cols[0])
    return LatentArea(max(8, int(rows[-1]) - y + 1), max(8, int(cols[-1]) - x + 1), y, x)


def _prepare_entry(entry: CondEntry, slot: Slot, *, latent: Tensor, sampling: DiscreteSampling,
                   extra_conds: ExtraConds) -> PreparedCond:
    height, width = latent.shape[-2:]
    area = _resolve_area(entry.area, height, width)
    mask = None if entry.mask is None else _resize_mask(entry.mask.to(latent.device), height, width)
    if mask is not None and entry.set_area_to_bounds:
        area = _mask_bounds(mask)
    inputs = {CROSS_ATTN_KEY: entry.cross_attn, **extra_conds(entry, latent)}
    inputs = {k: v.to(latent.device) if isinstance(v, Tensor) else v for k, v in inputs.items()}
    return PreparedCond(
        slot=slot, area=area, mask=mask, mask_strength=float(entry.mask_strength), strength=float(entry.strength),
        sigma_start=sampling.percent_to_sigma(entry.start_percent),
        sigma_end=sampling.percent_to_sigma(entry.end_percent), model_inputs=inputs,
    )


def _add_same_area_counterparts(target: list[PreparedCond], entry: PreparedCond) -> None:
    """Give an area entry a counterpart of the other slot over the same area (ComfyUI's
    create_cond_with_same_area_if_none): the other slot's smallest entry enclosing the area, re-cut to it.

    Why: otherwise the other slot is averaged only from whole-image predictions inside the area while this slot
    mixes in the area-cropped one, and the guidance difference picks up the crop itself.
    """
    if entry.area is None:
        return
    smallest: PreparedCond | None = None
    for other in target:
        if other.area is None:
            smallest = other if smallest is None else smallest
        elif entry.area.inside(other.area):
            if smallest is None or smallest.area is None or smallest.area.size > other.area.size:
                smallest = other
    if smallest is None or smallest.area == entry.area:
        return
    target.append(replace(entry, slot=smallest.slot, model_inputs=smallest.model_inputs))


def prepare_conditioning(
    positive: Conditioning,
    negative: Conditioning,
    *,
    latent: Tensor,
    sampling: DiscreteSampling,
    extra_conds: ExtraConds,
) -> tuple[PreparedCond, ...]:
    """Resolve both conditionings for a latent of this shape (``latent`` is the noise-shaped [B, C, H, W] tensor).

    Returns the positive entries, then the negative ones, then same-area counterparts.
    """
    if len(positive) == 0:
        raise GuidanceError("positive conditioning has no entries")
    pos = [_prepare_entry(e, "cond", latent=latent, sampling=sampling, extra_conds=extra_conds)
           for e in positive.entries]
    neg = [_prepare_entry(e, "uncond", latent=latent, sampling=sampling, extra_conds=extra_conds)
           for e in negative.entries]
    for entry in list(pos):
        _add_same_area_counterparts(neg, entry)
    for entry in list(neg):
        _add_same_area_counterparts(pos, entry)
    return tuple(pos + neg)


@dataclass(frozen=True, eq=False)
class _Chunk:
    """One entry's share of a model call at one step."""

    slot: Slot
    x: Tensor  # (B, C, h, w) crop of the latent
    weight: Tensor  # (B, C, h, w) mult = mask·mask_strength·strength, feathered
    area: LatentArea | None
    inputs: Mapping[str, Any]


def _to_batch(value: Any, batch: int) -> Any:
    """Repeat or cut a tensor's first axis to ``batch`` (a [1, ...] conditioning serves every latent)."""
    if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] == batch:
        return value
    if value.shape[0] > batch:
        return value[:batch]
    reps = math.ceil(batch / value.shape[0])
    return value.repeat((reps,) + (1,) * (value.ndim - 1))[:batch]


def _feather(weight: Tensor, area: LatentArea, full_h: int, full_w: int) -> Tensor:
    """Fade the weight linearly over the last AREA_FEATHER pixels at each edge that lies inside the image."""
    weight = weight.clone()
    for dim, offset, length, full in ((2, area.y, area.height, full_h), (3, area.x, area.width, full_w)):
        ramp_len = min(AREA_FEATHER, weight.shape[dim] // 4)
        for t in range(ramp_len):
            factor = (t + 1) / ramp_len
            if offset != 0:
                weight.narrow(dim, t, 1).mul_(factor)
            if offset + length < full:
                weight.narrow(dim, length - 1 - t, 1).mul_(factor)
    return weight


def _chunk(entry: PreparedCond, x: Tensor) -> _Chunk:
    """Crop x to the entry's area and build its weight (ComfyUI get_area_and_mult)."""
    batch, channels, full_h, full_w = x.shape
    area = entry.area
    crop = x
    if area is not None:
        # Clamp the size to the latent, as ComfyUI does (an area may overhang the bottom/right edge).
        area = replace(area, height=min(full_h - area.y, area.height), width=min(full_w - area.x, area.width))
        if area.height <= 0 or area.width <= 0:
            raise GuidanceError(f"conditioning area {area} lies outside the {full_h}x{full_w} latent")
        crop = x[:, :, area.y:area.y + area.height, area.x:area.x + area.width]
    if entry.mask is not None:
        mask = entry.mask[:batch]
        if area is not None:
            mask = mask[:, area.y:area.y + area.height, area.x:area.x + area.width]
        mask = (mask * entry.mask_strength).unsqueeze(1)  # (M, 1, h, w)
        weight = mask.repeat(batch // mask.shape[0], channels, 1, 1) * entry.strength
    else:
        weight = torch.ones_like(crop) * entry.strength
        if area is not None:
            weight = _feather(weight, area, full_h, full_w)
    inputs = {k: _to_batch(v, batch) for k, v in entry.model_inputs.items()}
    return _Chunk(slot=entry.slot, x=crop, weight=weight, area=area, inputs=inputs)


def _tokens_compatible(a: Tensor, b: Tensor) -> bool:
    if a.shape == b.shape:
        return True
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        return False
    return math.lcm(a.shape[1], b.shape[1]) // min(a.shape[1], b.shape[1]) <= MAX_TOKEN_REPEAT


def _compatible(a: _Chunk, b: _Chunk) -> bool:
    """Whether two chunks can share one model call: same crop shape, same inputs of concatenable shapes."""
    if a.x.shape != b.x.shape or a.inputs.keys() != b.inputs.keys():
        return False
    for key, va in a.inputs.items():
        vb = b.inputs[key]
        if isinstance(va, Tensor) != isinstance(vb, Tensor):
            return False
        if not isinstance(va, Tensor):
            if va != vb:
                return False
        elif key == CROSS_ATTN_KEY:
            if not _tokens_compatible(va, vb):
                return False
        elif va.shape != vb.shape:
            return False
    return True


def _concat_inputs(chunks: Sequence[_Chunk]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key, first in chunks[0].inputs.items():
        if not isinstance(first, Tensor):
            merged[key] = first
            continue
        values = [c.inputs[key] for c in chunks]
        if key == CROSS_ATTN_KEY:
            tokens = math.lcm(*(v.shape[1] for v in values))
            values = [v.repeat(1, tokens // v.shape[1], 1) for v in values]  # (B, tokens, D)
        merged[key] = torch.cat(values)
    return merged


@dataclass(frozen=True, eq=False)
class GuidedDenoiser:
    """D(x, sigma) with classifier-free guidance over prepared conditioning entries.

    Attributes:
        denoiser: D(x, sigma, **model_inputs) -> x0 for one batch of crops.
        entries: from prepare_conditioning.
        cfg: guidance scale; at 1 (within float tolerance) the negative entries are not evaluated at all, unless
            a CFG++ sampler asks for the unconditional prediction (then D = uncond + (cond − uncond)·1, as ComfyUI).
        max_batch: most entries evaluated in one model call (None: all compatible entries at once).
        observer: called with each evaluation's per-slot predictions (None: nobody watches).
    """

    denoiser: ApplyDenoiser
    entries: tuple[PreparedCond, ...]
    cfg: float
    max_batch: int | None = None
    observer: PredictionObserver | None = None

    def __post_init__(self) -> None:
        if self.max_batch is not None and self.max_batch < 1:
            raise GuidanceError(f"max_batch must be >= 1 or None, got {self.max_batch}")
        if not math.isfinite(self.cfg):
            raise GuidanceError(f"cfg must be finite, got {self.cfg}")

    @property
    def skips_uncond(self) -> bool:
        """Whether the negative is left out: at cfg 1 it cancels, unless a CFG++ sampler is listening for it."""
        return math.isclose(self.cfg, 1.0) and not uncond_wanted()

    def predictions(self, x: Tensor, sigma: Tensor) -> dict[Slot, Tensor]:
        """The weighted-average x0 prediction of each slot (ComfyUI calc_cond_batch)."""
        slots: tuple[Slot, ...] = ("cond",) if self.skips_uncond else ("cond", "uncond")
        sigma_now = float(sigma.reshape(-1)[0])
        pending = [_chunk(e, x) for e in self.entries
                   if e.slot in slots and e.sigma_end <= sigma_now <= e.sigma_start]
        out = {s: torch.zeros_like(x) for s in slots}
        count = {s: torch.full_like(x, _COUNT_EPS) for s in slots}
        while pending:
            first = pending[0]
            batch = [c for c in pending if _compatible(c, first)][: self.max_batch]
            pending = [c for c in pending if not any(c is b for b in batch)]
            n = len(batch)
            x_in = torch.cat([c.x for c in batch])  # (n·B, C, h, w)
            sigma_in = torch.cat([sigma.reshape(-1).expand(x.shape[0])] * n)  # (n·B,)
            outputs = self.denoiser(x_in, sigma_in, **_concat_inputs(batch)).chunk(n)
            for chunk, pred in zip(batch, outputs):
                target_out, target_count = out[chunk.slot], count[chunk.slot]
                if chunk.area is not None:
                    a = chunk.area
                    target_out = target_out[:, :, a.y:a.y + a.height, a.x:a.x + a.width]
                    target_count = target_count[:, :, a.y:a.y + a.height, a.x:a.x + a.width]
                target_out += pred * chunk.weight  # in place on this call's own accumulators (views)
                target_count += chunk.weight
        preds = {s: out[s] / count[s] for s in slots}
        if self.observer is not None:
            self.observer(x, sigma, preds)
        return preds

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        preds = self.predictions(x, sigma)
        if "uncond" not in preds:
            return preds["cond"]
        publish_uncond(preds["uncond"])  # for a CFG++ sampler (samplers/cfg_pp.py); a no-op otherwise
        return preds["uncond"] + (preds["cond"] - preds["uncond"]) * self.cfg
