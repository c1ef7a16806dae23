"""Samplers on rectified-flow models (ComfyUI's CONST model sampling) against direct transcriptions of ComfyUI 0.8.0's
``comfy/k_diffusion/sampling.py`` formulas for CONST models: the ``*_ancestral_RF`` samplers, the flow half log-SNR
(``sigma_to_half_log_snr`` / ``half_log_snr_to_sigma`` / ``offset_first_sigma_for_snr``) of the SDE samplers, lcm's
``noise_scaling`` and euler_ancestral_cfg_pp's alpha. The reference functions below are ComfyUI's code with its
plumbing (trange, extra_args, post-CFG hooks) removed; both sides draw the same noise from the same seeded sampler.

The denoiser is analytic: the exact posterior mean of data ~ N(MU, S2) on the straight path x = (1 − σ)·x0 + σ·n,
carrying its flow table as ``model_sampling`` the way sampling_pipeline.SamplingDenoiser does. A discrete table, or
none, leaves every sampler bit for bit as it was (the samplers_all.json parity tests in test_samplers.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffusion.flow_sampling import FluxSampling, ShiftedFlowSampling
from diffusion.model_sampling import DiscreteSampling
from diffusion.samplers import SAMPLER_NAMES, get_sampler
from diffusion.samplers.cfg_pp import publish_uncond
from diffusion.samplers.common import offset_first_sigma, to_d
from diffusion.samplers.sa_solver import SigmaIntervalTau, adams_coefficients
from diffusion.sampling_pipeline import SamplingDenoiser, run_denoiser
from diffusion.schedules import scheduler_sigmas

MU, S2 = 0.5, 0.09
FLUX = FluxSampling(shift=1.15)
SD3 = ShiftedFlowSampling(shift=3.0)
SHAPE = (1, 4, 4, 4)


def flow_posterior(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_σ] for x0 ~ N(MU, S2) elementwise and x_σ = (1 − σ)·x0 + σ·n."""
    s = sigma.reshape(-1, 1, 1, 1)
    a = 1 - s
    return MU + a * S2 / (a * a * S2 + s * s) * (x - a * MU)


@dataclasses.dataclass(frozen=True)
class FlowDenoiser:
    """The analytic flow denoiser with its table; with ``uncond`` it also publishes an unconditional x0 (CFG++)."""

    model_sampling: object
    uncond: bool = False

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        denoised = flow_posterior(x, sigma)
        if self.uncond:
            publish_uncond(0.8 * denoised + 0.1)
        return denoised


class SeededNoise:
    """A fresh unit draw per call from a seeded CPU generator: the same sequence for our sampler and the reference."""

    def __init__(self, seed: int = 7) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:  # noqa: ANN001
        return torch.randn(SHAPE, generator=self.generator)


def start(sigmas: torch.Tensor, seed: int = 3) -> torch.Tensor:
    """The first sampler input: CONST noise_scaling of a fixed latent."""
    gen = torch.Generator().manual_seed(seed)
    noise, latent = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen) * 0.3 + MU
    return sigmas[0] * noise + (1.0 - sigmas[0]) * latent


def model_call(x: torch.Tensor, sigma) -> torch.Tensor:  # noqa: ANN001
    return flow_posterior(x, sigma * x.new_ones([x.shape[0]]))


# ---- ComfyUI's formulas for CONST models, transcribed ---------------------------------------------------------------
def lambda_fn(sigma):  # noqa: ANN001, ANN201 - sigma_to_half_log_snr, CONST
    return sigma.logit().neg()


def sigma_fn(lam):  # noqa: ANN001, ANN201 - half_log_snr_to_sigma, CONST
    return lam.neg().sigmoid()


def offset(sigmas, ms):  # noqa: ANN001, ANN201 - offset_first_sigma_for_snr, CONST
    if len(sigmas) <= 1:
        return sigmas
    if sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = ms.percent_to_sigma(1e-4)
    return sigmas


