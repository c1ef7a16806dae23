"""The function patches of ComfyUI's model-patch nodes, as values that go into a MODEL's ModelOptions.

Each is a frozen callable with ComfyUI's calling convention for its hook (diffusion/model_options.py lists them), so
``options.with_patch("output_block_patch", FreeU(...))`` is what ComfyUI's ``set_model_output_block_patch`` does.
The nodes (nodes/model_patches.py, nodes/guidance_tweaks.py) only build these. Sources are cited per class; the
formulas follow ComfyUI's ``comfy_extras`` so results match.

A few patches need memory across calls within one sampling run (SAG's recorded attention, APG's running average);
they keep it in a small private holder created by the node run, never at module level.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusion.attention import multihead_attention
from diffusion.model_options import ModelOptions


# ---- helpers -----------------------------------------------------------------------------------------------------
def fourier_scale(x: Tensor, *, threshold: int, low: float, high: float = 1.0) -> Tensor:
    """Scale the centred (2·threshold)² low-frequency block of each [.., H, W] spectrum by ``low`` and the rest by
    ``high`` (FreeU's Fourier_filter, Si et al. 2023; FreSca's, Huang et al. 2025), in float32, back in x's dtype."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    height, width = spectrum.shape[-2:]
    crow, ccol = height // 2, width // 2
    mask = torch.full(spectrum.shape, float(high), device=x.device)
    # Python slice semantics on purpose: the reference's crow - threshold may go negative for tiny maps.
    mask[..., crow - threshold:crow + threshold, ccol - threshold:ccol + threshold] = low
    filtered = torch.fft.ifftn(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1)), dim=(-2, -1)).real
    return filtered.to(x.dtype)


def _per_sample(sigma: Tensor, like: Tensor) -> Tensor:
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))  # (B,) -> (B, 1, 1, 1)


def _options(model_options: Any) -> ModelOptions:
    return ModelOptions.from_comfy(model_options)


