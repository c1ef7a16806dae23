"""MMDiT (Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"), the
transformer of SD3 / SD3.5, with the MMDiT-X extension of SD3.5 medium: in its first blocks the image stream runs a
second self-attention over the image tokens alone (``x_block.attn2``) beside the joint attention.

Each joint block has a ``context_block`` (text) and an ``x_block`` (image) with their own weights, attending jointly
over [text, image] tokens; the last block's context block is "pre-only" (it feeds the attention and is then dropped).
Conditioning by adaLN from c = t_embedder(1000·σ) + y_embedder(pooled CLIP-L ⊕ CLIP-G). Positions: a stored 2-D
sin-cos table (``pos_embed``, 384 × 384 patches for SD3.5), cropped around its centre to the image.

Module names equal the released file's keys after ``model.diffusion_model.``; the configuration is read from the
tensors: widths from shapes, depth from the blocks present, the head width from the qk-norm weights (64), MMDiT-X
layers from the blocks that have ``attn2``. Numbers follow ComfyUI's ``comfy/ldm/modules/diffusionmodules/mmdit.py``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusion.attention import multihead_attention
from diffusion.dit_layers import Linear, layer_norm
from diffusion.unet import timestep_embedding as unet_timestep_embedding

TIME_EMBED_DIM = 256
DEFAULT_HEAD_DIM = 64


class MMDiTConfigError(ValueError):
    """The tensors are not an MMDiT this module can build."""


@dataclass(frozen=True)
class MMDiTConfig:
    """An MMDiT's hyper-parameters (SD3.5 medium: 1536 wide, 24 heads, 24 joint blocks, MMDiT-X in blocks 0–12)."""

    in_channels: int = 16
    out_channels: int = 16
    patch_size: int = 2
    hidden_size: int = 1536
    num_heads: int = 24
    depth: int = 24
    mlp_ratio: float = 4.0
    adm_in_channels: int | None = 2048
    context_in_dim: int | None = 4096
    pos_embed_max_size: int | None = 384
    qk_norm: bool = True
    qkv_bias: bool = True
    x_block_self_attn_layers: tuple[int, ...] = tuple(range(13))

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise MMDiTConfigError(f"hidden size {self.hidden_size} is not divisible by {self.num_heads} heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def timestep_embedding(t: Tensor, dim: int = TIME_EMBED_DIM, max_period: float = 10000.0) -> Tensor:
    """The UNet's sinusoidal embedding (diffusion/unet.py) at MMDiT's width; t is already σ·1000 (float32)."""
    return unet_timestep_embedding(t, dim, max_period)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class RMSNormWeight(nn.Module):
    """MMDiT's qk RMS norm (``weight``), computed in the input's dtype as ComfyUI's."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.to(x.dtype)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool, qk_norm: bool, pre_only: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = None if pre_only else Linear(dim, dim)
        self.ln_q = RMSNormWeight(self.head_dim) if qk_norm else nn.Identity()
        self.ln_k = RMSNormWeight(self.head_dim) if qk_norm else nn.Identity()

    def pre_attention(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, L, C] -> q, k, v [B, L, C] (q and k normed per head)."""
        b, length, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, length, 3, -1, self.head_dim).movedim(2, 0)  # each (B, L, H, D)
        return self.ln_q(q).reshape(b, length, -1), self.ln_k(k).reshape(b, length, -1), v.reshape(b, length, -1)


class DismantledBlock(nn.Module):
    """One stream of a joint block: adaLN-modulated attention inputs, then (unless pre-only) the attention output
    projection and the MLP; with ``attn2`` (MMDiT-X) a second, image-only self-attention."""

    def __init__(self, cfg: MMDiTConfig, *, pre_only: bool, self_attn: bool) -> None:
        super().__init__()
        dim = cfg.hidden_size
        self.pre_only = pre_only
        self.attn = SelfAttention(dim, cfg.num_heads, qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm, pre_only=pre_only)
        self.attn2 = (SelfAttention(dim, cfg.num_heads, qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm)
                      if self_attn else None)
        self.mlp = None if pre_only else Mlp(dim, int(dim * cfg.mlp_ratio))
        n_mods = 2 if pre_only else (9 if self_attn else 6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(dim, n_mods * dim))

    def pre_attention(self, x: Tensor, c: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...] | None, tuple]:
        """(qkv for the joint attention, qkv for attn2 or None, what post_attention needs)."""
        mods = self.adaLN_modulation(c).chunk(2 if self.pre_only else (9 if self.attn2 is not None else 6), dim=1)
        x_norm = layer_norm(x)
        qkv = self.attn.pre_attention(modulate(x_norm, mods[0], mods[1]))
        if self.pre_only:
            return qkv, None, ()
        qkv2 = None
        if self.attn2 is not None:
            qkv2 = self.attn2.pre_attention(modulate(x_norm, mods[6], mods[7]))
        return qkv, qkv2, (x, *mods[2:6], *mods[8:9])

    def post_attention(self, attn: Tensor, attn2: Tensor | None, x: Tensor, gate_msa: Tensor, shift_mlp: Tensor,
                       scale_mlp: Tensor, gate_mlp: Tensor, gate_msa2: Tensor | None = None) -> Tensor:
        assert self.attn.proj is not None and self.mlp is not None
        x = x + gate_msa.unsqueeze(1) * self.attn.proj(attn)
        if attn2 is not None and self.attn2 is not None and gate_msa2 is not None:
            assert self.attn2.proj is not None
            x = x + gate_msa2.unsqueeze(1) * self.attn2.proj(attn2)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(layer_norm(x), shift_mlp, scale_mlp))