def get_ancestral_step(sigma_from, sigma_to, eta=1.):  # noqa: ANN001, ANN201 - k-diffusion's, with Python's min
    if not eta:
        return sigma_to, 0.
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def ref_euler_ancestral(x, sigmas, ns, ms, eta=1.0, s_noise=1.0):  # noqa: ANN001, ANN201
    for i in range(len(sigmas) - 1):
        denoised = model_call(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            downstep_ratio = 1 + (sigmas[i + 1] / sigmas[i] - 1) * eta
            sigma_down = sigmas[i + 1] * downstep_ratio
            alpha_ip1 = 1 - sigmas[i + 1]
            alpha_down = 1 - sigma_down
            renoise_coeff = (sigmas[i + 1]**2 - sigma_down**2 * alpha_ip1**2 / alpha_down**2)**0.5
            sigma_down_i_ratio = sigma_down / sigmas[i]
            x = sigma_down_i_ratio * x + (1 - sigma_down_i_ratio) * denoised
            if eta > 0:
                x = (alpha_ip1 / alpha_down) * x + ns(sigmas[i], sigmas[i + 1]) * s_noise * renoise_coeff
    return x


def ref_dpm_2_ancestral(x, sigmas, ns, ms, eta=1.0, s_noise=1.0):  # noqa: ANN001, ANN201
    for i in range(len(sigmas) - 1):
        denoised = model_call(x, sigmas[i])
        downstep_ratio = 1 + (sigmas[i + 1] / sigmas[i] - 1) * eta
        sigma_down = sigmas[i + 1] * downstep_ratio
        alpha_ip1 = 1 - sigmas[i + 1]
        alpha_down = 1 - sigma_down
        renoise_coeff = (sigmas[i + 1]**2 - sigma_down**2 * alpha_ip1**2 / alpha_down**2)**0.5
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model_call(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = (alpha_ip1 / alpha_down) * x + ns(sigmas[i], sigmas[i + 1]) * s_noise * renoise_coeff
    return x


def ref_dpmpp_2s_ancestral(x, sigmas, ns, ms, eta=1.0, s_noise=1.0):  # noqa: ANN001, ANN201
    rf_sigma_fn = lambda lbda: (lbda.exp() + 1) ** -1  # noqa: E731
    rf_lambda_fn = lambda sigma: ((1 - sigma) / sigma).log()  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised = model_call(x, sigmas[i])
        downstep_ratio = 1 + (sigmas[i + 1] / sigmas[i] - 1) * eta
        sigma_down = sigmas[i + 1] * downstep_ratio
        alpha_ip1 = 1 - sigmas[i + 1]
        alpha_down = 1 - sigma_down
        renoise_coeff = (sigmas[i + 1]**2 - sigma_down**2 * alpha_ip1**2 / alpha_down**2)**0.5
        if sigmas[i + 1] == 0:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i])
        else:
            if sigmas[i] == 1.0:
                sigma_s = 0.9999
            else:
                t_i, t_down = rf_lambda_fn(sigmas[i]), rf_lambda_fn(sigma_down)
                r = 1 / 2
                h = t_down - t_i
                s = t_i + r * h
                sigma_s = rf_sigma_fn(s)
            sigma_s_i_ratio = sigma_s / sigmas[i]
            u = sigma_s_i_ratio * x + (1 - sigma_s_i_ratio) * denoised
            D_i = model_call(u, sigma_s)  # noqa: N806
            sigma_down_i_ratio = sigma_down / sigmas[i]
            x = sigma_down_i_ratio * x + (1 - sigma_down_i_ratio) * D_i
        if sigmas[i + 1] > 0 and eta > 0:
            x = (alpha_ip1 / alpha_down) * x + ns(sigmas[i], sigmas[i + 1]) * s_noise * renoise_coeff
    return x


