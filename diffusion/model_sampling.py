"""The discrete noise table of SD1.x/SDXL and the eps / v-prediction wrapper that turns a UNet into a denoiser.

Samplers only know the k-diffusion interface ``D(x, sigma) -> x0`` (Karras et al. 2022, "Elucidating the Design
Space of Diffusion-Based Generative Models"). This module is the thin layer between that interface and a model
trained on 1000 discrete DDPM timesteps (Ho et al. 2020), so the sampler node never branches on the model family.

The numbers follow ComfyUI's ``ModelSamplingDiscrete`` exactly (betas in float64, the table stored as float32), so
schedules built from this table agree with ComfyUI's to float32 precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

Prediction = Literal["eps", "v", "x0", "img_to_img", "lcm"]
"""What the raw network predicts: the noise, v (Salimans & Ho 2022), x0 itself, x0 from an unscaled input
(img_to_img), or an LCM's consistency-distilled eps (Luo et al. 2023; ComfyUI's ModelSamplingDiscrete options)."""
PREDICTIONS: tuple[str, ...] = ("eps", "v", "x0", "img_to_img", "lcm")

# LCM's boundary condition (Luo et al. 2023, "Latent Consistency Models"): sigma_data and timestep scaling.
LCM_SIGMA_DATA = 0.5
LCM_TIMESTEP_SCALING = 10.0
# The step count an LCM was distilled to (ComfyUI's ModelSamplingDiscreteDistilled.original_timesteps).
LCM_ORIGINAL_TIMESTEPS = 50

# SD1.x, SD2.x and SDXL all use the "scaled linear" betas between these two values.
SD_LINEAR_START = 0.00085
SD_LINEAR_END = 0.012
SD_TIMESTEPS = 1000

# Returned by percent_to_sigma(0.0): "before the first step", larger than any sigma a schedule can hold.
SIGMA_BEFORE_START = 999999999.9


class ModelSamplingError(ValueError):
    """A model-sampling input is out of range (unknown prediction type, bad table, ...)."""


def _per_sample(sigma: Tensor | float, like: Tensor) -> Tensor:
    """sigma as a tensor broadcastable against ``like``: a scalar stays 0-dim, a (B,) vector becomes (B, 1, 1, ...)."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))  # (B,) -> (B, 1, 1, 1)


