"""The samplers KSampler offers, by ComfyUI name: one plain function per algorithm with the k-diffusion signature
``sample_<name>(model, x, sigmas, *, extra_args=None, callback=None, ...) -> Tensor`` where
``model(x, sigma, **extra_args)`` returns the denoised x0.

Files, by family: ``ode.py`` (euler, heun, heunpp2, dpm_2, lms, ddim), ``ancestral.py`` (euler_ancestral,
dpm_2_ancestral, dpmpp_2s_ancestral, ddpm, lcm), ``dpmpp.py`` (dpmpp_2m and the SDE solvers with their _heun and
_gpu names), ``dpm_solver.py`` (dpm_fast, dpm_adaptive), ``unipc.py`` (uni_pc, uni_pc_bh2), ``cfg_pp.py`` (the
CFG++ samplers of the Euler and DPM-Solver++ families, and how samplers receive the unconditional prediction),
``seeds.py`` (seeds_2, seeds_3, exp_heun_2_x0[_sde]), ``ipndm.py`` (ipndm, ipndm_v), ``deis.py``,
``res_multistep.py``, ``gradient_estimation.py``, ``er_sde.py``, ``sa_solver.py`` (sa_solver, sa_solver_pece),
``common.py`` (shared types and math).

Model kind: a denoiser may carry its noise table as ``model.model_sampling`` (sampling_pipeline.SamplingDenoiser
does). Where ComfyUI's samplers branch on a CONST (rectified-flow) model sampling, ours read it
(common.model_sampling_of / is_flow): euler_ancestral, dpm_2_ancestral and dpmpp_2s_ancestral take the RF
formulas; the SDE / log-SNR samplers (dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde, er_sde, seeds_2/3, exp_heun_2_x0*,
sa_solver) use lambda = log((1 − σ)/σ) and offset a first σ of 1; lcm re-noises with noise_scaling and
euler_ancestral_cfg_pp uses alpha = 1 − σ. A bare function has no table and is sampled as a discrete model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from diffusion.samplers.ancestral import (
    sample_ddpm,
    sample_dpm_2_ancestral,
    sample_dpmpp_2s_ancestral,
    sample_euler_ancestral,
    sample_lcm,
)
from diffusion.samplers.cfg_pp import (
    sample_dpmpp_2m_cfg_pp,
    sample_dpmpp_2s_ancestral_cfg_pp,
    sample_euler_ancestral_cfg_pp,
    sample_euler_cfg_pp,
)
from diffusion.samplers.common import DenoiserFn, MissingNoiseError, SamplerStep, StepCallback
from diffusion.samplers.deis import sample_deis
from diffusion.samplers.dpm_solver import sample_dpm_adaptive, sample_dpm_fast
from diffusion.samplers.dpmpp import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_2m_sde_gpu,
    sample_dpmpp_2m_sde_heun,
    sample_dpmpp_2m_sde_heun_gpu,
    sample_dpmpp_3m_sde,
    sample_dpmpp_3m_sde_gpu,
    sample_dpmpp_sde,
    sample_dpmpp_sde_gpu,
)
from diffusion.samplers.er_sde import sample_er_sde
from diffusion.samplers.gradient_estimation import sample_gradient_estimation, sample_gradient_estimation_cfg_pp
from diffusion.samplers.ipndm import sample_ipndm, sample_ipndm_v
from diffusion.samplers.ode import sample_ddim, sample_dpm_2, sample_euler, sample_heun, sample_heunpp2, sample_lms
from diffusion.samplers.res_multistep import (
    sample_res_multistep,
    sample_res_multistep_ancestral,
    sample_res_multistep_ancestral_cfg_pp,
    sample_res_multistep_cfg_pp,
)
from diffusion.samplers.sa_solver import sample_sa_solver, sample_sa_solver_pece
from diffusion.samplers.seeds import sample_exp_heun_2_x0, sample_exp_heun_2_x0_sde, sample_seeds_2, sample_seeds_3
from diffusion.samplers.unipc import sample_uni_pc, sample_uni_pc_bh2

NoiseKind = Literal["none", "step", "brownian"]
InpaintNoise = Literal["given", "random"]


@dataclass(frozen=True)
class SamplerSpec:
    """One entry of the sampler table.

    Attributes:
        name: the ComfyUI sampler name.
        function: the sampler.
        noise: what randomness it draws from the seed: none, fresh noise per step, or one Brownian path.
        inpaint_noise: the noise used to re-noise the kept latent when inpainting: the initial noise ("given"),
            or a fresh draw from seed + 1 ("random", ComfyUI's ddim).
    """

    name: str
    function: Callable[..., Tensor]
    noise: NoiseKind = "none"
    inpaint_noise: InpaintNoise = "given"


_SPECS: tuple[SamplerSpec, ...] = (
    SamplerSpec("euler", sample_euler),
    SamplerSpec("euler_cfg_pp", sample_euler_cfg_pp),
    SamplerSpec("euler_ancestral", sample_euler_ancestral, noise="step"),
    SamplerSpec("euler_ancestral_cfg_pp", sample_euler_ancestral_cfg_pp, noise="step"),
    SamplerSpec("heun", sample_heun),
    SamplerSpec("heunpp2", sample_heunpp2),
    SamplerSpec("exp_heun_2_x0", sample_exp_heun_2_x0),
    SamplerSpec("exp_heun_2_x0_sde", sample_exp_heun_2_x0_sde, noise="step"),
    SamplerSpec("dpm_2", sample_dpm_2),
    SamplerSpec("dpm_2_ancestral", sample_dpm_2_ancestral, noise="step"),
    SamplerSpec("lms", sample_lms),
    SamplerSpec("dpm_fast", sample_dpm_fast),
    SamplerSpec("dpm_adaptive", sample_dpm_adaptive),
    SamplerSpec("dpmpp_2s_ancestral", sample_dpmpp_2s_ancestral, noise="step"),
    SamplerSpec("dpmpp_2s_ancestral_cfg_pp", sample_dpmpp_2s_ancestral_cfg_pp, noise="step"),
    SamplerSpec("dpmpp_sde", sample_dpmpp_sde, noise="brownian"),
    SamplerSpec("dpmpp_sde_gpu", sample_dpmpp_sde_gpu, noise="brownian"),
    SamplerSpec("dpmpp_2m", sample_dpmpp_2m),
    SamplerSpec("dpmpp_2m_cfg_pp", sample_dpmpp_2m_cfg_pp),
    SamplerSpec("dpmpp_2m_sde", sample_dpmpp_2m_sde, noise="brownian"),
    SamplerSpec("dpmpp_2m_sde_gpu", sample_dpmpp_2m_sde_gpu, noise="brownian"),
    SamplerSpec("dpmpp_2m_sde_heun", sample_dpmpp_2m_sde_heun, noise="brownian"),
    SamplerSpec("dpmpp_2m_sde_heun_gpu", sample_dpmpp_2m_sde_heun_gpu, noise="brownian"),
    SamplerSpec("dpmpp_3m_sde", sample_dpmpp_3m_sde, noise="brownian"),
    SamplerSpec("dpmpp_3m_sde_gpu", sample_dpmpp_3m_sde_gpu, noise="brownian"),
    SamplerSpec("ddpm", sample_ddpm, noise="step"),
    SamplerSpec("lcm", sample_lcm, noise="step"),
    SamplerSpec("ipndm", sample_ipndm),
    SamplerSpec("ipndm_v", sample_ipndm_v),
    SamplerSpec("deis", sample_deis),
    SamplerSpec("res_multistep", sample_res_multistep),
    SamplerSpec("res_multistep_cfg_pp", sample_res_multistep_cfg_pp),
    SamplerSpec("res_multistep_ancestral", sample_res_multistep_ancestral, noise="step"),
    SamplerSpec("res_multistep_ancestral_cfg_pp", sample_res_multistep_ancestral_cfg_pp, noise="step"),
    SamplerSpec("gradient_estimation", sample_gradient_estimation),
    SamplerSpec("gradient_estimation_cfg_pp", sample_gradient_estimation_cfg_pp),
    SamplerSpec("er_sde", sample_er_sde, noise="step"),
    SamplerSpec("seeds_2", sample_seeds_2, noise="step"),
    SamplerSpec("seeds_3", sample_seeds_3, noise="step"),
    SamplerSpec("sa_solver", sample_sa_solver, noise="step"),
    SamplerSpec("sa_solver_pece", sample_sa_solver_pece, noise="step"),
    SamplerSpec("ddim", sample_ddim, inpaint_noise="random"),
    SamplerSpec("uni_pc", sample_uni_pc),
    SamplerSpec("uni_pc_bh2", sample_uni_pc_bh2),
)

SAMPLERS: Mapping[str, SamplerSpec] = {spec.name: spec for spec in _SPECS}
# In ComfyUI's order (the UI lists them so; the first is the default).
SAMPLER_NAMES: tuple[str, ...] = tuple(spec.name for spec in _SPECS)


class UnknownSamplerError(ValueError):
    """The sampler name is not one of SAMPLER_NAMES."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLER_NAMES)}")
        self.name = name


