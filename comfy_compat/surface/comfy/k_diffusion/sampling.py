"""ComfyUI's `comfy.k_diffusion.sampling`: the k-diffusion samplers and helpers custom sampler packs build on.

The samplers are Chisel's (diffusion/samplers), called with k-diffusion's convention: `sample_x(model, x, sigmas,
extra_args=None, callback=None, disable=None, **options)`, `extra_args["seed"]` seeding the stochastic ones, and
`callback` getting k-diffusion's dict {"x", "i", "sigma", "sigma_hat", "denoised"}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from diffusion import samplers as _samplers
from diffusion import schedules as _schedules
from diffusion import sigma_schedules as _sigma_schedules
from diffusion.samplers.common import ancestral_step


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE derivative dx/dsigma at (x, sigma) given the denoised estimate."""
    return (x - denoised) / sigma.reshape(-1, *([1] * (x.ndim - 1))) if torch.is_tensor(sigma) else \
        (x - denoised) / sigma


def get_ancestral_step(sigma_from: Any, sigma_to: Any, eta: float = 1.0) -> tuple[Any, Any]:
    """(sigma_down, sigma_up) of an ancestral step."""
    if not eta:
        return sigma_to, 0.0
    down, up = ancestral_step(torch.as_tensor(sigma_from), torch.as_tensor(sigma_to), eta)
    return down, up


def default_noise_sampler(x: torch.Tensor, seed: int | None = None) -> Callable[[Any, Any], torch.Tensor]:
    """Fresh unit noise shaped like x for each step (seeded: the same draws for the same seed)."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(seed)

    def sampler(sigma: Any, sigma_next: Any) -> torch.Tensor:
        return torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)

    return sampler


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: Any = "cpu"
                      ) -> torch.Tensor:
    return _schedules.karras(n, sigma_min, sigma_max, rho=rho).to(device)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float, device: Any = "cpu") -> torch.Tensor:
    return _schedules.exponential(n, sigma_min, sigma_max).to(device)


def get_sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device: Any = "cpu"
                               ) -> torch.Tensor:
    return _sigma_schedules.polyexponential(n, sigma_min, sigma_max, rho=rho).to(device)


def get_sigmas_vp(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3, device: Any = "cpu"
                  ) -> torch.Tensor:
    return _sigma_schedules.vp(n, beta_d=beta_d, beta_min=beta_min, eps_s=eps_s).to(device)


def get_sigmas_laplace(n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5,
                       device: Any = "cpu") -> torch.Tensor:
    return _sigma_schedules.laplace(n, sigma_min, sigma_max, mu=mu, beta=beta).to(device)


class _Model:
    """The denoiser as k-diffusion code calls it: model(x, sigma, **extra_args), extra keys such as "seed"
    dropped; other attributes are the wrapped model's."""

    def __init__(self, model: Any):
        self._model = model

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra: Any) -> torch.Tensor:
        extra.pop("seed", None)
        return self._model(x, sigma, **extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def comfy_callback(callback: Callable[[dict[str, Any]], Any] | None) -> Callable[[Any], None] | None:
    """Chisel's step callback from a k-diffusion one (which takes {"x", "i", "sigma", "sigma_hat", "denoised"})."""
    if callback is None:
        return None

    def step(info: Any) -> None:
        callback({"x": info.x, "i": info.index, "sigma": info.sigma, "sigma_hat": info.sigma,
                  "denoised": info.denoised})

    return step


def chisel_callback(callback: Callable[[Any], None] | None, total: int) -> Callable[[dict[str, Any]], None] | None:
    """A k-diffusion callback that reports to Chisel's step callback."""
    if callback is None:
        return None
    from diffusion.samplers import SamplerStep

    def step(info: dict[str, Any]) -> None:
        sigma = info.get("sigma")
        callback(SamplerStep(index=int(info["i"]), total=total, x=info["x"],
                             sigma=float(sigma.max()) if torch.is_tensor(sigma) else float(sigma or 0.0),
                             denoised=info["denoised"]))

    return step


def _k_sampler(name: str) -> Callable[..., torch.Tensor]:
    spec = _samplers.get_sampler(name)

    def sample(model: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
               callback: Callable[[dict[str, Any]], Any] | None = None, disable: Any = None, **options: Any
               ) -> torch.Tensor:
        extra = dict(extra_args or {})
        seed = extra.pop("seed", None)
        kwargs: dict[str, Any] = {"extra_args": extra, "callback": comfy_callback(callback), **options}
        if spec.noise != "none" and "noise_sampler" not in options:
            kwargs["seed"] = seed if seed is not None else 0
        return spec.function(_Model(model), x, sigmas, **kwargs)

    sample.__name__ = sample.__qualname__ = f"sample_{name}"
    sample.__doc__ = f"ComfyUI's k-diffusion sample_{name}, run by Chisel's sampler of that name."
    return sample


for _name in _samplers.SAMPLER_NAMES:
    if _name not in ("ddim", "uni_pc", "uni_pc_bh2"):  # ComfyUI builds those elsewhere, not in this module
        globals()[f"sample_{_name}"] = _k_sampler(_name)

_ = math  # the k-diffusion module imports math; packs occasionally reach it through here


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute("comfy.k_diffusion.sampling", name)
