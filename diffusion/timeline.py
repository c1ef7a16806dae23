"""Recording a sampling run step by step: what the sampler held (x_t), what the model predicted (x̂₀ guided, and
the conditional and unconditional x̂₀ CFG mixed), at which noise level — the "film" the inspect nodes show.

A ``TimelineRecorder`` watches a run without changing it: it is the guided denoiser's prediction observer
(guidance.GuidedDenoiser.observer, which hands it the per-slot predictions of every evaluation) and it sees every
sampler step through the step callback. sampling_pipeline.sample_latent and guiders.sample_guided take it as
``observer``; the numbers of the run are the same with or without it (tested bit for bit).

What one step's record is: the model evaluation the sampler reports through its callback (samplers/common.py
SamplerStep), i.e. the evaluation at the step's own sigma σ_i. Samplers that evaluate the model more than once per
step (heun, dpm_2, dpmpp_2s_ancestral, dpmpp_sde, ...) make further evaluations at intermediate sigmas; those are
not frames. Every sampler makes the step's evaluation at σ_i right before reporting the step, so a record is the
most recent evaluation when the callback comes: its input x_t and its conditional / unconditional x̂₀, with the
guided x̂₀ the sampler used (the callback's ``denoised``). x_t is the model's input rather than the callback's
``x``: they are the same tensor except for uni_pc, whose corrector moves x after evaluating the model there, and
inpainting, where the model sees the kept region re-noised. dpm_fast and dpm_adaptive choose their own steps
between the schedule's ends, so their records follow their grid (dpm_adaptive also reports rejected steps).

ε̂ is derived, never stored: ε̂ = (x_t − x̂₀)/σ_t, the noise prediction in the k-diffusion (VE) parameterisation
(for an eps model exactly what the network predicted, up to float rounding; for a v model the implied noise).
Tensors are of one batch item (``item``, default 0; None keeps the whole batch), in model space (raw VAE latent ×
the family's scale factor), copied to the CPU as float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from diffusion.guidance import Slot
from diffusion.samplers.common import SamplerStep, StepCallback


class SamplingObserver(Protocol):
    """What a sampling run reports to an observer: every evaluation's per-slot predictions, then every step."""

    def predictions(self, x: Tensor, sigma: Tensor, preds: Mapping[Slot, Tensor]) -> None: ...

    def step(self, step: SamplerStep) -> None: ...


def observed_callback(callback: StepCallback | None, observer: SamplingObserver | None) -> StepCallback | None:
    """The step callback with the observer told first (the callback unchanged when there is no observer)."""
    if observer is None:
        return callback

    def both(step: SamplerStep) -> None:
        observer.step(step)
        if callback is not None:
            callback(step)

    return both


def eps_from(x: Tensor, x0: Tensor, sigma: float) -> Tensor:
    """ε̂ = (x − x̂₀)/σ; zeros at σ = 0, where no noise is left to predict."""
    if sigma == 0.0:
        return torch.zeros_like(x)
    return (x - x0) / sigma


@dataclass(frozen=True, eq=False)
class StepRecord:
    """One sampler step of one batch item ([C, H, W]) or of the batch ([B, C, H, W]), in model space, on the CPU.

    Attributes:
        index: 0-based step number (the sampler's).
        sigma: σ_i, the noise level the model was evaluated at.
        x: x_t, the latent the model was evaluated at in this step (the sampler's latent before its update).
        x0: the guided x̂₀ the sampler used (CFG of cond and uncond; inpainting's kept region included).
        x0_cond: x̂₀ of the positive conditioning.
        x0_uncond: x̂₀ of the negative conditioning; None when cfg is 1 (the negative is not evaluated).
    """

    index: int
    sigma: float
    x: Tensor
    x0: Tensor
    x0_cond: Tensor
    x0_uncond: Tensor | None

    @property
    def eps(self) -> Tensor:
        """The guided ε̂ = (x_t − x̂₀)/σ (equal to CFG applied to eps_cond and eps_uncond, up to rounding)."""
        return eps_from(self.x, self.x0, self.sigma)

    @property
    def eps_cond(self) -> Tensor:
        return eps_from(self.x, self.x0_cond, self.sigma)

    @property
    def eps_uncond(self) -> Tensor | None:
        return None if self.x0_uncond is None else eps_from(self.x, self.x0_uncond, self.sigma)


class TimelineRecorder:
    """Records a sampling run step by step (see the module docstring); pass it as ``observer``.

    ``records`` holds one StepRecord per sampler step, in order. A recorder is for one run.
    """

    def __init__(self, item: int | None = 0) -> None:
        self.item = item
        self.records: list[StepRecord] = []
        self._last: tuple[Tensor, Tensor, Tensor | None] | None = None

    def _take(self, tensor: Tensor) -> Tensor:
        picked = tensor if self.item is None else tensor[self.item]
        return picked.detach().to(device="cpu", dtype=torch.float32, copy=True)

    def predictions(self, x: Tensor, sigma: Tensor, preds: Mapping[Slot, Tensor]) -> None:
        uncond = preds.get("uncond")
        self._last = (self._take(x), self._take(preds["cond"]), None if uncond is None else self._take(uncond))

    def step(self, step: SamplerStep) -> None:
        x0 = self._take(step.denoised)
        # Without a guided evaluation seen (a denoiser that is not a GuidedDenoiser) the step's own x and x̂₀ stand in.
        x, cond, uncond = self._last if self._last is not None else (self._take(step.x), x0, None)
        self.records.append(StepRecord(index=step.index, sigma=float(step.sigma), x=x, x0=x0, x0_cond=cond,
                                       x0_uncond=uncond))
        self._last = None


def visited_sigmas(records: list[StepRecord], sigmas: Tensor) -> list[float]:
    """The N + 1 noise levels a recorded run of N steps went through, so that record i is at the i-th: the schedule
    itself, or for samplers that pick their own steps between its ends (dpm_fast, dpm_adaptive) their steps'
    sigmas followed by the smallest positive sigma of the schedule, where they stop."""
    schedule = [float(s) for s in sigmas]
    levels = [r.sigma for r in records]
    if len(schedule) == len(levels) + 1 and schedule[:-1] == levels:
        return schedule
    if not levels:
        return schedule
    return levels + [min((s for s in schedule if s > 0), default=0.0)]