@dataclass(frozen=True, eq=False)
class DiscreteSampling:
    """A model's 1000-step noise table and its prediction type.

    Attributes:
        prediction: what the raw network predicts (see Prediction).
        sigmas: (T,) float32, increasing; sigma_t = sqrt((1 - alphā_t) / alphā_t).
        log_sigmas: (T,) float32 natural logs of the float64 sigmas (not of the rounded float32 ones).
        timestep_stride: training timesteps per table entry (1; 20 for an LCM's 50-entry distilled table, whose
            entry i is training timestep i·20 + 19).
    """

    prediction: Prediction
    sigmas: Tensor
    log_sigmas: Tensor
    timestep_stride: int = 1

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ModelSamplingError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.timestep_stride < 1:
            raise ModelSamplingError(f"timestep_stride must be >= 1, got {self.timestep_stride}")
        if self.sigmas.ndim != 1 or self.sigmas.shape != self.log_sigmas.shape or len(self.sigmas) < 2:
            raise ModelSamplingError(
                f"sigmas and log_sigmas must be equal 1-D tables of 2+ entries, got {tuple(self.sigmas.shape)} "
                f"and {tuple(self.log_sigmas.shape)}"
            )

    @classmethod
    def linear(
        cls,
        *,
        prediction: Prediction = "eps",
        linear_start: float = SD_LINEAR_START,
        linear_end: float = SD_LINEAR_END,
        timesteps: int = SD_TIMESTEPS,
        zsnr: bool = False,
    ) -> DiscreteSampling:
        """The "scaled linear" DDPM table of Stable Diffusion (betas linear in sqrt space, Rombach et al. 2022);
        ``zsnr`` rescales it to zero terminal SNR (Lin et al. 2024)."""
        betas = torch.linspace(math.sqrt(linear_start), math.sqrt(linear_end), timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zsnr:
            sigmas = rescale_zero_terminal_snr_sigmas(sigmas)
        # Why: ComfyUI takes the log of the float64 sigmas before rounding; doing the same keeps the
        # interpolated schedules bit-compatible.
        return cls(prediction=prediction, sigmas=sigmas.float(), log_sigmas=sigmas.log().float())

    def distilled(self, original_timesteps: int = LCM_ORIGINAL_TIMESTEPS) -> DiscreteSampling:
        """The table of a model distilled to ``original_timesteps`` steps (ComfyUI's ModelSamplingDiscreteDistilled):
        every stride-th sigma counted from the last, so timestep() gives training timesteps i·stride + stride − 1."""
        stride = self.num_timesteps // original_timesteps
        if stride < 1:
            raise ModelSamplingError(f"cannot distil a {self.num_timesteps}-step table to {original_timesteps} steps")
        picked = torch.tensor([self.num_timesteps - 1 - (original_timesteps - 1 - i) * stride
                               for i in range(original_timesteps)])
        sigmas = self.sigmas[picked]
        # ComfyUI's set_sigmas takes the log of these float32 sigmas.
        return DiscreteSampling(prediction=self.prediction, sigmas=sigmas, log_sigmas=sigmas.log(),
                                timestep_stride=stride * self.timestep_stride)

    # -- the table -----------------------------------------------------------------------------------------
    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def num_timesteps(self) -> int:
        return len(self.sigmas)

    @property
    def training_timesteps(self) -> int:
        """Timesteps of the training schedule (1000 for SD; also for a distilled table)."""
        return self.num_timesteps * self.timestep_stride

    def timestep(self, sigma: Tensor | float) -> Tensor:
        """The nearest discrete timestep index (in log sigma) for each sigma, as float32 with sigma's shape."""
        sigma_t = torch.as_tensor(sigma, dtype=torch.float32)
        device = sigma_t.device
        log_sigma = sigma_t.to(self.log_sigmas.device).log()
        dists = (log_sigma.reshape(1, -1) - self.log_sigmas[:, None]).abs()  # (T, N)
        index = dists.argmin(dim=0).reshape(sigma_t.shape).float()
        if self.timestep_stride > 1:
            index = index * self.timestep_stride + (self.timestep_stride - 1)
        return index.to(device)

    def sigma(self, timestep: Tensor | float) -> Tensor:
        """sigma at a (fractional) timestep: log sigma interpolated linearly between the table entries."""
        t_in = torch.as_tensor(timestep)
        t = t_in.float().to(self.log_sigmas.device)
        if self.timestep_stride > 1:
            t = (t - (self.timestep_stride - 1)) / self.timestep_stride
        t = t.clamp(0, self.num_timesteps - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(t_in.device)

    def percent_to_sigma(self, percent: float) -> float:
        """The sigma reached after ``percent`` of the denoising (0 = start, 1 = end), for start/end_percent."""
        if percent <= 0.0:
            return SIGMA_BEFORE_START
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * (self.training_timesteps - 1))))

    def reaches_max(self, sigma0: float) -> bool:
        """Whether sampling starts from pure noise (sigma0 at or above sigma_max, within float32 rounding)."""
        return math.isclose(self.sigma_max, sigma0, rel_tol=1e-5) or sigma0 > self.sigma_max

    # -- the model wrapper ---------------------------------------------------------------------------------
    def calculate_input(self, sigma: Tensor | float, x: Tensor) -> Tensor:
        """The UNet input: x / sqrt(sigma^2 + 1), i.e. the VE latent mapped back to unit variance (sigma_data 1);
        an img_to_img model takes x as it is."""
        if self.prediction == "img_to_img":
            return x
        return x / (_per_sample(sigma, x) ** 2 + 1.0) ** 0.5

    def denoised(self, sigma: Tensor | float, model_output: Tensor, x: Tensor) -> Tensor:
        """x0 from the raw network output: eps -> x - sigma·eps; v -> Salimans & Ho (2022) eq. for sigma_data 1;
        x0 / img_to_img -> the output; lcm -> c_out·(x - sigma·eps) + c_skip·x (Luo et al. 2023, at the timestep
        scaled by 10, sigma_data 0.5)."""
        s = _per_sample(sigma, model_output)
        if self.prediction == "eps":
            return x - model_output * s
        if self.prediction in ("x0", "img_to_img"):
            return model_output
        if self.prediction == "lcm":
            t = _per_sample(self.timestep(torch.as_tensor(sigma, dtype=torch.float32)).to(model_output.device),
                            model_output) * LCM_TIMESTEP_SCALING
            c_skip = LCM_SIGMA_DATA**2 / (t**2 + LCM_SIGMA_DATA**2)
            c_out = t / (t**2 + LCM_SIGMA_DATA**2) ** 0.5
            return c_out * (x - model_output * s) + c_skip * x
        return x / (s**2 + 1.0) - model_output * s / (s**2 + 1.0) ** 0.5

    def noise_scaling(self, sigma0: Tensor | float, noise: Tensor, latent: Tensor, *, max_denoise: bool) -> Tensor:
        """The first sampler input: latent + sigma0·noise, or noise·sqrt(1 + sigma0²) (+ latent) from pure noise.

        Why sqrt(1 + sigma0²) at max_denoise: the model was trained on x_T = sqrt(ᾱ)·x0 + sqrt(1-ᾱ)·eps, whose
        VE form has variance 1 + sigma² rather than sigma², so full denoising starts at the right scale.
        """
        s = _per_sample(sigma0, noise)
        scaled = noise * (1.0 + s**2) ** 0.5 if max_denoise else noise * s
        return scaled + latent

    def inverse_noise_scaling(self, sigma: Tensor | float, latent: Tensor) -> Tensor:
        """Undo noise_scaling at the last sigma; the identity for eps and v models."""
        return latent


