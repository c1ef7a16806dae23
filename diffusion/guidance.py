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

from diffusion.model_options import NO_OPTIONS, ModelOptions, cfg_combine, pre_cfg
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
        control: None, or the entry's control prepared for this run (controlnet.PreparedControl: called with
            each model call's x, sigma, inputs and chunk count, it gives the UNet's residuals); entries sharing
            one applied control share one prepared control, and only those batch together.
        control_apply_to_uncond: the control is also given to negative entries that have none.
    """

    slot: Slot
    area: LatentArea | None
    mask: Tensor | None
    mask_strength: float
    strength: float
    sigma_start: float
    sigma_end: float
    model_inputs: Mapping[str, Any]
    control: Any = None
    control_apply_to_uncond: bool = False


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
                   extra_conds: ExtraConds, controls: dict[int, Any] | None = None) -> PreparedCond:
    height, width = latent.shape[-2:]
    area = _resolve_area(entry.area, height, width)
    mask = None if entry.mask is None else _resize_mask(entry.mask.to(latent.device), height, width)
    if mask is not None and entry.set_area_to_bounds:
        area = _mask_bounds(mask)
    # ComfyUI tells a negative entry's model inputs its prompt_type (the SDXL refiner's default aesthetic score).
    seen = entry if slot == "cond" else entry.replace(extra={"prompt_type": "negative", **entry.extra})
    inputs = {CROSS_ATTN_KEY: entry.cross_attn, **extra_conds(seen, latent)}
    inputs = {k: v.to(latent.device) if isinstance(v, Tensor) else v for k, v in inputs.items()}
    control = getattr(entry, "control", None)
    if control is not None:
        # One prepared control per applied control (ComfyUI's pre_run on the shared object), so the positive and
        # negative entries of one ControlNetApplyAdvanced batch into one model call.
        controls = {} if controls is None else controls
        if id(control) not in controls:
            controls[id(control)] = control.prepared(sampling)
        control = controls[id(control)]
    return PreparedCond(
        slot=slot, area=area, mask=mask, mask_strength=float(entry.mask_strength), strength=float(entry.strength),
        sigma_start=sampling.percent_to_sigma(entry.start_percent),
        sigma_end=sampling.percent_to_sigma(entry.end_percent), model_inputs=inputs, control=control,
        control_apply_to_uncond=bool(getattr(entry, "control_apply_to_uncond", False)),
    )


def _share_control_with_uncond(pos: list[PreparedCond], neg: list[PreparedCond]) -> None:
    """Give the controls of positive entries marked control_apply_to_uncond (whole-image ones) to the negative
    whole-image entries, unless a negative one has its own (ComfyUI's apply_empty_x_to_equal_area for "control")."""
    shared = [e.control for e in pos if e.area is None and e.control_apply_to_uncond and e.control is not None]
    if not shared or any(e.area is None and e.control is not None for e in neg):
        return
    others = [i for i, e in enumerate(neg) if e.area is None]
    if not others:
        return
    for n, control in enumerate(shared):
        index = others[n % len(others)]
        neg[index] = replace(neg[index], control=control)


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
    controls: dict[int, Any] = {}
    pos = [_prepare_entry(e, "cond", latent=latent, sampling=sampling, extra_conds=extra_conds, controls=controls)
           for e in positive.entries]
    neg = [_prepare_entry(e, "uncond", latent=latent, sampling=sampling, extra_conds=extra_conds,
                          controls=controls)
           for e in negative.entries]
    for entry in list(pos):
        _add_same_area_counterparts(neg, entry)
    for entry in list(neg):
        _add_same_area_counterparts(pos, entry)
    _share_control_with_uncond(pos, neg)
    return tuple(pos + neg)


@dataclass(frozen=True, eq=False)
class _Chunk:
    """One entry's share of a model call at one step."""

    slot: Slot
    x: Tensor  # (B, C, h, w) crop of the latent
    weight: Tensor  # (B, C, h, w) mult = mask·mask_strength·strength, feathered
    area: LatentArea | None
    inputs: Mapping[str, Any]
    control: Any = None  # the entry's PreparedControl, or None


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
    if area is not None and isinstance(inputs.get("c_concat"), Tensor):
        # An inpainting / InstructPix2Pix UNet's extra channels are cut like x (ComfyUI's CONDNoiseShape).
        inputs["c_concat"] = inputs["c_concat"][:, :, area.y:area.y + area.height, area.x:area.x + area.width]
    return _Chunk(slot=entry.slot, x=crop, weight=weight, area=area, inputs=inputs, control=entry.control)


def _tokens_compatible(a: Tensor, b: Tensor) -> bool:
    if a.shape == b.shape:
        return True
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        return False
    return math.lcm(a.shape[1], b.shape[1]) // min(a.shape[1], b.shape[1]) <= MAX_TOKEN_REPEAT


def _compatible(a: _Chunk, b: _Chunk) -> bool:
    """Whether two chunks can share one model call: same crop shape, same inputs of concatenable shapes."""
    if a.x.shape != b.x.shape or a.inputs.keys() != b.inputs.keys() or a.control is not b.control:
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
        options: the MODEL's function patches (model_options.py): transformer patches and the model function
            wrapper reach every model call; pre-CFG, cfg and post-CFG functions replace the plain combination.
    """

    denoiser: ApplyDenoiser
    entries: tuple[PreparedCond, ...]
    cfg: float
    max_batch: int | None = None
    observer: PredictionObserver | None = None
    options: ModelOptions = NO_OPTIONS

    def __post_init__(self) -> None:
        if self.max_batch is not None and self.max_batch < 1:
            raise GuidanceError(f"max_batch must be >= 1 or None, got {self.max_batch}")
        if not math.isfinite(self.cfg):
            raise GuidanceError(f"cfg must be finite, got {self.cfg}")

    @property
    def skips_uncond(self) -> bool:
        """Whether the negative is left out: at cfg 1 it cancels, unless a CFG++ sampler is listening for it."""
        return (math.isclose(self.cfg, 1.0) and not uncond_wanted()
                and not self.options.disable_cfg1_optimization)

    def predictions(self, x: Tensor, sigma: Tensor) -> dict[Slot, Tensor]:
        """The weighted-average x0 prediction of each slot (ComfyUI calc_cond_batch)."""
        slots: tuple[Slot, ...] = ("cond",) if self.skips_uncond else ("cond", "uncond")
        groups = [(slots.index(e.slot), e) for e in self.entries if e.slot in slots]
        preds = dict(zip(slots, self.evaluate(groups, len(slots), x, sigma, self.options)))
        if self.observer is not None:
            self.observer(x, sigma, preds)
        return preds

    def evaluate(self, entries: Sequence[tuple[int, PreparedCond]], groups: int, x: Tensor, sigma: Tensor,
                 options: ModelOptions) -> list[Tensor]:
        """The weighted-average x0 prediction of each group of entries ((group index, entry) pairs; a group
        without active entries predicts 0), batching compatible entries across groups. The group index is the
        ``cond_or_uncond`` value patches see (0 the positive, 1 the negative in a guided call)."""
        sigma_now = float(sigma.reshape(-1)[0])
        pending = [(g, _chunk(e, x)) for g, e in entries if e.sigma_end <= sigma_now <= e.sigma_start]
        out = [torch.zeros_like(x) for _ in range(groups)]
        count = [torch.full_like(x, _COUNT_EPS) for _ in range(groups)]
        base_options = options.transformer_options()
        wrapper = options.model_function_wrapper
        sigma_b = sigma.reshape(-1).expand(x.shape[0])  # (B,)
        while pending:
            first = pending[0][1]
            batch = [(g, c) for g, c in pending if _compatible(c, first)][: self.max_batch]
            pending = [(g, c) for g, c in pending if not any(c is b for _, b in batch)]
            n = len(batch)
            x_in = torch.cat([c.x for _, c in batch])  # (n·B, C, h, w)
            sigma_in = torch.cat([sigma_b] * n)  # (n·B,)
            inputs = _concat_inputs([c for _, c in batch])
            if first.control is not None:
                control = first.control(x_in, sigma_in, inputs, n)  # ComfyUI get_control, per model call
                if control is not None:
                    inputs["control"] = control
            cond_or_uncond = [g for g, _ in batch]
            if base_options is not None:
                inputs["transformer_options"] = {**base_options, "cond_or_uncond": cond_or_uncond,
                                                 "sigmas": sigma_b}
            if wrapper is not None:
                output = wrapper(self.denoiser, {"input": x_in, "timestep": sigma_in, "c": inputs,
                                                 "cond_or_uncond": cond_or_uncond})
            else:
                output = self.denoiser(x_in, sigma_in, **inputs)
            outputs = output.chunk(n)
            for (group, chunk), pred in zip(batch, outputs):
                target_out, target_count = out[group], count[group]
                if chunk.area is not None:
                    a = chunk.area
                    target_out = target_out[:, :, a.y:a.y + a.height, a.x:a.x + a.width]
                    target_count = target_count[:, :, a.y:a.y + a.height, a.x:a.x + a.width]
                target_out += pred * chunk.weight  # in place on this call's own accumulators (views)
                target_count += chunk.weight
        return [o / c for o, c in zip(out, count)]

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        if self.options.touches_guidance:
            return self._call_with_options(x, sigma)
        preds = self.predictions(x, sigma)
        if "uncond" not in preds:
            return preds["cond"]
        publish_uncond(preds["uncond"])  # for a CFG++ sampler (samplers/cfg_pp.py); a no-op otherwise
        return preds["uncond"] + (preds["cond"] - preds["uncond"]) * self.cfg

    def slot_entries(self, slot: Slot) -> tuple[PreparedCond, ...]:
        return tuple(e for e in self.entries if e.slot == slot)

    def _call_with_options(self, x: Tensor, sigma: Tensor) -> Tensor:
        """ComfyUI's sampling_function: predictions, pre-CFG functions, the cfg function (or CFG), post-CFG
        functions; a skipped negative (cfg 1) predicts zeros and its conditioning is None."""
        preds = self.predictions(x, sigma)
        sigma_b = sigma.reshape(-1).expand(x.shape[0])  # (B,): what ComfyUI's functions index per sample
        model = GuidanceModel(self)
        uncond_entries = None if "uncond" not in preds else self.slot_entries("uncond")
        conds = [self.slot_entries("cond"), uncond_entries]
        out = [preds["cond"], preds["uncond"] if "uncond" in preds else torch.zeros_like(x)]
        out = pre_cfg(self.options, model=model, conds=conds, conds_out=out, cond_scale=self.cfg, x=x,
                      sigma=sigma_b)
        result = cfg_combine(self.options, model=model, cond_pred=out[0], uncond_pred=out[1], cond_scale=self.cfg,
                             x=x, sigma=sigma_b, cond=conds[0], uncond=conds[1])
        publish_uncond(out[1])
        return result


@dataclass(frozen=True, eq=False)
class GuidanceModel:
    """What guidance functions get as ``args["model"]``: the guided denoiser's model, to evaluate more
    conditioning groups (ComfyUI's ``comfy.samplers.calc_cond_batch(model, conds, x, sigma, model_options)``)."""

    guided: GuidedDenoiser

    @property
    def model_sampling(self) -> Any:
        """The noise table (DiscreteSampling) of the denoiser, when it has one."""
        return getattr(self.guided.denoiser, "sampling", None)

    def calc_cond_batch(self, conds: Sequence[Sequence[PreparedCond] | None], x: Tensor, sigma: Tensor,
                        model_options: ModelOptions | Mapping[str, Any] | None = None) -> list[Tensor]:
        """The x0 prediction of each group of prepared entries (a None group predicts zeros), evaluated with
        ``model_options`` (default: the model's own; a ComfyUI dict is accepted)."""
        options = self.guided.options if model_options is None else ModelOptions.from_comfy(model_options)
        entries = [(g, e) for g, group in enumerate(conds) if group is not None for e in group]
        return self.guided.evaluate(entries, len(conds), x, sigma, options)
