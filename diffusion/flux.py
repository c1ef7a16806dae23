"""Flux.1 (Black Forest Labs 2024): a rectified-flow transformer over 2×2 latent patches with double-stream
(separate image and text weights, joint attention) and single-stream (one sequence, parallel attention + MLP) blocks,
rotary position embeddings over 3 axes, and adaLN modulation by the timestep, the pooled CLIP-L vector and, for
the guidance-distilled dev model, the guidance scale.

Module names equal the keys of the released files (``flux1-dev.safetensors``: no prefix; in a single-file
checkpoint under ``model.diffusion_model.``). The configuration is read from the tensors: widths from shapes, depth
from the blocks present, guidance embedding from ``guidance_in``; only the rotary split of a head (16/56/56 of 128)
cannot be read and follows the release's proportions (``rope_axes``).

Inputs follow ComfyUI's ``comfy/ldm/flux/model.py``: ``forward(x [B, 16, h, w] latent, timestep [B] = σ,
context [B, T, 4096] T5 states, y [B, 768] pooled CLIP-L, guidance [B] or None)`` -> velocity [B, 16, h, w].
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.dit_layers import Linear, RMSNorm, layer_norm
from diffusion.unet import timestep_embedding as unet_timestep_embedding

if TYPE_CHECKING:
    from diffusion.controlnet import ControlResiduals

PATCH = 2
TIME_EMBED_DIM = 256
ROPE_THETA = 10000
TIME_FACTOR = 1000.0


class FluxConfigError(ValueError):
    """The tensors are not a Flux transformer this module can build."""


@dataclass(frozen=True)
class FluxConfig:
    """A Flux transformer's hyper-parameters (dev: 3072 wide, 24 heads, 19 double + 38 single blocks)."""

    in_channels: int = 16
    out_channels: int = 16
    hidden_size: int = 3072
    num_heads: int = 24
    mlp_ratio: float = 4.0
    depth: int = 19
    depth_single_blocks: int = 38
    context_in_dim: int = 4096
    vec_in_dim: int = 768
    guidance_embed: bool = True
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise FluxConfigError(f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads")
        if self.head_dim % 16:
            raise FluxConfigError(f"head width {self.head_dim} must be a multiple of 16 for the 3-axis rotary split")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def rope_axes(self) -> tuple[int, int, int]:
        """Rotary widths of the (text index, row, column) axes: 16/56/56 of the released 128-wide heads, the same
        1:3.5:3.5 split for other widths."""
        first = self.head_dim // 8
        rest = (self.head_dim - first) // 2
        return first, rest, self.head_dim - first - rest


# ---------------------------------------------------------------------------------------------------------------
# Embeddings


def timestep_embedding(t: Tensor, dim: int = TIME_EMBED_DIM, max_period: float = 10000.0,
                       time_factor: float = TIME_FACTOR) -> Tensor:
    """Sinusoidal embedding of t·1000 (the UNet's, diffusion/unet.py, of the scaled time; float32)."""
    return unet_timestep_embedding(time_factor * t, dim, max_period)


def rope(pos: Tensor, dim: int, theta: int = ROPE_THETA) -> Tensor:
    """Rotation matrices [B, N, dim/2, 2, 2] (float32) for positions [B, N] (Su et al. 2021, RoFormer)."""
    scale = torch.linspace(0, (dim - 2) / dim, steps=dim // 2, dtype=torch.float64, device=pos.device)
    omega = 1.0 / (theta ** scale)
    out = torch.einsum("...n,d->...nd", pos.to(torch.float32), omega.float())  # (B, N, dim/2)
    out = torch.stack([torch.cos(out), -torch.sin(out), torch.sin(out), torch.cos(out)], dim=-1)
    return out.reshape(*out.shape[:-1], 2, 2).float()


def position_embedding(ids: Tensor, axes: tuple[int, ...]) -> Tensor:
    """ids [B, N, 3] -> [B, 1, N, head_dim/2, 2, 2] rotations, the axes' blocks side by side."""
    return torch.cat([rope(ids[..., i], axes[i]) for i in range(len(axes))], dim=-3).unsqueeze(1)


def apply_rope(xq: Tensor, xk: Tensor, freqs: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate consecutive channel pairs of q and k [B, H, N, D] by ``freqs`` (computed in float32)."""
    xq_ = xq.to(freqs.dtype).reshape(*xq.shape[:-1], -1, 1, 2)
    xk_ = xk.to(freqs.dtype).reshape(*xk.shape[:-1], -1, 1, 2)
    xq_out = freqs[..., 0] * xq_[..., 0] + freqs[..., 1] * xq_[..., 1]
    xk_out = freqs[..., 0] * xk_[..., 0] + freqs[..., 1] * xk_[..., 1]
    return xq_out.reshape(*xq.shape).type_as(xq), xk_out.reshape(*xk.shape).type_as(xk)


def patchify(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [B, C, h, w] -> tokens [B, ⌈h/2⌉·⌈w/2⌉, C·2·2] (padded circularly to whole patches, as ComfyUI;
    channel-major inside a patch) and their position ids [B, L, 3] = (0, row, column), float32."""
    bs, _, h, w = x.shape
    pad_h, pad_w = (-h) % PATCH, (-w) % PATCH
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
    h_len, w_len = x.shape[2] // PATCH, x.shape[3] // PATCH
    # (B, C, h_len·2, w_len·2) -> (B, h_len·w_len, C·2·2)
    img = x.reshape(bs, -1, h_len, PATCH, w_len, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(bs, h_len * w_len, -1)
    ids = torch.zeros((h_len, w_len, 3), device=x.device, dtype=torch.float32)
    ids[:, :, 1] = torch.arange(h_len, device=x.device, dtype=torch.float32)[:, None]
    ids[:, :, 2] = torch.arange(w_len, device=x.device, dtype=torch.float32)[None, :]
    return img, ids.reshape(1, h_len * w_len, 3).expand(bs, -1, -1)


def attention(q: Tensor, k: Tensor, v: Tensor, pe: Tensor) -> Tensor:
    """Rotary attention over [B, H, N, D] -> [B, N, H·D]."""
    q, k = apply_rope(q, k, pe)
    x = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D)
    return x.transpose(1, 2).flatten(2)


# ---------------------------------------------------------------------------------------------------------------
# Blocks (names = checkpoint keys)


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.in_layer = Linear(in_dim, hidden_dim)
        self.out_layer = Linear(hidden_dim, hidden_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class QKNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = Linear(dim, dim)

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, L, C] -> normed q, k and v, each [B, H, L, D]."""
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)  # (3, B, H, L, D)
        q, k, v = qkv.unbind(0)
        q, k = self.norm(q, k, v)
        return q, k, v


@dataclass(frozen=True)
class ModulationOut:
    shift: Tensor
    scale: Tensor
    gate: Tensor


class Modulation(nn.Module):
    """adaLN: one Linear(SiLU(vec)) giving shift, scale and gate (twice for a double block)."""

    def __init__(self, dim: int, double: bool) -> None:
        super().__init__()
        self.multiplier = 6 if double else 3
        self.lin = Linear(dim, self.multiplier * dim)

    def forward(self, vec: Tensor) -> tuple[ModulationOut, ModulationOut | None]:
        out = self.lin(F.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1)
        return ModulationOut(*out[:3]), ModulationOut(*out[3:]) if self.multiplier == 6 else None


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(Linear(dim, hidden), nn.GELU(approximate="tanh"), Linear(hidden, dim))


class DoubleStreamBlock(nn.Module):
    """Image and text streams with their own weights, attending jointly over [text, image] tokens."""

    def __init__(self, cfg: FluxConfig) -> None:
        super().__init__()
        dim = cfg.hidden_size
        self.img_mod = Modulation(dim, double=True)
        self.img_attn = SelfAttention(dim, cfg.num_heads, cfg.qkv_bias)
        self.img_mlp = _mlp(dim, cfg.mlp_hidden)
        self.txt_mod = Modulation(dim, double=True)
        self.txt_attn = SelfAttention(dim, cfg.num_heads, cfg.qkv_bias)
        self.txt_mlp = _mlp(dim, cfg.mlp_hidden)

    def forward(self, img: Tensor, txt: Tensor, vec: Tensor, pe: Tensor) -> tuple[Tensor, Tensor]:
        img_mod1, img_mod2 = self.img_mod(vec)
        txt_mod1, txt_mod2 = self.txt_mod(vec)
        img_q, img_k, img_v = self.img_attn.qkv_heads((1 + img_mod1.scale) * layer_norm(img) + img_mod1.shift)
        txt_q, txt_k, txt_v = self.txt_attn.qkv_heads((1 + txt_mod1.scale) * layer_norm(txt) + txt_mod1.shift)
        attn = attention(torch.cat((txt_q, img_q), dim=2), torch.cat((txt_k, img_k), dim=2),
                         torch.cat((txt_v, img_v), dim=2), pe)  # (B, T + L, C)
        txt_attn, img_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]
        assert img_mod2 is not None and txt_mod2 is not None
        img = img + img_mod1.gate * self.img_attn.proj(img_attn)
        img = img + img_mod2.gate * self.img_mlp((1 + img_mod2.scale) * layer_norm(img) + img_mod2.shift)
        txt = txt + txt_mod1.gate * self.txt_attn.proj(txt_attn)
        txt = txt + txt_mod2.gate * self.txt_mlp((1 + txt_mod2.scale) * layer_norm(txt) + txt_mod2.shift)
        if txt.dtype == torch.float16:
            txt = torch.nan_to_num(txt, nan=0.0, posinf=65504, neginf=-65504)
        return img, txt


class SingleStreamBlock(nn.Module):
    """One stream: attention and MLP in parallel from one Linear (Dehghani et al. 2023, ViT-22B)."""

    def __init__(self, cfg: FluxConfig) -> None:
        super().__init__()
        dim = cfg.hidden_size
        self.hidden_size = dim
        self.num_heads = cfg.num_heads
        self.mlp_hidden = cfg.mlp_hidden
        self.linear1 = Linear(dim, dim * 3 + self.mlp_hidden)
        self.linear2 = Linear(dim + self.mlp_hidden, dim)
        self.norm = QKNorm(cfg.head_dim)
        self.modulation = Modulation(dim, double=False)

    def forward(self, x: Tensor, vec: Tensor, pe: Tensor) -> Tensor:
        mod, _ = self.modulation(vec)
        x_mod = (1 + mod.scale) * layer_norm(x) + mod.shift
        qkv, mlp = torch.split(self.linear1(x_mod), [3 * self.hidden_size, self.mlp_hidden], dim=-1)
        q, k, v = qkv.unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.norm(q, k, v)
        out = self.linear2(torch.cat((attention(q, k, v, pe), F.gelu(mlp, approximate="tanh")), dim=2))
        x = x + mod.gate * out
        if x.dtype == torch.float16:
            x = torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
        return x


class LastLayer(nn.Module):
    def __init__(self, dim: int, out_features: int) -> None:
        super().__init__()
        self.linear = Linear(dim, out_features)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(dim, 2 * dim))

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        return self.linear((1 + scale[:, None, :]) * layer_norm(x) + shift[:, None, :])


def _residual(control: ControlResiduals | None, part: str, i: int) -> Tensor | None:
    """The control residual for block i of ``part`` ("input": double blocks, "output": single blocks), if any."""
    residuals = getattr(control, part) if control is not None else ()
    return residuals[i] if i < len(residuals) else None


class Flux(nn.Module):
    """The Flux.1 transformer; ``state_dict()`` keys equal the released file's."""

    def __init__(self, config: FluxConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.img_in = Linear(config.in_channels * PATCH * PATCH, dim)
        self.time_in = MLPEmbedder(TIME_EMBED_DIM, dim)
        self.vector_in = MLPEmbedder(config.vec_in_dim, dim)
        self.guidance_in = MLPEmbedder(TIME_EMBED_DIM, dim) if config.guidance_embed else None
        self.txt_in = Linear(config.context_in_dim, dim)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(config) for _ in range(config.depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(config) for _ in range(config.depth_single_blocks))
        self.final_layer = LastLayer(dim, PATCH * PATCH * config.out_channels)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype activations take (the biases'; weight matrices may be stored narrower, e.g. fp8)."""
        return self.img_in.bias.dtype

    def forward_tokens(self, img: Tensor, img_ids: Tensor, txt: Tensor, txt_ids: Tensor, timesteps: Tensor,
                       y: Tensor, guidance: Tensor | None = None, transformer_options: dict | None = None,
                       control: ControlResiduals | None = None) -> Tensor:
        """Patch tokens [B, L, 64] -> velocity tokens [B, L, 64] (ComfyUI's forward_orig).

        ``control`` (a Flux ControlNet's residuals, diffusion/controlnet_flux.py) adds ``input[i]`` to the image
        tokens after double block i and ``output[i]`` to the image part of the sequence after single block i;
        missing and None entries add nothing.

        ``transformer_options["patches_replace"]["dit"]`` may replace blocks, keyed ("double_block", i) /
        ("single_block", i), called as ComfyUI calls them: fn(args, {"original_block", "transformer_options"}) with
        args {"img", "txt", "vec", "pe"} (single blocks: "img" is the joint sequence), returning the same keys
        (skip-layer guidance returns args unchanged)."""
        options = transformer_options or {}
        replace = (options.get("patches_replace") or {}).get("dit", {})
        dtype = self.compute_dtype
        img = self.img_in(img.to(dtype))
        vec = self.time_in(timestep_embedding(timesteps).to(dtype))
        if self.guidance_in is not None and guidance is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance.to(timesteps)).to(dtype))
        vec = vec + self.vector_in(y[:, :self.config.vec_in_dim].to(dtype))
        txt = self.txt_in(txt.to(dtype))
        pe = position_embedding(torch.cat((txt_ids, img_ids), dim=1), self.config.rope_axes)
        for i, block in enumerate(self.double_blocks):
            if ("double_block", i) in replace:
                def double(args: dict, block: nn.Module = block) -> dict:
                    out_img, out_txt = block(args["img"], args["txt"], args["vec"], args["pe"])
                    return {"img": out_img, "txt": out_txt}

                out = replace[("double_block", i)]({"img": img, "txt": txt, "vec": vec, "pe": pe},
                                                   {"original_block": double, "transformer_options": options})
                img, txt = out["img"], out["txt"]
            else:
                img, txt = block(img, txt, vec, pe)
            if (add := _residual(control, "input", i)) is not None:
                img = img + add.to(img.dtype)
        x = torch.cat((txt, img), dim=1)
        for i, single in enumerate(self.single_blocks):
            if ("single_block", i) in replace:
                def one(args: dict, single: nn.Module = single) -> dict:
                    return {"img": single(args["img"], args["vec"], args["pe"])}

                x = replace[("single_block", i)]({"img": x, "vec": vec, "pe": pe},
                                                 {"original_block": one, "transformer_options": options})["img"]
            else:
                x = single(x, vec, pe)
            if (add := _residual(control, "output", i)) is not None:
                x = torch.cat((x[:, :txt.shape[1]], x[:, txt.shape[1]:] + add.to(x.dtype)), dim=1)
        return self.final_layer(x[:, txt.shape[1]:], vec)

    def forward(self, x: Tensor, timestep: Tensor, context: Tensor, y: Tensor | None = None,
                guidance: Tensor | None = None, transformer_options: dict | None = None,
                control: ControlResiduals | None = None, **_: object) -> Tensor:
        """x [B, C, h, w] -> velocity [B, C, h, w] (any h, w: padded circularly to whole patches, as ComfyUI)."""
        bs, _, h, w = x.shape
        h_len, w_len = (h + PATCH - 1) // PATCH, (w + PATCH - 1) // PATCH
        img, img_ids = patchify(x)
        txt_ids = torch.zeros((bs, context.shape[1], 3), device=x.device, dtype=torch.float32)
        if y is None:
            y = torch.zeros((bs, self.config.vec_in_dim), device=x.device, dtype=x.dtype)
        timestep = timestep.reshape(-1).float().expand(bs) if timestep.numel() == 1 else timestep.float()
        if guidance is not None:
            guidance = guidance.reshape(-1).float().expand(bs) if guidance.numel() == 1 else guidance.float()
        out = self.forward_tokens(img, img_ids, context, txt_ids, timestep, y, guidance, transformer_options,
                                  control=control)
        out = out.float().reshape(bs, h_len, w_len, -1, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(bs, -1, h_len * PATCH, w_len * PATCH)[:, :, :h, :w]


# ---------------------------------------------------------------------------------------------------------------
# Detection from names and shapes

Shapes = Mapping[str, tuple[int, ...]]


def is_flux(shapes: Shapes, prefix: str = "") -> bool:
    return f"{prefix}double_blocks.0.img_attn.qkv.weight" in shapes and f"{prefix}img_in.weight" in shapes


def _count(shapes: Shapes, pattern: str) -> int:
    found = sorted({int(m.group(1)) for k in shapes if (m := re.match(pattern, k))})
    if found != list(range(len(found))):
        raise FluxConfigError(f"blocks are not numbered 0..n-1: {found[:10]}")
    return len(found)


def detect_flux_config(shapes: Shapes, *, prefix: str = "", path: str | os.PathLike[str] = "") -> FluxConfig:
    """A Flux configuration from tensor names and shapes under ``prefix``."""
    p = prefix

    def shape(key: str) -> tuple[int, ...]:
        if p + key not in shapes:
            raise FluxConfigError(f"{Path(path).name or 'file'}: not a Flux transformer, {p + key} is missing")
        return shapes[p + key]

    hidden, patch_in = shape("img_in.weight")
    head_dim = shape("double_blocks.0.img_attn.norm.query_norm.scale")[0]
    return FluxConfig(
        in_channels=patch_in // (PATCH * PATCH),
        out_channels=shape("final_layer.linear.weight")[0] // (PATCH * PATCH),
        hidden_size=hidden,
        num_heads=hidden // head_dim,
        mlp_ratio=shape("double_blocks.0.img_mlp.0.weight")[0] / hidden,
        depth=_count(shapes, re.escape(p) + r"double_blocks\.(\d+)\."),
        depth_single_blocks=_count(shapes, re.escape(p) + r"single_blocks\.(\d+)\."),
        context_in_dim=shape("txt_in.weight")[1],
        vec_in_dim=shape("vector_in.in_layer.weight")[1],
        guidance_embed=f"{p}guidance_in.in_layer.weight" in shapes,
        qkv_bias=f"{p}double_blocks.0.img_attn.qkv.bias" in shapes,
    )