def rescale_zero_terminal_snr_sigmas(sigmas: Tensor) -> Tensor:
    """Sigmas of the same schedule shifted to zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules
    and Sample Steps Are Flawed", Algorithm 1): sqrt(alphā) moved so its last value is 0 and scaled so its first
    stays; the last alphā is then set to ComfyUI's 4.8973451890853435e-08 so the last sigma stays finite."""
    alphas_bar_sqrt = (1.0 / (sigmas * sigmas + 1.0)).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas_bar[-1] = 4.8973451890853435e-08
    return ((1.0 - alphas_bar) / alphas_bar) ** 0.5


# The rectified-flow table's resolution and timestep multiplier (ComfyUI's ModelSamplingDiscreteFlow defaults).
FLOW_TIMESTEPS = 1000
FLOW_MULTIPLIER = 1000.0


def time_shift(shift: float, t: Tensor) -> Tensor:
    """sigma = shift·t / (1 + (shift − 1)·t): a flow model's timestep shift (SD3's "shift"; 1 is the identity)."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


@dataclass(frozen=True, eq=False)
class FlowSampling:
    """The noise table of a rectified-flow model (SD3, Flux: x_t = (1 − σ)·x0 + σ·noise, σ in (0, 1]), as ComfyUI's
    ``ModelSamplingDiscreteFlow``: sigmas shift(t/1000) for t = 1..1000, timestep = σ·1000.

    It offers what the schedules (diffusion/schedules.py) read from a table — sigmas, sigma_min / sigma_max,
    timestep(), sigma() — so every KSampler scheduler gives ComfyUI's sigmas for a flow model; Chisel has no flow
    model to sample, so the inspect nodes use it to plot schedules.
    """

    shift: float = 1.0
    prediction: str = "flow"
    sigmas: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.shift > 0:
            raise ModelSamplingError(f"a flow table's shift must be positive, got {self.shift}")
        steps = torch.arange(1, FLOW_TIMESTEPS + 1, dtype=torch.float32) / FLOW_TIMESTEPS * FLOW_MULTIPLIER
        object.__setattr__(self, "sigmas", self.sigma(steps))

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def num_timesteps(self) -> int:
        return FLOW_TIMESTEPS

    def timestep(self, sigma: Tensor | float) -> Tensor:
        return torch.as_tensor(sigma, dtype=torch.float32) * FLOW_MULTIPLIER

    def sigma(self, timestep: Tensor | float) -> Tensor:
        return time_shift(self.shift, torch.as_tensor(timestep, dtype=torch.float32) / FLOW_MULTIPLIER)

    def noise_scaling(self, sigma0: Tensor | float, noise: Tensor, latent: Tensor, *, max_denoise: bool = False
                      ) -> Tensor:
        """x_σ = σ·noise + (1 − σ)·x0 (the straight path between data and noise)."""
        s = _per_sample(sigma0, noise)
        return s * noise + (1.0 - s) * latent


ApplyModel = Callable[..., Tensor]


@dataclass(frozen=True, eq=False)
class Denoiser:
    """Adapts ``apply_model(x_in, t, **cond) -> raw output`` to the k-diffusion denoiser ``D(x, sigma, **cond) -> x0``.

    Karras et al. (2022), Table 1 "preconditioning" with c_in = 1/sqrt(sigma²+1) and discrete timestep c_noise.
    """

    apply_model: ApplyModel
    sampling: DiscreteSampling

    def __call__(self, x: Tensor, sigma: Tensor, **cond: object) -> Tensor:
        x_in = self.sampling.calculate_input(sigma, x)
        t = self.sampling.timestep(sigma)
        out = self.apply_model(x_in, t, **cond).float()
        return self.sampling.denoised(sigma, out, x)