def get_sampler(name: str) -> SamplerSpec:
    """The table entry for a ComfyUI sampler name."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise UnknownSamplerError(name) from None


def run_sampler(
    name: str,
    model: DenoiserFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    seed: int,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Run the named sampler from the noised latent ``x`` over ``sigmas``; stochastic ones draw from ``seed``."""
    spec = get_sampler(name)
    if spec.noise == "none":
        return spec.function(model, x, sigmas, extra_args=extra_args, callback=callback)
    return spec.function(model, x, sigmas, extra_args=extra_args, callback=callback, seed=seed)


__all__ = [
    "SAMPLERS", "SAMPLER_NAMES", "DenoiserFn", "InpaintNoise", "MissingNoiseError", "NoiseKind", "SamplerSpec",
    "SamplerStep", "StepCallback", "UnknownSamplerError", "get_sampler", "run_sampler", "sample_ddim", "sample_ddpm",
    "sample_deis", "sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpm_adaptive", "sample_dpm_fast",
    "sample_dpmpp_2m", "sample_dpmpp_2m_cfg_pp", "sample_dpmpp_2m_sde", "sample_dpmpp_2m_sde_gpu",
    "sample_dpmpp_2m_sde_heun", "sample_dpmpp_2m_sde_heun_gpu", "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_2s_ancestral_cfg_pp", "sample_dpmpp_3m_sde", "sample_dpmpp_3m_sde_gpu", "sample_dpmpp_sde",
    "sample_dpmpp_sde_gpu", "sample_er_sde", "sample_euler", "sample_euler_ancestral",
    "sample_euler_ancestral_cfg_pp", "sample_euler_cfg_pp", "sample_exp_heun_2_x0", "sample_exp_heun_2_x0_sde",
    "sample_gradient_estimation", "sample_gradient_estimation_cfg_pp", "sample_heun", "sample_heunpp2",
    "sample_ipndm", "sample_ipndm_v", "sample_lcm", "sample_lms", "sample_res_multistep",
    "sample_res_multistep_ancestral", "sample_res_multistep_ancestral_cfg_pp", "sample_res_multistep_cfg_pp",
    "sample_sa_solver", "sample_sa_solver_pece", "sample_seeds_2", "sample_seeds_3", "sample_uni_pc",
    "sample_uni_pc_bh2",
]