# ---- UNet patches ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FreeU:
    """output_block_patch: FreeU (Si et al. 2023, "FreeU: Free Lunch in Diffusion U-Net"; ComfyUI nodes_freelunch).
    On output blocks of width 4·model_channels (b1, s1) and 2·model_channels (b2, s2): the first half of the
    backbone channels × b (V2: × ((b − 1)·normalised channel mean + 1)), the skip's low frequencies × s."""

    model_channels: int
    b1: float
    b2: float
    s1: float
    s2: float
    version: int = 1

    def __call__(self, h: Tensor, hsp: Tensor, transformer_options: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        scales = {self.model_channels * 4: (self.b1, self.s1), self.model_channels * 2: (self.b2, self.s2)}
        scale = scales.get(int(h.shape[1]))
        if scale is None:
            return h, hsp
        b, s = scale
        half = h.shape[1] // 2
        if self.version == 2:
            mean = h.mean(1, keepdim=True)  # (B, 1, H, W)
            flat = mean.reshape(mean.shape[0], -1)
            low = flat.min(dim=-1, keepdim=True).values[:, :, None, None]
            high = flat.max(dim=-1, keepdim=True).values[:, :, None, None]
            factor = (b - 1) * ((mean - low) / (high - low)) + 1
        else:
            factor = b
        h = torch.cat([h[:, :half] * factor, h[:, half:]], dim=1)
        return h, fourier_scale(hsp, threshold=1, low=s)


@dataclass(frozen=True)
class DeepShrink:
    """input_block_patch(_after_skip) + output_block_patch: Kohya's Deep Shrink (ComfyUI PatchModelAddDownscale).
    Input block ``block_number`` is resized by 1/downscale_factor while sigma_end < sigma <= sigma_start; output
    blocks resize h back to the skip's size. ``resize(x, width, height, method)`` is the image resize to use."""

    block_number: int
    downscale_factor: float
    sigma_start: float
    sigma_end: float
    downscale_method: str
    upscale_method: str
    resize: Callable[[Tensor, int, int, str], Tensor]

    def input_patch(self, h: Tensor, transformer_options: Mapping[str, Any]) -> Tensor:
        if transformer_options["block"][1] != self.block_number:
            return h
        sigma = float(transformer_options["sigmas"][0])
        if self.sigma_end < sigma <= self.sigma_start:
            h = self.resize(h, round(h.shape[-1] * (1.0 / self.downscale_factor)),
                            round(h.shape[-2] * (1.0 / self.downscale_factor)), self.downscale_method)
        return h

    def output_patch(self, h: Tensor, hsp: Tensor, transformer_options: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        if h.shape[2] != hsp.shape[2]:
            h = self.resize(h, hsp.shape[-1], hsp.shape[-2], self.upscale_method)
        return h, hsp


def _perturbed_attention(q: Tensor, k: Tensor, v: Tensor, extra_options: Mapping[str, Any]) -> Tensor:
    """PAG's identity self-attention: each token attends only to itself, so the output is v."""
    return v


# ---- guidance patches --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RescaleCFG:
    """sampler_cfg_function: CFG rescale (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps Are
    Flawed", eq. 15-16), done on the v prediction as ComfyUI's RescaleCFG: the CFG result's std is matched to the
    positive's, then mixed with plain CFG by ``multiplier``."""

    multiplier: float

    def __call__(self, args: Mapping[str, Any]) -> Tensor:
        x_orig, cond_scale = args["input"], args["cond_scale"]
        cond, uncond = args["cond"], args["uncond"]
        sigma = _per_sample(args["sigma"], cond)
        x = x_orig / (sigma * sigma + 1.0)
        cond_v = ((x - (x_orig - cond)) * (sigma**2 + 1.0) ** 0.5) / sigma
        uncond_v = ((x - (x_orig - uncond)) * (sigma**2 + 1.0) ** 0.5) / sigma
        x_cfg = uncond_v + cond_scale * (cond_v - uncond_v)
        ro_pos = torch.std(cond_v, dim=(1, 2, 3), keepdim=True)
        ro_cfg = torch.std(x_cfg, dim=(1, 2, 3), keepdim=True)
        x_final = self.multiplier * (x_cfg * (ro_pos / ro_cfg)) + (1.0 - self.multiplier) * x_cfg
        return x_orig - (x - x_final * sigma / (sigma * sigma + 1.0) ** 0.5)


@dataclass(frozen=True)
class PerturbedAttentionGuidance:
    """sampler_post_cfg_function: PAG (Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with Perturbed-Attention
    Guidance"; ComfyUI nodes_pag): the positive is evaluated again with the middle block's self-attention replaced
    by the identity, and the result is pushed away from that prediction by ``scale``."""

    scale: float
    block: tuple[str, int] = ("middle", 0)

    def __call__(self, args: Mapping[str, Any]) -> Tensor:
        result = args["denoised"]
        if self.scale == 0:
            return result
        options = _options(args["model_options"]).with_patch_replace(_perturbed_attention, "attn1", *self.block)
        (perturbed,) = args["model"].calc_cond_batch([args["cond"]], args["input"], args["sigma"], options)
        return result + (args["cond_denoised"] - perturbed) * self.scale


@dataclass(eq=False)
class _AttentionRecord:
    """The negative's self-attention probabilities of SAG's last middle-block call (one sampling step)."""

    scores: Tensor | None = None


def attention_with_scores(q: Tensor, k: Tensor, v: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """softmax(QKᵀ/√d)·V with the probabilities: out [B, T, C], scores [B·heads, Tq, Tk] (float32)."""
    b, tq, c = q.shape
    d = c // heads
    qh, kh, vh = (t.reshape(b, -1, heads, d).transpose(1, 2).reshape(b * heads, -1, d) for t in (q, k, v))
    scores = (qh.float() @ kh.float().transpose(-1, -2) * d**-0.5).softmax(dim=-1)  # (B·heads, Tq, Tk)
    out = (scores.to(vh.dtype) @ vh).reshape(b, heads, tq, d).transpose(1, 2).reshape(b, tq, c)
    return out, scores


def gaussian_blur(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """A separable Gaussian blur of each channel with reflect padding (SAG's gaussian_blur_2d)."""
    half = (kernel_size - 1) * 0.5
    pdf = torch.exp(-0.5 * (torch.linspace(-half, half, steps=kernel_size) / sigma).pow(2))
    kernel1d = (pdf / pdf.sum()).to(device=x.device, dtype=x.dtype)
    kernel = (kernel1d[:, None] @ kernel1d[None, :]).expand(x.shape[-3], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    return F.conv2d(F.pad(x, [pad, pad, pad, pad], mode="reflect"), kernel, groups=x.shape[-3])


def sag_blur_map(x0: Tensor, scores: Tensor, sigma: float, threshold: float = 1.0) -> Tensor:
    """x0 blurred where the attention map says the model looks most (SAG's create_blur_map): positions whose mean
    received attention exceeds ``threshold`` are replaced by a blurred copy."""
    _, hw1, hw2 = scores.shape
    b, _, lh, lw = x0.shape
    attn = scores.reshape(b, -1, hw1, hw2)
    mask = attn.mean(1).sum(1) > threshold  # (B, hw1)
    ratio = 2 ** (math.ceil(math.sqrt(lh * lw / hw1)) - 1).bit_length()
    mid = [math.ceil(lh / ratio), math.ceil(lw / ratio)]
    mask = F.interpolate(mask.reshape(b, *mid).unsqueeze(1).to(x0.dtype), (lh, lw))
    blurred = gaussian_blur(x0, kernel_size=9, sigma=sigma)
    return blurred * mask + x0 * (1 - mask)


@dataclass(frozen=True, eq=False)
class SelfAttentionGuidance:
    """SAG (Hong et al. 2023, "Improving Sample Quality of Diffusion Models Using Self-Attention Guidance"; ComfyUI
    nodes_sag): ``record`` replaces the middle block's first self-attention and keeps the negative's attention
    probabilities; ``post_cfg`` blurs the negative's x0 where attention concentrates, re-noises and re-evaluates
    the negative on it, and adds scale · (blurred − that prediction)."""

    scale: float
    blur_sigma: float
    state: _AttentionRecord = field(default_factory=_AttentionRecord)

    def record(self, q: Tensor, k: Tensor, v: Tensor, extra_options: Mapping[str, Any]) -> Tensor:
        heads = extra_options["n_heads"]
        cond_or_uncond = extra_options["cond_or_uncond"]
        if 1 not in cond_or_uncond:
            return multihead_attention(q, k, v, heads)
        b = q.shape[0] // len(cond_or_uncond)
        out, scores = attention_with_scores(q, k, v, heads)
        n_slices = heads * b
        index = cond_or_uncond.index(1)
        self.state.scores = scores[n_slices * index:n_slices * (index + 1)]
        return out

    def post_cfg(self, args: Mapping[str, Any]) -> Tensor:
        result = args["denoised"]
        if min(result.shape[2:]) <= 4 or self.state.scores is None:  # too small for the blur's padding
            return result
        x, uncond_pred = args["input"], args["uncond_denoised"]
        degraded = sag_blur_map(uncond_pred, self.state.scores, self.blur_sigma)
        (sag,) = args["model"].calc_cond_batch([args["uncond"]], degraded + x - uncond_pred, args["sigma"],
                                               args["model_options"])
        return result + (degraded - sag) * self.scale


def _optimized_scale(positive: Tensor, negative: Tensor) -> Tensor:
    """s* = <v_cond, v_uncond> / ||v_uncond||² per sample (CFG-Zero*, Fan et al. 2025)."""
    pos = positive.reshape(positive.shape[0], -1)
    neg = negative.reshape(negative.shape[0], -1)
    s = (pos * neg).sum(dim=1, keepdim=True) / ((neg**2).sum(dim=1, keepdim=True) + 1e-8)
    return s.reshape([positive.shape[0]] + [1] * (positive.ndim - 1))


def cfg_zero_star(args: Mapping[str, Any]) -> Tensor:
    """sampler_post_cfg_function: CFG-Zero* (Fan et al. 2025, "CFG-Zero*: Improved Classifier-Free Guidance for
    Flow Matching Models"): the negative scaled by the optimised s* before guiding, in ComfyUI's x0 form
    out + uncond·(s* − 1) + cfg·uncond·(1 − s*), s* from the eps predictions x − x0."""
    x, cond_p, uncond_p, scale = args["input"], args["cond_denoised"], args["uncond_denoised"], args["cond_scale"]
    alpha = _optimized_scale(x - cond_p, x - uncond_p)
    return args["denoised"] + uncond_p * (alpha - 1.0) + scale * uncond_p * (1.0 - alpha)


@dataclass(frozen=True)
class CFGNorm:
    """sampler_post_cfg_function: the guided x0 scaled so its per-pixel channel norm does not exceed the
    positive's (clamped to ≤ 1), times strength (ComfyUI nodes_cfg CFGNorm)."""

    strength: float

    def __call__(self, args: Mapping[str, Any]) -> Tensor:
        cond_p, guided = args["cond_denoised"], args["denoised"]
        scale = (torch.norm(cond_p, dim=1, keepdim=True) / (torch.norm(guided, dim=1, keepdim=True) + 1e-8))
        return guided * scale.clamp(min=0.0, max=1.0) * self.strength


def mahiro(args: Mapping[str, Any]) -> Tensor:
    """sampler_post_cfg_function: Mahiro CFG (ComfyUI nodes_mahiro): mixes CFG with the positive scaled by cfg,
    weighted by the cosine similarity of the (signed square-rooted) scaled negative and their mean."""
    scale, cond_p, uncond_p, cfg = args["cond_scale"], args["cond_denoised"], args["uncond_denoised"], args["denoised"]
    leap = cond_p * scale
    u_leap = uncond_p * scale
    merge = (leap + cfg) / 2
    norm_u = torch.sqrt(u_leap.abs()) * u_leap.sign()
    norm_m = torch.sqrt(merge.abs()) * merge.sign()
    sim = F.cosine_similarity(norm_u, norm_m).mean()
    weight = 2 * (sim + 1)
    return (weight * cfg + (4 - weight) * leap) / 4


@dataclass(frozen=True)
class EpsilonScaling:
    """sampler_post_cfg_function: Epsilon Scaling (Ning et al. 2023, "Elucidating the Exposure Bias in Diffusion
    Models", uniform schedule): the guided noise prediction x − x0 divided by scaling_factor."""

    scaling_factor: float

    def __call__(self, args: Mapping[str, Any]) -> Tensor:
        x = args["input"]
        factor = self.scaling_factor if self.scaling_factor != 0 else 1e-9
        return x - (x - args["denoised"]) / factor


@dataclass(frozen=True)
class TemporalScoreRescaling:
    """sampler_post_cfg_function: TSR (Xu et al. 2025, arXiv 2510.01184, eq. 6): the score rescaled by
    r = (snr·σ² + 1) / (snr·σ²/k + 1); for the VE eps models here (alpha = 1, snr = 1/sigma²) that is
    lerp(x, denoised, r)."""

    tsr_k: float
    tsr_sigma: float

    def __call__(self, args: Mapping[str, Any]) -> Tensor:
        denoised, x = args["denoised"], args["input"]
        sigma = args["sigma"][0]
        if self.tsr_k == 1 or float(sigma) == 0:
            return denoised
        half_log_snr = sigma.log().neg()
        snr = (2 * half_log_snr).exp()
        if float(snr) == 0:
            return denoised
        variance = self.tsr_sigma**2
        r = (snr * variance + 1) / (snr * variance / self.tsr_k + 1)
        r = torch.where(torch.isposinf(snr), torch.as_tensor(self.tsr_k, dtype=snr.dtype), r)
        alpha = sigma * half_log_snr.exp()
        return torch.lerp(x / alpha, denoised, r.to(denoised.dtype))


def _project(v0: Tensor, v1: Tensor) -> tuple[Tensor, Tensor]:
    v1 = F.normalize(v1, dim=[-1, -2, -3])
    parallel = (v0 * v1).sum(dim=[-1, -2, -3], keepdim=True) * v1
    return parallel, v0 - parallel


@dataclass(eq=False)
class _RunningAverage:
    value: Tensor | None = None
    prev_sigma: float | None = None


@dataclass(frozen=True, eq=False)
class AdaptiveProjectedGuidance:
    """sampler_pre_cfg_function: APG (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High Guidance
    Scales in Diffusion Models"; ComfyUI nodes_apg): the guidance cond − uncond (optionally momentum-averaged and
    norm-clipped) split into parts parallel and orthogonal to cond; the parallel part is scaled by eta. Returns a
    positive that plain CFG turns into uncond + modified guidance·cfg."""

    eta: float
    norm_threshold: float
    momentum: float
    state: _RunningAverage = field(default_factory=_RunningAverage)

    def __call__(self, args: Mapping[str, Any]) -> list[Tensor]:
        conds_out = args["conds_out"]
        if len(conds_out) == 1:
            return conds_out
        cond, uncond = conds_out[0], conds_out[1]
        sigma = float(args["sigma"][0])
        if self.state.prev_sigma is not None and sigma > self.state.prev_sigma:
            self.state.value = None  # a new sampling run
        self.state.prev_sigma = sigma
        guidance = cond - uncond
        if self.momentum != 0:
            self.state.value = guidance if self.state.value is None else self.momentum * self.state.value + guidance
            guidance = self.state.value
        if self.norm_threshold > 0:
            norm = guidance.norm(p=2, dim=[-1, -2, -3], keepdim=True)
            guidance = guidance * torch.minimum(torch.ones_like(norm), self.norm_threshold / norm)
        parallel, orthogonal = _project(guidance, cond)
        modified = orthogonal + self.eta * parallel
        return [(uncond + modified) + (cond - uncond) / args["cond_scale"], uncond] + list(conds_out[2:])


def _tangential_damping(cond_score: Tensor, uncond_score: Tensor) -> Tensor:
    """The negative's score projected on the first right singular vector of [uncond; cond] (TCFG, Kwon et al.
    2025, arXiv 2503.18137)."""
    batch = cond_score.shape[0]
    cond_flat = cond_score.reshape(batch, 1, -1).float()
    uncond_flat = uncond_score.reshape(batch, 1, -1).float()
    _, _, vh = torch.linalg.svd(torch.cat((uncond_flat, cond_flat), dim=1), full_matrices=False)
    v1 = vh[:, 0:1, :]
    return ((uncond_flat @ v1.transpose(-2, -1)) * v1).reshape_as(uncond_score).to(uncond_score.dtype)


def tangential_damping_cfg(args: Mapping[str, Any]) -> list[Tensor]:
    """sampler_pre_cfg_function: TCFG: the negative's noise prediction reduced to its component along the
    principal direction shared with the positive (skipped when either conditioning is absent)."""
    x, conds_out = args["input"], args["conds_out"]
    if len(conds_out) <= 1 or None in list(args["conds"])[:2]:
        return conds_out
    cond_pred, uncond_pred = conds_out[0], conds_out[1]
    damped = _tangential_damping(x - cond_pred, x - uncond_pred)
    return [cond_pred, x - damped] + list(conds_out[2:])


@dataclass(frozen=True)
class FreSca:
    """sampler_pre_cfg_function: FreSca (Huang et al. 2025, "FreSca: Scaling in Frequency Space Enhances Diffusion
    Models"): the guidance cond − uncond with its low frequencies × scale_low and the rest × scale_high."""

    scale_low: float
    scale_high: float
    freq_cutoff: int

    def __call__(self, args: Mapping[str, Any]) -> list[Tensor]:
        cond, uncond = args["conds_out"][0], args["conds_out"][1]
        filtered = fourier_scale(cond - uncond, threshold=self.freq_cutoff, low=self.scale_low, high=self.scale_high)
        return [filtered + uncond, uncond]


@dataclass(frozen=True)
class LatentOperationCFG:
    """sampler_pre_cfg_function: a LATENT_OPERATION applied to the guidance cond − uncond (to cond alone when there
    is no negative), ComfyUI's LatentApplyOperationCFG."""

    operation: Callable[..., Tensor]

    def __call__(self, args: Mapping[str, Any]) -> list[Tensor]:
        conds_out = list(args["conds_out"])
        if len(conds_out) == 2:
            conds_out[0] = self.operation(latent=conds_out[0] - conds_out[1]) + conds_out[1]
        else:
            conds_out[0] = self.operation(latent=conds_out[0])
        return conds_out


@dataclass(frozen=True)
class DifferentialDiffusion:
    """denoise_mask_function: Differential Diffusion (Levin & Fried 2023): a soft inpainting mask becomes, at each
    step, the binary mask of pixels whose value reaches the fraction of the run still ahead (in timesteps), so
    stronger mask values change earlier; ``strength`` < 1 blends it with the soft mask."""

    strength: float = 1.0

    def __call__(self, sigma: Tensor, denoise_mask: Tensor, extra_options: Mapping[str, Any]) -> Tensor:
        sampling = extra_options["model"].model_sampling
        step_sigmas = extra_options["sigmas"]
        sigma_to = sampling.sigma_min
        if step_sigmas[-1] > sigma_to:
            sigma_to = step_sigmas[-1]
        ts_from = sampling.timestep(step_sigmas[0])
        ts_to = sampling.timestep(sigma_to)
        current = sampling.timestep(sigma[0])
        threshold = (current - ts_to) / (ts_from - ts_to)
        binary = (denoise_mask >= threshold.to(denoise_mask.device)).to(denoise_mask.dtype)
        if self.strength and self.strength < 1:
            return self.strength * binary + (1 - self.strength) * denoise_mask
        return binary


# ---- token patches -----------------------------------------------------------------------------------------------
def _stable_seed(extra_options: Mapping[str, Any], salt: int) -> int:
    """A seed from where and when a patch runs (sigma, block, transformer index): the same step of the same run
    draws the same, without state kept between calls."""
    sigma = float(extra_options["sigmas"][0]) if "sigmas" in extra_options else 0.0
    block = extra_options.get("block") or ("", 0)
    key = f"{sigma:.6g}/{block[0]}/{block[1]}/{extra_options.get('block_index', 0)}/{salt}"
    return zlib.crc32(key.encode())  # not hash(): str hashes change from one process to the next


def _bipartite_merge(metric: Tensor, w: int, h: int, sx: int, sy: int, r: int, generator: torch.Generator
                     ) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """ToMe's bipartite soft matching with random 2D destination tokens (Bolya & Hoffman 2023, "Token Merging for
    Fast Stable Diffusion"): r source tokens merged (mean) into their most similar destination, and the inverse."""
    b, n, _ = metric.shape
    if r <= 0 or w == 1 or h == 1:
        return (lambda t: t), (lambda t: t)
    hsy, wsx = h // sy, w // sx
    rand_idx = torch.randint(sy * sx, size=(hsy, wsx, 1), generator=generator).to(metric.device)
    buffer_view = torch.zeros(hsy, wsx, sy * sx, device=metric.device, dtype=torch.int64)
    buffer_view.scatter_(dim=2, index=rand_idx, src=-torch.ones_like(rand_idx))
    buffer_view = buffer_view.view(hsy, wsx, sy, sx).transpose(1, 2).reshape(hsy * sy, wsx * sx)
    if hsy * sy < h or wsx * sx < w:
        buffer = torch.zeros(h, w, device=metric.device, dtype=torch.int64)
        buffer[:hsy * sy, :wsx * sx] = buffer_view
    else:
        buffer = buffer_view
    order = buffer.reshape(1, -1, 1).argsort(dim=1)  # destinations (-1) first, then sources
    num_dst = hsy * wsx
    a_idx, b_idx = order[:, num_dst:, :], order[:, :num_dst, :]

    def split(x: Tensor) -> tuple[Tensor, Tensor]:
        c = x.shape[-1]
        return (torch.gather(x, 1, a_idx.expand(b, n - num_dst, c)), torch.gather(x, 1, b_idx.expand(b, num_dst, c)))

    unit = metric / metric.norm(dim=-1, keepdim=True)
    a, bb = split(unit)
    scores = a @ bb.transpose(-1, -2)
    r = min(a.shape[1], r)
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx, src_idx = edge_idx[..., r:, :], edge_idx[..., :r, :]
    dst_idx = torch.gather(node_idx[..., None], dim=-2, index=src_idx)

    def merge(x: Tensor) -> Tensor:
        src, dst = split(x)
        nb, t1, c = src.shape
        unm = torch.gather(src, -2, unm_idx.expand(nb, t1 - r, c))
        src = torch.gather(src, -2, src_idx.expand(nb, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(nb, r, c), src, reduce="mean")
        return torch.cat([unm, dst], dim=1)

    def unmerge(x: Tensor) -> Tensor:
        unm_len = unm_idx.shape[1]
        unm, dst = x[..., :unm_len, :], x[..., unm_len:, :]
        c = unm.shape[-1]
        src = torch.gather(dst, -2, dst_idx.expand(b, r, c))
        out = torch.zeros(b, n, c, device=x.device, dtype=x.dtype)
        out.scatter_(-2, b_idx.expand(b, num_dst, c), dst)
        out.scatter_(-2, torch.gather(a_idx.expand(b, a_idx.shape[1], 1), 1, unm_idx).expand(b, unm_len, c), unm)
        out.scatter_(-2, torch.gather(a_idx.expand(b, a_idx.shape[1], 1), 1, src_idx).expand(b, r, c), src)
        return out

    return merge, unmerge


@dataclass(eq=False)
class _Unmerge:
    fn: Callable[[Tensor], Tensor] | None = None


@dataclass(frozen=True, eq=False)
class TokenMerging:
    """attn1_patch + attn1_output_patch: ToMe for SD (ComfyUI nodes_tomesd): at full resolution, ``ratio`` of the
    self-attention queries are merged into similar ones before attention and copied back after. The random
    destination grid is drawn from a seed of the step and block (deterministic; ComfyUI uses the global RNG)."""

    ratio: float
    state: _Unmerge = field(default_factory=_Unmerge)

    def merge(self, q: Tensor, k: Tensor, v: Tensor, extra_options: Mapping[str, Any]) -> tuple[Tensor, Tensor,
                                                                                                Tensor]:
        _, _, original_h, original_w = extra_options["original_shape"]
        downsample = int(math.ceil(math.sqrt((original_h * original_w) // q.shape[1])))
        if downsample > 1:
            self.state.fn = None
            return q, k, v
        w, h = int(math.ceil(original_w / downsample)), int(math.ceil(original_h / downsample))
        generator = torch.Generator().manual_seed(_stable_seed(extra_options, 0))
        merge, unmerge = _bipartite_merge(q, w, h, 2, 2, int(q.shape[1] * self.ratio), generator)
        self.state.fn = unmerge
        return merge(q), k, v

    def unmerge(self, n: Tensor, extra_options: Mapping[str, Any]) -> Tensor:
        fn, self.state.fn = self.state.fn, None
        return n if fn is None else fn(n)


def _hw_candidates(hw: int, aspect_ratio: float) -> tuple[int, int]:
    """h, w with h·w = hw and w/h closest to the aspect ratio (HyperTile's find_hw_candidates)."""
    h, w = round(math.sqrt(hw * aspect_ratio)), round(math.sqrt(hw / aspect_ratio))
    if h * w != hw:
        if (hw / h).is_integer():
            w = int(hw / h)
        elif (hw / w).is_integer():
            h = int(hw / w)
        else:
            pairs = [(i, hw // i) for i in range(2, hw + 1) if hw % i == 0]
            ratios = [pw / ph for ph, pw in pairs]
            best = min(ratios, key=lambda r: abs(r - aspect_ratio))
            h, w = pairs[ratios.index(best)]
    return h, w


def _random_divisor(value: int, min_value: int, max_options: int, rng: random.Random) -> int:
    min_value = min(min_value, value)
    divisors = [i for i in range(min_value, value + 1) if value % i == 0]
    options = [value // i for i in divisors[:max_options]]
    return options[rng.randint(0, len(options) - 1)]


@dataclass(eq=False)
class _Tiles:
    layout: tuple[int, int, int, int] | None = None


@dataclass(frozen=True, eq=False)
class HyperTile:
    """attn1_patch + attn1_output_patch: HyperTile (tfernd/HyperTile; ComfyUI nodes_hypertile): self-attention of
    the widths in ``apply_to`` runs on tiles of about tile_size/8 latent pixels (the query tokens reshaped into
    nh·nw batches), and the output is put back in place. Tile counts are chosen among the swap_size largest
    divisors from a seed of the step and block (ComfyUI uses a counter)."""

    model_channels: int
    apply_to: frozenset[int]
    latent_tile_size: int
    swap_size: int
    scale_depth: bool
    state: _Tiles = field(default_factory=_Tiles)

    def tile(self, q: Tensor, k: Tensor, v: Tensor, extra_options: Mapping[str, Any]) -> tuple[Tensor, Tensor,
                                                                                               Tensor]:
        if q.shape[-1] not in self.apply_to:
            return q, k, v
        shape = extra_options["original_shape"]
        h, w = _hw_candidates(q.shape[1], shape[-1] / shape[-2])
        factor = 2 ** ((q.shape[-1] // self.model_channels) - 1) if self.scale_depth else 1
        rng = random.Random(_stable_seed(extra_options, 1))
        nh = _random_divisor(h, self.latent_tile_size * factor, self.swap_size, rng)
        nw = _random_divisor(w, self.latent_tile_size * factor, self.swap_size, rng)
        if nh * nw > 1:
            b, _, c = q.shape
            # (b, nh·h'·nw·w', c) -> (b·nh·nw, h'·w', c)
            q = (q.reshape(b, nh, h // nh, nw, w // nw, c).permute(0, 1, 3, 2, 4, 5)
                 .reshape(b * nh * nw, (h // nh) * (w // nw), c))
            # Keys and values stay in token order; ComfyUI's attention views them with the queries' batch, i.e. as
            # nh·nw consecutive runs of tokens per image. The same view here keeps its results.
            k = k.reshape(q.shape[0], -1, k.shape[-1])
            v = v.reshape(q.shape[0], -1, v.shape[-1])
            self.state.layout = (nh, nw, h, w)
        return q, k, v

    def untile(self, out: Tensor, extra_options: Mapping[str, Any]) -> Tensor:
        layout, self.state.layout = self.state.layout, None
        if layout is None:
            return out
        nh, nw, h, w = layout
        bnn, _, c = out.shape
        b = bnn // (nh * nw)
        out = out.reshape(b, nh, nw, h // nh, w // nw, c).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(b, h * w, c)


__all__ = [
    "AdaptiveProjectedGuidance", "CFGNorm", "DeepShrink", "DifferentialDiffusion", "EpsilonScaling", "FreSca",
    "FreeU", "HyperTile", "LatentOperationCFG", "PerturbedAttentionGuidance", "RescaleCFG", "SelfAttentionGuidance",
    "TemporalScoreRescaling", "TokenMerging", "attention_with_scores", "cfg_zero_star", "fourier_scale",
    "gaussian_blur", "mahiro", "sag_blur_map", "tangential_damping_cfg",
]