def ref_dpmpp_sde(x, sigmas, ns, ms, eta=1.0, s_noise=1.0, r=0.5):  # noqa: ANN001, ANN201
    sigmas = offset(sigmas, ms)
    for i in range(len(sigmas) - 1):
        denoised = model_call(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = lambda_fn(sigmas[i]), lambda_fn(sigmas[i + 1])
            h = lambda_t - lambda_s
            lambda_s_1 = lambda_s + r * h
            fac = 1 / (2 * r)
            sigma_s_1 = sigma_fn(lambda_s_1)
            alpha_s = sigmas[i] * lambda_s.exp()
            alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
            lambda_s_1_ = sd.log().neg()
            h_ = lambda_s_1_ - lambda_s
            x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
            if eta > 0 and s_noise > 0:
                x_2 = x_2 + alpha_s_1 * ns(sigmas[i], sigma_s_1) * s_noise * su
            denoised_2 = model_call(x_2, sigma_s_1)
            sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
            lambda_t_ = sd.log().neg()
            h_ = lambda_t_ - lambda_s
            denoised_d = (1 - fac) * denoised + fac * denoised_2
            x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
            if eta > 0 and s_noise > 0:
                x = x + alpha_t * ns(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def ref_dpmpp_2m_sde(x, sigmas, ns, ms, eta=1.0, s_noise=1.0, solver_type="midpoint"):  # noqa: ANN001, ANN201
    sigmas = offset(sigmas, ms)
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model_call(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = lambda_fn(sigmas[i]), lambda_fn(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                x = x + ns(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        old_denoised = denoised
        h_last = h
    return x


def ref_dpmpp_3m_sde(x, sigmas, ns, ms, eta=1.0, s_noise=1.0):  # noqa: ANN001, ANN201
    sigmas = offset(sigmas, ms)
    denoised_1, denoised_2 = None, None
    h, h_1, h_2 = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model_call(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = lambda_fn(sigmas[i]), lambda_fn(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0 = h_1 / h
                r1 = h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                r = h_1 / h
                d = (denoised - denoised_1) / r
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (alpha_t * phi_2) * d
            if eta > 0 and s_noise > 0:
                x = x + ns(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def ref_er_sde(x, sigmas, ns, ms, s_noise=1.0, max_stage=3):  # noqa: ANN001, ANN201
    noise_scaler = lambda v: v * ((v ** 0.3).exp() + 10.0)  # noqa: E731
    num_integration_points = 200.0
    point_indice = torch.arange(0, num_integration_points, dtype=torch.float32)
    sigmas = offset(sigmas, ms)
    er_lambdas = lambda_fn(sigmas).neg().exp()
    old_denoised, old_denoised_d = None, None
    for i in range(len(sigmas) - 1):
        denoised = model_call(x, sigmas[i])
        stage_used = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            er_lambda_s, er_lambda_t = er_lambdas[i], er_lambdas[i + 1]
            alpha_s = sigmas[i] / er_lambda_s
            alpha_t = sigmas[i + 1] / er_lambda_t
            r_alpha = alpha_t / alpha_s
            r = noise_scaler(er_lambda_t) / noise_scaler(er_lambda_s)
            x = r_alpha * r * x + alpha_t * (1 - r) * denoised
            if stage_used >= 2:
                dt = er_lambda_t - er_lambda_s
                lambda_step_size = -dt / num_integration_points
                lambda_pos = er_lambda_t + point_indice * lambda_step_size
                scaled_pos = noise_scaler(lambda_pos)
                s = torch.sum(1 / scaled_pos) * lambda_step_size
                denoised_d = (denoised - old_denoised) / (er_lambda_s - er_lambdas[i - 1])
                x = x + alpha_t * (dt + s * noise_scaler(er_lambda_t)) * denoised_d
                if stage_used >= 3:
                    s_u = torch.sum((lambda_pos - er_lambda_s) / scaled_pos) * lambda_step_size
                    denoised_u = (denoised_d - old_denoised_d) / ((er_lambda_s - er_lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt ** 2) / 2 + s_u * noise_scaler(er_lambda_t)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                x = x + alpha_t * ns(sigmas[i], sigmas[i + 1]) * s_noise \
                    * (er_lambda_t ** 2 - er_lambda_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
        old_denoised = denoised
    return x


def ei_h_phi_1(h):  # noqa: ANN001, ANN201
    return torch.expm1(h)


def ei_h_phi_2(h):  # noqa: ANN001, ANN201
    return (torch.expm1(h) - h) / h


def ref_seeds_2(x, sigmas, ns, ms, eta=1.0, s_noise=1.0, r=0.5, solver_type="phi_1"):  # noqa: ANN001, ANN201
    inject_noise = eta > 0 and s_noise > 0
    sigmas = offset(sigmas, ms)
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model_call(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = lambda_fn(sigmas[i]), lambda_fn(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = sigma_fn(lambda_s_1)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s_1 * ei_h_phi_1(-r * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * ns(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model_call(x_2, sigma_s_1)
        if solver_type == "phi_1":
            denoised_d = torch.lerp(denoised, denoised_2, fac)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * ei_h_phi_1(-h_eta) * denoised_d
        else:
            b2 = ei_h_phi_2(-h_eta) / r
            b1 = ei_h_phi_1(-h_eta) - b2
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b2 * denoised_2)
        if inject_noise:
            segment_factor = (r - 1) * h * eta
            sde_noise = sde_noise * segment_factor.exp()
            sde_noise = sde_noise + segment_factor.mul(2).expm1().neg().sqrt() * ns(sigma_s_1, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def ref_seeds_3(x, sigmas, ns, ms, eta=1.0, s_noise=1.0, r_1=1. / 3, r_2=2. / 3):  # noqa: ANN001, ANN201
    inject_noise = eta > 0 and s_noise > 0
    sigmas = offset(sigmas, ms)
    for i in range(len(sigmas) - 1):
        denoised = model_call(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = lambda_fn(sigmas[i]), lambda_fn(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r_1)
        lambda_s_2 = torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s_1, sigma_s_2 = sigma_fn(lambda_s_1), sigma_fn(lambda_s_2)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_s_2 = sigma_s_2 * lambda_s_2.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r_1 * h * eta).exp() * x - alpha_s_1 * ei_h_phi_1(-r_1 * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * ns(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model_call(x_2, sigma_s_1)
        a3_2 = r_2 / r_1 * ei_h_phi_2(-r_2 * h_eta)
        a3_1 = ei_h_phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - alpha_s_2 * (a3_1 * denoised + a3_2 * denoised_2)
        if inject_noise:
            segment_factor = (r_1 - r_2) * h * eta
            sde_noise = sde_noise * segment_factor.exp()
            sde_noise = sde_noise + segment_factor.mul(2).expm1().neg().sqrt() * ns(sigma_s_1, sigma_s_2)
            x_3 = x_3 + sde_noise * sigma_s_2 * s_noise
        denoised_3 = model_call(x_3, sigma_s_2)
        b3 = ei_h_phi_2(-h_eta) / r_2
        b1 = ei_h_phi_1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        if inject_noise:
            segment_factor = (r_2 - 1) * h * eta
            sde_noise = sde_noise * segment_factor.exp()
            sde_noise = sde_noise + segment_factor.mul(2).expm1().neg().sqrt() * ns(sigma_s_2, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def ref_sa_solver(x, sigmas, ns, ms, s_noise=1.0, predictor_order=3, corrector_order=4,  # noqa: ANN001, ANN201
                  use_pece=False):
    """sample_sa_solver's loop; the Adams coefficients are ours (compute_stochastic_adams_b_coeffs's, whose
    discrete results the samplers_all.json cases check): what is flow-specific is lambdas, offset and tau."""
    sigmas = offset(sigmas, ms)
    lambdas = lambda_fn(sigmas)
    tau_func = SigmaIntervalTau(ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8))
    max_used_order = max(predictor_order, corrector_order)
    x_pred = x
    h, tau_t, noise = 0.0, 0.0, 0.0
    pred_list = []
    lower_order_to_end = sigmas[-1].item() == 0
    for i in range(len(sigmas) - 1):
        denoised = model_call(x_pred, sigmas[i])
        pred_list.append(denoised)
        pred_list = pred_list[-max_used_order:]
        predictor_order_used = min(predictor_order, len(pred_list))
        if i == 0 or (sigmas[i + 1] == 0 and not use_pece):
            corrector_order_used = 0
        else:
            corrector_order_used = min(corrector_order, len(pred_list))
        if lower_order_to_end:
            predictor_order_used = min(predictor_order_used, len(sigmas) - 2 - i)
            corrector_order_used = min(corrector_order_used, len(sigmas) - 1 - i)
        if corrector_order_used == 0:
            x = x_pred
        else:
            b = adams_coefficients(sigmas[i], lambdas[i - corrector_order_used + 1:i + 1], lambdas[i - 1],
                                   lambdas[i], tau_t, simple_order_2=False, corrector=True)
            pred_mat = torch.stack(pred_list[-corrector_order_used:], dim=1)
            x = sigmas[i] / sigmas[i - 1] * (-(tau_t ** 2) * h).exp() * x \
                + torch.tensordot(pred_mat, b, dims=([1], [0]))
            if tau_t > 0 and s_noise > 0:
                x = x + noise
            if use_pece:
                denoised = model_call(x, sigmas[i])
                pred_list[-1] = denoised
        if sigmas[i + 1] == 0:
            x_pred = denoised
        else:
            tau_t = tau_func(sigmas[i + 1])
            b = adams_coefficients(sigmas[i + 1], lambdas[i - predictor_order_used + 1:i + 1], lambdas[i],
                                   lambdas[i + 1], tau_t, simple_order_2=False, corrector=False)
            pred_mat = torch.stack(pred_list[-predictor_order_used:], dim=1)
            h = lambdas[i + 1] - lambdas[i]
            x_pred = sigmas[i + 1] / sigmas[i] * (-(tau_t ** 2) * h).exp() * x \
                + torch.tensordot(pred_mat, b, dims=([1], [0]))
            if tau_t > 0 and s_noise > 0:
                noise = ns(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * tau_t ** 2 * h).expm1().neg().sqrt() \
                    * s_noise
                x_pred = x_pred + noise
    return x_pred


def ref_lcm(x, sigmas, ns, ms):  # noqa: ANN001, ANN201
    for i in range(len(sigmas) - 1):
        x = model_call(x, sigmas[i])
        if sigmas[i + 1] > 0:
            s = sigmas[i + 1]
            x = s * ns(sigmas[i], sigmas[i + 1]) + (1.0 - s) * x  # CONST.noise_scaling
    return x


def ref_euler_ancestral_cfg_pp(x, sigmas, ns, ms, eta=1.0, s_noise=1.0):  # noqa: ANN001, ANN201
    for i in range(len(sigmas) - 1):
        denoised = model_call(x, sigmas[i])
        uncond_denoised = 0.8 * denoised + 0.1
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            alpha_s = sigmas[i] * lambda_fn(sigmas[i]).exp()
            alpha_t = sigmas[i + 1] * lambda_fn(sigmas[i + 1]).exp()
            d = to_d(x, sigmas[i], alpha_s * uncond_denoised)
            sigma_down, sigma_up = get_ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta=eta)
            sigma_down = alpha_t * sigma_down
            x = alpha_t * denoised + sigma_down * d
            if eta > 0 and s_noise > 0:
                x = x + alpha_t * ns(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


# sampler name -> (reference, its keyword arguments; ours get the same ones)
REFERENCES = {
    "euler_ancestral": (ref_euler_ancestral, {}),
    "dpm_2_ancestral": (ref_dpm_2_ancestral, {}),
    "dpmpp_2s_ancestral": (ref_dpmpp_2s_ancestral, {}),
    "dpmpp_sde": (ref_dpmpp_sde, {}),
    "dpmpp_sde_gpu": (ref_dpmpp_sde, {}),
    "dpmpp_2m_sde": (ref_dpmpp_2m_sde, {}),
    "dpmpp_2m_sde_gpu": (ref_dpmpp_2m_sde, {}),
    "dpmpp_2m_sde_heun": (ref_dpmpp_2m_sde, {"solver_type": "heun"}),
    "dpmpp_3m_sde": (ref_dpmpp_3m_sde, {}),
    "er_sde": (ref_er_sde, {}),
    "seeds_2": (ref_seeds_2, {}),
    "seeds_3": (ref_seeds_3, {}),
    "exp_heun_2_x0": (ref_seeds_2, {"eta": 0.0, "s_noise": 0.0, "r": 1.0, "solver_type": "phi_2"}),
    "exp_heun_2_x0_sde": (ref_seeds_2, {"r": 1.0, "solver_type": "phi_2"}),
    "sa_solver": (ref_sa_solver, {}),
    "sa_solver_pece": (ref_sa_solver, {"use_pece": True}),
    "lcm": (ref_lcm, {}),
    "euler_ancestral_cfg_pp": (ref_euler_ancestral_cfg_pp, {}),
    "euler_cfg_pp": (ref_euler_ancestral_cfg_pp, {"eta": 0.0, "s_noise": 0.0}),
}
# Arguments ComfyUI's wrapper functions fix, which our sampler functions take as theirs.
_OURS_DROP = {"exp_heun_2_x0": ("eta", "s_noise", "r"), "exp_heun_2_x0_sde": ("r",),
              "dpmpp_2m_sde_heun": ("solver_type",), "sa_solver_pece": ("use_pece",),
              "euler_cfg_pp": ("eta", "s_noise")}

SCHEDULES = {
    # full denoise from σ 1 (the offset first sigma, sigma_s = 0.9999), and a partial one starting below 1
    "flux_simple_8": (FLUX, scheduler_sigmas(FLUX, "simple", 8)),
    "sd3_normal_6": (SD3, scheduler_sigmas(SD3, "normal", 6)),
    "flux_denoise_0.6": (FLUX, scheduler_sigmas(FLUX, "simple", 10)[4:]),
}


def _run_ours(name: str, model, sigmas: torch.Tensor, ns, kwargs: dict) -> torch.Tensor:  # noqa: ANN001
    spec = get_sampler(name)
    kwargs = {k: v for k, v in kwargs.items() if k not in _OURS_DROP.get(name, ())}
    return spec.function(model, start(sigmas), sigmas, noise_sampler=ns, **kwargs) if spec.noise != "none" \
        else spec.function(model, start(sigmas), sigmas, **kwargs)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("name", list(REFERENCES))
def test_flow_samplers_follow_comfyuis_const_formulas(name: str, schedule: str) -> None:
    table, sigmas = SCHEDULES[schedule]
    reference, kwargs = REFERENCES[name]
    model = FlowDenoiser(table, uncond=name.endswith("_cfg_pp"))
    ours = _run_ours(name, model, sigmas, SeededNoise(), kwargs)
    expected = reference(start(sigmas), sigmas, SeededNoise(), table, **kwargs)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2s_ancestral", "dpmpp_2m_sde", "er_sde", "seeds_2"])
def test_the_flow_formulas_differ_from_the_discrete_ones(name: str) -> None:
    """Guard against the flow branch being skipped: the same run without the table (the VE formulas) differs."""
    table, sigmas = SCHEDULES["flux_denoise_0.6"]
    reference, kwargs = REFERENCES[name]
    flow = _run_ours(name, FlowDenoiser(table), sigmas, SeededNoise(), kwargs)
    bare = _run_ours(name, flow_posterior, sigmas, SeededNoise(), kwargs)
    assert not torch.allclose(flow, bare, atol=1e-4)


def test_offset_first_sigma_only_moves_a_flow_schedules_sigma_one() -> None:
    sigmas = scheduler_sigmas(FLUX, "simple", 4)
    moved = offset_first_sigma(sigmas, FLUX)
    assert float(sigmas[0]) == 1.0 and float(moved[0]) == pytest.approx(FLUX.percent_to_sigma(1e-4))
    assert torch.equal(moved[1:], sigmas[1:])
    discrete = DiscreteSampling.linear()
    assert offset_first_sigma(sigmas, discrete) is sigmas and offset_first_sigma(sigmas, None) is sigmas
    assert offset_first_sigma(sigmas[2:], FLUX) is sigmas[2:] or torch.equal(offset_first_sigma(sigmas[2:], FLUX),
                                                                            sigmas[2:])  # starts below 1: as is


def _discrete_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.reshape(-1, 1, 1, 1)
    return MU + S2 / (S2 + s**2) * (x - MU)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_a_discrete_table_leaves_every_sampler_bit_for_bit_unchanged(name: str) -> None:
    """The pipeline hands samplers SamplingDenoiser(model, table): with SD's table nothing changes."""
    table = DiscreteSampling.linear()
    sigmas = scheduler_sigmas(table, "karras", 6)
    x = start(sigmas) * sigmas[0]
    spec = get_sampler(name)
    extra = {} if spec.noise == "none" else {"seed": 5}
    bare = spec.function(_discrete_denoiser, x, sigmas, **extra)
    wrapped = spec.function(SamplingDenoiser(inner=_discrete_denoiser, model_sampling=table), x, sigmas, **extra)
    assert torch.equal(bare, wrapped)


def test_run_denoiser_hands_the_sampler_the_models_table() -> None:
    seen = []

    def run(model, x, sigmas, *, seed, callback):  # noqa: ANN001, ANN202
        seen.append(model.model_sampling)
        return x

    sigmas = scheduler_sigmas(FLUX, "simple", 3)
    latent = torch.zeros(SHAPE)
    run_denoiser(flow_posterior, sampling=FLUX, latent=latent, noise=torch.ones(SHAPE), sigmas=sigmas, seed=0,
                 run=run, inpaint_noise="given", denoise_mask=None, callback=None)
    assert seen == [FLUX]


def test_flow_inpainting_renoises_the_kept_region_on_the_straight_path() -> None:
    """ComfyUI's scale_latent_inpaint is the model's noise_scaling: (1 − σ)·latent + σ·noise for a flow model."""
    from diffusion.sampling_pipeline import InpaintDenoiser

    latent, noise = torch.full(SHAPE, 2.0), torch.ones(SHAPE)
    mask = torch.zeros(SHAPE)
    inpaint = InpaintDenoiser(inner=flow_posterior, mask=mask, latent=latent, noise=noise, sampling=FLUX)
    kept = inpaint.keep(torch.zeros(SHAPE), torch.tensor([0.25]))
    torch.testing.assert_close(kept, torch.full(SHAPE, 0.75 * 2.0 + 0.25))