class JointBlock(nn.Module):
    def __init__(self, cfg: MMDiTConfig, *, pre_only: bool, self_attn: bool) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.context_block = DismantledBlock(cfg, pre_only=pre_only, self_attn=False)
        self.x_block = DismantledBlock(cfg, pre_only=False, self_attn=self_attn)

    def forward(self, context: Tensor, x: Tensor, c: Tensor) -> tuple[Tensor | None, Tensor]:
        context_qkv, _, context_rest = self.context_block.pre_attention(context, c)
        x_qkv, x_qkv2, x_rest = self.x_block.pre_attention(x, c)
        q, k, v = (torch.cat((a, b), dim=1) for a, b in zip(context_qkv, x_qkv))
        attn = multihead_attention(q, k, v, self.num_heads)  # (B, T + L, C)
        tokens = context.shape[1]
        attn2 = multihead_attention(*x_qkv2, self.num_heads) if x_qkv2 is not None else None
        x = self.x_block.post_attention(attn[:, tokens:], attn2, *x_rest)
        if self.context_block.pre_only:
            return None, x
        return self.context_block.post_attention(attn[:, :tokens], None, *context_rest), x


class Embedder(nn.Module):
    """Linear -> SiLU -> Linear (``mlp.0`` / ``mlp.2``)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(Linear(in_dim, dim), nn.SiLU(), Linear(dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: MMDiTConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        pad_h, pad_w = (-x.shape[-2]) % p, (-x.shape[-1]) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        return self.proj(x.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)  # (B, h·w, C)


class FinalLayer(nn.Module):
    def __init__(self, cfg: MMDiTConfig) -> None:
        super().__init__()
        self.linear = Linear(cfg.hidden_size, cfg.patch_size * cfg.patch_size * cfg.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), Linear(cfg.hidden_size, 2 * cfg.hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(layer_norm(x), shift, scale))


class MMDiT(nn.Module):
    """The SD3 / SD3.5 transformer; ``state_dict()`` keys equal the file's after ``model.diffusion_model.``."""

    def __init__(self, config: MMDiTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.x_embedder = PatchEmbed(config)
        self.t_embedder = Embedder(TIME_EMBED_DIM, dim)
        self.y_embedder = Embedder(config.adm_in_channels, dim) if config.adm_in_channels else None
        self.context_embedder = Linear(config.context_in_dim, dim) if config.context_in_dim else nn.Identity()
        if config.pos_embed_max_size is not None:
            self.register_buffer("pos_embed", torch.zeros(1, config.pos_embed_max_size ** 2, dim))
        else:
            self.pos_embed = None
        self.joint_blocks = nn.ModuleList(
            JointBlock(config, pre_only=i == config.depth - 1, self_attn=i in config.x_block_self_attn_layers)
            for i in range(config.depth))
        self.final_layer = FinalLayer(config)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.x_embedder.proj.bias.dtype

    def cropped_pos_embed(self, h: int, w: int) -> Tensor:
        """The stored table's centre h × w patches -> [1, h·w, C]."""
        size = self.config.pos_embed_max_size
        if self.pos_embed is None or size is None:
            raise MMDiTConfigError("this MMDiT has no stored position table")
        if h > size or w > size:
            raise ValueError(f"{h}x{w} patches exceed the position table's {size}x{size} (image too large)")
        top, left = (size - h) // 2, (size - w) // 2
        table = self.pos_embed.reshape(1, size, size, -1)[:, top:top + h, left:left + w, :]
        return table.reshape(1, h * w, -1)

    def forward(self, x: Tensor, timestep: Tensor, context: Tensor | None = None, y: Tensor | None = None,
                transformer_options: dict | None = None, **_: object) -> Tensor:
        """x [B, C, H, W] latent, timestep [B] = σ·1000, context [B, T, 4096], y [B, 2048] -> velocity.

        ``transformer_options["patches_replace"]["dit"][("double_block", i)]`` replaces joint block i as in
        ComfyUI: fn({"img", "txt", "vec"}, {"original_block", "transformer_options"}) -> {"img", "txt"}."""
        options = transformer_options or {}
        replace = (options.get("patches_replace") or {}).get("dit", {})
        dtype = self.compute_dtype
        b, _, height, width = x.shape
        p = self.config.patch_size
        h, w = (height + 1) // p, (width + 1) // p
        tokens = self.x_embedder(x.to(dtype)) + self.cropped_pos_embed(h, w).to(dtype)
        timestep = timestep.reshape(-1).float().expand(b) if timestep.numel() == 1 else timestep.float()
        c = self.t_embedder(timestep_embedding(timestep).to(dtype))
        if y is not None and self.y_embedder is not None:
            c = c + self.y_embedder(y.to(dtype))
        ctx = self.context_embedder(context.to(dtype)) if context is not None else tokens[:, :0]
        for i, block in enumerate(self.joint_blocks):
            if ("double_block", i) in replace:
                def joint(args: dict, block: nn.Module = block) -> dict:
                    out_txt, out_img = block(args["txt"], args["img"], args["vec"])
                    return {"txt": out_txt, "img": out_img}

                out = replace[("double_block", i)]({"img": tokens, "txt": ctx, "vec": c},
                                                   {"original_block": joint, "transformer_options": options})
                ctx, tokens = out["txt"], out["img"]
            else:
                ctx, tokens = block(ctx, tokens, c)
        out = self.final_layer(tokens, c).float()  # (B, h·w, p·p·C)
        out = out.reshape(b, h, w, p, p, -1).permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
        return out.reshape(b, -1, h * p, w * p)[:, :, :height, :width]


# ---------------------------------------------------------------------------------------------------------------
# Detection

Shapes = Mapping[str, tuple[int, ...]]


def is_mmdit(shapes: Shapes, prefix: str = "") -> bool:
    return f"{prefix}joint_blocks.0.x_block.attn.qkv.weight" in shapes and f"{prefix}x_embedder.proj.weight" in shapes


def detect_mmdit_config(shapes: Shapes, *, prefix: str = "", path: str | os.PathLike[str] = "") -> MMDiTConfig:
    p = prefix

    def shape(key: str) -> tuple[int, ...]:
        if p + key not in shapes:
            raise MMDiTConfigError(f"{Path(path).name or 'file'}: not an MMDiT, {p + key} is missing")
        return shapes[p + key]

    hidden, in_channels, patch, _ = shape("x_embedder.proj.weight")
    blocks = sorted({int(m.group(1)) for k in shapes if (m := re.match(re.escape(p) + r"joint_blocks\.(\d+)\.", k))})
    if blocks != list(range(len(blocks))):
        raise MMDiTConfigError(f"joint blocks are not numbered 0..n-1: {blocks[:10]}")
    ln_q = shapes.get(f"{p}joint_blocks.0.x_block.attn.ln_q.weight")
    head_dim = ln_q[0] if ln_q else DEFAULT_HEAD_DIM
    pos = shapes.get(p + "pos_embed")
    self_attn = tuple(i for i in blocks if f"{p}joint_blocks.{i}.x_block.attn2.qkv.weight" in shapes)
    y = shapes.get(p + "y_embedder.mlp.0.weight")
    ctx = shapes.get(p + "context_embedder.weight")
    try:
        return MMDiTConfig(
            in_channels=in_channels,
            out_channels=shape("final_layer.linear.weight")[0] // (patch * patch),
            patch_size=patch,
            hidden_size=hidden,
            num_heads=hidden // head_dim,
            depth=len(blocks),
            mlp_ratio=shape("joint_blocks.0.x_block.mlp.fc1.weight")[0] / hidden,
            adm_in_channels=y[1] if y else None,
            context_in_dim=ctx[1] if ctx else None,
            pos_embed_max_size=round(math.sqrt(pos[1])) if pos else None,
            qk_norm=ln_q is not None,
            qkv_bias=f"{p}joint_blocks.0.x_block.attn.qkv.bias" in shapes,
            x_block_self_attn_layers=self_attn,
        )
    except ValueError as exc:
        raise MMDiTConfigError(f"{Path(path).name or 'file'}: {exc}") from None
