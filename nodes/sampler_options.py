"""The SAMPLER nodes with options: each binds its widgets as keyword options into one of the table's samplers
(diffusion.sampling_values.Sampler.with_options), as ComfyUI's ``ksampler(name, extra_options)`` does.

A sampler that this build's table lacks fails when the node runs, naming the sampler; an option the sampler
function cannot honour at the chosen value fails the same way rather than being ignored. Node classes carry
comments rather than docstrings: a docstring would become the description, which ComfyUI leaves empty.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from diffusion.handles import Model
from diffusion.node_samplers import sample_euler_pp, sample_lcm_upscale
from diffusion.samplers import SAMPLERS
from diffusion.samplers.sa_solver import SigmaIntervalTau
from diffusion.sampling_values import ReverseTimeNoiseScaler, Sampler
from nodes.context import RunContext
from nodes.inputs import Boolean, Combo, Float, Int, Link
from nodes.latent import resize_latent
from nodes.registry import Node, Output

CATEGORY = "sampling/custom_sampling/samplers"
NOISE_DEVICES = ("gpu", "cpu")


def _sampler(name: str, options: Mapping[str, Any], neutral: Mapping[str, Any] | None = None) -> tuple[Sampler]:
    return (Sampler.named(name).with_options(options, neutral=neutral),)


def _device_variant(name: str, noise_device: str) -> str:
    """ComfyUI's "<name>_gpu" draws the Brownian noise on the GPU. Chisel draws step noise on the CPU on every
    device (same numbers everywhere), so "gpu" is the CPU sampler unless the table has a separate _gpu entry."""
    gpu_name = f"{name}_gpu"
    return gpu_name if noise_device == "gpu" and gpu_name in SAMPLERS else name


def _eta() -> Float:
    return Float(1.0, min=0.0, max=100.0, step=0.01, round=False)


def _s_noise() -> Float:
    return Float(1.0, min=0.0, max=100.0, step=0.01, round=False)


# Euler ancestral with its noise amount (eta) and noise scale.
class SamplerEulerAncestral(Node):
    category = CATEGORY
    v3_schema = True
    eta = _eta()
    s_noise = _s_noise()
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, eta: float, s_noise: float) -> tuple[Sampler]:
        return _sampler("euler_ancestral", {"eta": eta, "s_noise": s_noise})


# Euler ancestral with CFG++ (Chung et al. 2024).
class SamplerEulerAncestralCFGPP(Node):
    display_name = "SamplerEulerAncestralCFG++"
    category = CATEGORY
    v3_schema = True
    eta = Float(1.0, min=0.0, max=1.0, step=0.01, round=False)
    s_noise = Float(1.0, min=0.0, max=10.0, step=0.01, round=False)
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, eta: float, s_noise: float) -> tuple[Sampler]:
        return _sampler("euler_ancestral_cfg_pp", {"eta": eta, "s_noise": s_noise})


# Linear multistep of the chosen order.
class SamplerLMS(Node):
    category = CATEGORY
    v3_schema = True
    order = Int(4, min=1, max=100)
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, order: int) -> tuple[Sampler]:
        return _sampler("lms", {"order": order})


# DPM-Solver++(3M) SDE.
class SamplerDPMPP_3M_SDE(Node):
    category = CATEGORY
    v3_schema = True
    eta = _eta()
    s_noise = _s_noise()
    noise_device = Combo(NOISE_DEVICES)
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, eta: float, s_noise: float, noise_device: str) -> tuple[Sampler]:
        return _sampler(_device_variant("dpmpp_3m_sde", noise_device), {"eta": eta, "s_noise": s_noise})


# DPM-Solver++(2M) SDE with its second-order update (midpoint or heun).
class SamplerDPMPP_2M_SDE(Node):
    category = CATEGORY
    v3_schema = True
    solver_type = Combo(("midpoint", "heun"))
    eta = _eta()
    s_noise = _s_noise()
    noise_device = Combo(NOISE_DEVICES)
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, solver_type: str, eta: float, s_noise: float, noise_device: str
            ) -> tuple[Sampler]:
        return _sampler(_device_variant("dpmpp_2m_sde", noise_device),
                        {"eta": eta, "s_noise": s_noise, "solver_type": solver_type})


# DPM-Solver++ SDE with its intermediate step ratio r.
class SamplerDPMPP_SDE(Node):
    category = CATEGORY
    v3_schema = True
    eta = _eta()
    s_noise = _s_noise()
    r = Float(0.5, min=0.0, max=100.0, step=0.01, round=False)
    noise_device = Combo(NOISE_DEVICES)
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, eta: float, s_noise: float, r: float, noise_device: str) -> tuple[Sampler]:
        return _sampler(_device_variant("dpmpp_sde", noise_device), {"eta": eta, "s_noise": s_noise, "r": r})


# DPM-Solver++(2S) ancestral.
class SamplerDPMPP_2S_Ancestral(Node):
    category = CATEGORY
    v3_schema = True
    eta = _eta()
    s_noise = _s_noise()
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, eta: float, s_noise: float) -> tuple[Sampler]:
        return _sampler("dpmpp_2s_ancestral", {"eta": eta, "s_noise": s_noise})


# Adaptive-step DPM-Solver with its error control settings.
class SamplerDPMAdaptative(Node):
    category = CATEGORY
    v3_schema = True
    order = Int(3, min=2, max=3)
    rtol = Float(0.05, min=0.0, max=100.0, step=0.01, round=False)
    atol = Float(0.0078, min=0.0, max=100.0, step=0.01, round=False)
    h_init = Float(0.05, min=0.0, max=100.0, step=0.01, round=False)
    pcoeff = Float(0.0, min=0.0, max=100.0, step=0.01, round=False)
    icoeff = Float(1.0, min=0.0, max=100.0, step=0.01, round=False)
    dcoeff = Float(0.0, min=0.0, max=100.0, step=0.01, round=False)
    accept_safety = Float(0.81, min=0.0, max=100.0, step=0.01, round=False)
    eta = Float(0.0, min=0.0, max=100.0, step=0.01, round=False)
    s_noise = _s_noise()
    outputs = (Output("SAMPLER"),)
    # The values at which the PID terms and the noise change nothing (an integral-only controller, no noise).
    NEUTRAL: Mapping[str, Any] = {"pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0, "eta": 0.0}

    @classmethod
    def run(cls, ctx: RunContext, order: int, rtol: float, atol: float, h_init: float, pcoeff: float,
            icoeff: float, dcoeff: float, accept_safety: float, eta: float, s_noise: float) -> tuple[Sampler]:
        options: dict[str, Any] = {"order": order, "rtol": rtol, "atol": atol, "h_init": h_init, "pcoeff": pcoeff,
                                   "icoeff": icoeff, "dcoeff": dcoeff, "accept_safety": accept_safety, "eta": eta}
        if eta != 0.0:
            options["s_noise"] = s_noise  # it scales the noise eta adds: without noise it changes nothing
        return _sampler("dpm_adaptive", options, cls.NEUTRAL)


# ER-SDE (Cui et al. 2023) as its own solver, as a reverse-time SDE of strength eta, or as the ODE.
class SamplerER_SDE(Node):
    category = CATEGORY
    v3_schema = True
    solver_type = Combo(("ER-SDE", "Reverse-time SDE", "ODE"))
    max_stage = Int(3, min=1, max=3)
    eta = Float(1.0, min=0.0, max=100.0, step=0.01, round=False,
                tooltip="Stochastic strength of reverse-time SDE.\nWhen eta=0, it reduces to deterministic ODE. "
                        "This setting doesn't apply to ER-SDE solver type.")
    s_noise = _s_noise()
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, solver_type: str, max_stage: int, eta: float, s_noise: float) -> tuple[Sampler]:
        if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0.0, 0.0
        noise_scaler = None if solver_type == "ER-SDE" else ReverseTimeNoiseScaler(eta)  # None: ER-SDE's own
        return _sampler("er_sde", {"s_noise": s_noise, "noise_scaler": noise_scaler, "max_stage": max_stage})


# SA-Solver (Xue et al. 2023): stochastic Adams predictor-corrector, stochastic between two schedule fractions.
class SamplerSASolver(Node):
    category = CATEGORY
    v3_schema = True
    model = Link("MODEL")
    eta = Float(1.0, min=0.0, max=10.0, step=0.01, round=False)
    sde_start_percent = Float(0.2, min=0.0, max=1.0, step=0.001)
    sde_end_percent = Float(0.8, min=0.0, max=1.0, step=0.001)
    s_noise = _s_noise()
    predictor_order = Int(3, min=1, max=6)
    corrector_order = Int(4, min=0, max=6)
    use_pece = Boolean(None)  # ComfyUI declares no default for these two
    simple_order_2 = Boolean(None)
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, eta: float, sde_start_percent: float, sde_end_percent: float,
            s_noise: float, predictor_order: int, corrector_order: int, use_pece: bool, simple_order_2: bool
            ) -> tuple[Sampler]:
        tau = SigmaIntervalTau(start_sigma=model.sampling.percent_to_sigma(sde_start_percent),
                               end_sigma=model.sampling.percent_to_sigma(sde_end_percent), eta=eta)
        return _sampler("sa_solver", {"tau_func": tau, "s_noise": s_noise, "predictor_order": predictor_order,
                                      "corrector_order": corrector_order, "use_pece": use_pece,
                                      "simple_order_2": simple_order_2})


# SEEDS-2 (Gonzalez et al. 2023), which also covers exp_heun_2_x0 (phi_2, r 1, eta 0) and its SDE form.
class SamplerSEEDS2(Node):
    description = ("This sampler node can represent multiple samplers:\n\nseeds_2\n- default setting\n\n"
                   "exp_heun_2_x0\n- solver_type=phi_2, r=1.0, eta=0.0\n\n"
                   "exp_heun_2_x0_sde\n- solver_type=phi_2, r=1.0, eta=1.0, s_noise=1.0")
    category = CATEGORY
    v3_schema = True
    solver_type = Combo(("phi_1", "phi_2"))
    eta = Float(1.0, min=0.0, max=100.0, step=0.01, round=False, tooltip="Stochastic strength")
    s_noise = Float(1.0, min=0.0, max=100.0, step=0.01, round=False, tooltip="SDE noise multiplier")
    r = Float(0.5, min=0.01, max=1.0, step=0.01, round=False,
              tooltip="Relative step size for the intermediate stage (c2 node)")
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, solver_type: str, eta: float, s_noise: float, r: float) -> tuple[Sampler]:
        return _sampler("seeds_2", {"eta": eta, "s_noise": s_noise, "r": r, "solver_type": solver_type})


# Euler with CFG++: "regular" is the table's euler_cfg_pp, "alternative" ComfyUI's earlier Euler-pp step.
class SamplerEulerCFGpp(Node):
    display_name = "SamplerEulerCFG++"
    category = "_for_testing"
    v3_schema = True
    experimental = True
    version = Combo(("regular", "alternative"))
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, version: str) -> tuple[Sampler]:
        if version == "alternative":
            return (Sampler(name="euler_pp", function=sample_euler_pp),)
        return (Sampler.named("euler_cfg_pp"),)


def _upscale(latent: Tensor, width: int, height: int, method: str) -> Tensor:
    return resize_latent(latent, width, height, method, "disabled")  # type: ignore[arg-type]


# LCM that upscales the latent between steps (to scale_ratio over scale_steps steps; −1: half the steps).
class SamplerLCMUpscale(Node):
    category = CATEGORY
    v3_schema = True
    scale_ratio = Float(1.0, min=0.1, max=20.0, step=0.01)
    scale_steps = Int(-1, min=-1, max=1000, step=1)
    upscale_method = Combo(("bislerp", "nearest-exact", "bilinear", "area", "bicubic"))
    outputs = (Output("SAMPLER"),)

    @classmethod
    def run(cls, ctx: RunContext, scale_ratio: float, scale_steps: int, upscale_method: str) -> tuple[Sampler]:
        function = functools.partial(sample_lcm_upscale, upscale=_upscale, total_upscale=scale_ratio,
                                     upscale_method=upscale_method,
                                     upscale_steps=None if scale_steps < 0 else scale_steps)
        options = {"total_upscale": scale_ratio, "upscale_method": upscale_method, "upscale_steps": scale_steps}
        return (Sampler(name="lcm_upscale", function=function, noise="step", options=options),)


NODES = (SamplerEulerAncestral, SamplerEulerAncestralCFGPP, SamplerLMS, SamplerDPMPP_3M_SDE, SamplerDPMPP_2M_SDE,
         SamplerDPMPP_SDE, SamplerDPMPP_2S_Ancestral, SamplerDPMAdaptative, SamplerER_SDE, SamplerSASolver,
         SamplerSEEDS2, SamplerEulerCFGpp, SamplerLCMUpscale)
