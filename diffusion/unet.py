"""The latent-diffusion UNet (CompVis `openaimodel.UNetModel` layout) used by SD1.x, SD2.x and SDXL.

Module names equal the checkpoint keys after `model.diffusion_model.` is stripped, so a released state dict
loads with strict key and shape checks. The network (Ho et al. 2020 UNet; Rombach et al. 2022 latent
diffusion with cross-attention; Podell et al. 2023 SDXL) is:

    x ─ input_blocks (ResBlock [+ SpatialTransformer]) × num_res_blocks per level, Downsample between levels
      ─ middle_block (ResBlock, SpatialTransformer, ResBlock)
      ─ output_blocks (concat skip, ResBlock [+ SpatialTransformer]) × (num_res_blocks + 1) per level, Upsample
      ─ out (GroupNorm, SiLU, conv)

The whole forward runs in the dtype of the weights (fp16/bf16 on GPU, fp32 on CPU); only the sinusoidal
timestep embedding is computed in fp32 first.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.attention import multihead_attention

if TYPE_CHECKING:
    from diffusion.controlnet import ControlResiduals

log = logging.getLogger(__name__)

# Every GroupNorm of the reference model uses 32 groups; a checkpoint cannot say otherwise (shapes only).
NORM_GROUPS = 32


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of one UNet. Defaults are SD1.5's; every field can be read back from a checkpoint's shapes
    except the attention head split (see `num_heads`)."""

    in_channels: int = 4
    """Channels of the input latent (4; 9 for inpainting models: latent + mask + masked-image latent)."""
    out_channels: int = 4
    """Channels of the prediction (eps or v), equal to the latent channels."""
    model_channels: int = 320
    """Width of level 0; level i is `model_channels * channel_mult[i]` wide. Time embedding is 4x this."""
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    """Width multiplier of each resolution level; its length is the number of levels (downsampling by 2 between)."""
    num_res_blocks: int = 2
    """ResBlocks per input level; each output level has one more (it also consumes the downsample's skip)."""
    transformer_depth: tuple[int, ...] = (1, 1, 1, 0)
    """Per input level: transformer blocks in the SpatialTransformer after each ResBlock (0 = no attention)."""
    transformer_depth_middle: int = 1
    """Transformer blocks in the middle SpatialTransformer (0 = the middle block is just two ResBlocks)."""
    transformer_depth_output: tuple[int, ...] = (0, 1, 1, 1)
    """Per output level in execution order (deepest level first): transformer blocks after each ResBlock."""
    context_dim: int = 768
    """Width of the cross-attention context (text encoder hidden size: 768 SD1, 1024 SD2, 2048 SDXL)."""
    num_heads: int | None = 8
    """Fixed number of attention heads at every width (SD1 style). Exactly one of this and num_head_channels is set."""
    num_head_channels: int | None = None
    """Fixed head width; heads = width / num_head_channels (SD2/SDXL style: 64)."""
    use_linear_in_transformer: bool = False
    """SpatialTransformer proj_in/proj_out are Linear [C,C] (SD2/SDXL) instead of 1x1 convs [C,C,1,1] (SD1)."""
    adm_in_channels: int | None = None
    """Width of the extra "y" vector (SDXL 2816: pooled text + size embeddings) fed through label_emb; None = none."""

    def __post_init__(self) -> None:
        levels = len(self.channel_mult)
        if levels == 0:
            raise ValueError("UNetConfig.channel_mult must name at least one level")
        if len(self.transformer_depth) != levels or len(self.transformer_depth_output) != levels:
            raise ValueError(
                f"UNetConfig: transformer_depth {self.transformer_depth} and transformer_depth_output "
                f"{self.transformer_depth_output} need one entry per level ({levels})"
            )
        if (self.num_heads is None) == (self.num_head_channels is None):
            raise ValueError("UNetConfig: set exactly one of num_heads and num_head_channels")
        if self.num_res_blocks < 1:
            raise ValueError(f"UNetConfig.num_res_blocks must be >= 1, got {self.num_res_blocks}")
        widths = [self.model_channels * m for m in self.channel_mult]
        for width in widths:
            if width % NORM_GROUPS:
                raise ValueError(f"UNetConfig: width {width} is not divisible by {NORM_GROUPS} GroupNorm groups")
        attended = [w for w, d in zip(widths, self.transformer_depth) if d > 0]
        attended += [w for w, d in zip(reversed(widths), self.transformer_depth_output) if d > 0]
        attended += [widths[-1]] if self.transformer_depth_middle > 0 else []
        for width in attended:
            heads, dim_head = self.attention_heads(width)
            if heads < 1 or heads * dim_head != width:
                raise ValueError(f"UNetConfig: width {width} cannot be split into attention heads ({heads} x {dim_head})")

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep embedding MLP (4x model_channels, as in the reference)."""
        return self.model_channels * 4

    def attention_heads(self, width: int) -> tuple[int, int]:
        """(heads, head width) of a SpatialTransformer of the given width."""
        if self.num_head_channels is not None:
            return width // self.num_head_channels, self.num_head_channels
        assert self.num_heads is not None
        return self.num_heads, width // self.num_heads


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (fractional) timesteps (Vaswani et al. 2017; Ho et al. 2020), fp32.

    Args:
        timesteps: [B] timestep values (any float dtype; computed in fp32).
        dim: output width.
        max_period: the longest wavelength.

    Returns:
        [B, dim] float32; cosines first, then sines, as the LDM/SGM reference orders them.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps.to(torch.float32)[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2·half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # odd width: one zero column, as the reference
    return emb


GEMM_CONV_MAX_POSITIONS = 512
"""Output positions (batch x H x W) up to which a CPU convolution runs as unfold + one matrix multiply."""


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and checkpoint keys) that runs small CPU convolutions as a matrix multiply.

    Why: on the CPU, PyTorch's oneDNN convolution re-lays out the weight on every call, which costs about as much as
    the arithmetic when the output has few positions and the weight is large. Measured on the project's 2-core
    machine (fp32, one thread, CPU time): a 1280->1280 3x3 conv at 16x16 takes 1.37x longer through oneDNN than as
    unfold + GEMM, 2560->1280 at 8x8 about 2x; at 1024+ positions oneDNN wins (0.55-0.9x). SD1.5 at 1x4x32x32 spends
    about 28 % less CPU time with this path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or self.groups != 1 or self.padding_mode != "zeros":
            return super().forward(x)
        b, c, height, width = x.shape
        kh, kw = self.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if b * out_h * out_w > GEMM_CONV_MAX_POSITIONS:
            return super().forward(x)
        if kh == kw == 1 and sh == sw == 1 and ph == pw == 0:
            cols = x.flatten(2)  # (B, C, H·W), a view
        else:
            cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        weight = self.weight.flatten(1)  # (C_out, C_in·kh·kw), a view
        if b == 1:
            out = torch.addmm(self.bias[:, None], weight, cols[0]) if self.bias is not None else weight @ cols[0]
        else:
            out = weight @ cols  # (B, C_out, positions), weight broadcast without a copy
            if self.bias is not None:
                out = out + self.bias[:, None]
        return out.view(b, self.out_channels, out_h, out_w)  # (B, C_out, H_out, W_out)


class ResBlock(nn.Module):
    """Residual block with the timestep embedding added between its two convolutions."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.GroupNorm(NORM_GROUPS, channels),
            nn.SiLU(),
            Conv2d(channels, out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        # Index 2 is the reference's Dropout (p=0 at inference, no parameters); kept so the conv stays "out_layers.3".
        self.out_layers = nn.Sequential(
            nn.GroupNorm(NORM_GROUPS, out_channels),
            nn.SiLU(),
            nn.Identity(),
            Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection: nn.Module = (
            nn.Identity() if channels == out_channels else Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]  # (B, C, 1, 1) broadcast over H, W
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    """Multi-head attention from tokens to a context (self-attention when the context is the tokens)."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))  # reference index 1 is Dropout: no parameters

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                value: torch.Tensor | None = None) -> torch.Tensor:
        ctx = x if context is None else context
        val = ctx if value is None else value  # a model patch may give the values their own source (ComfyUI's)
        out = multihead_attention(self.to_q(x), self.to_k(ctx), self.to_v(val), self.heads)  # (B, T, inner)
        return self.to_out(out)


class GEGLU(nn.Module):
    """Gated GELU projection (Shazeer 2020, "GLU Variants Improve Transformer"): one matmul, split into value|gate."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)  # two (B, T, dim_out) views of one matmul output
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """Transformer MLP: GEGLU to 4x width, then back."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        # Index 1 is the reference's Dropout: no parameters, kept so the output Linear stays "net.2".
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Identity(), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm transformer block: self-attention, cross-attention to the text context, GEGLU MLP."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                transformer_options: dict | None = None) -> torch.Tensor:
        if transformer_options is not None:
            return patched_transformer_block(self, x, context, transformer_options)
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


def _attention(attn: CrossAttention, n: torch.Tensor, context: torch.Tensor | None, value: torch.Tensor | None,
               replace: object | None, extra_options: dict) -> torch.Tensor:
    """One attention of a patched block: the module's own, or a replace patch given the projected q, k, v
    (ComfyUI's ``patches_replace`` contract: fn(q, k, v, extra_options) -> [B, T, inner] before to_out)."""
    if replace is None:
        return attn(n, context, value)
    k_source = n if context is None else context
    v_source = k_source if value is None else value
    out = replace(attn.to_q(n), attn.to_k(k_source), attn.to_v(v_source), extra_options)  # type: ignore[operator]
    return attn.to_out(out)


def patched_transformer_block(block: BasicTransformerBlock, x: torch.Tensor, context: torch.Tensor,
                              transformer_options: dict) -> torch.Tensor:
    """BasicTransformerBlock.forward with a MODEL's transformer patches (diffusion/model_options.py), in ComfyUI's
    order and with its arguments: attn1_patch(n, context, value, extra_options) -> (n, context, value), the attn1
    replace keyed (block name, block number, transformer index) or (block name, block number), attn1_output_patch
    (n, extra_options), middle_patch(x, extra_options) after the self-attention residual, then the same for attn2.
    ``extra_options`` is every transformer option but the patches, plus n_heads, dim_head and attn_precision."""
    patches = transformer_options.get("patches", {})
    replace = transformer_options.get("patches_replace", {})
    extra_options = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
    heads = block.attn1.heads
    extra_options["n_heads"] = heads
    extra_options["dim_head"] = block.attn1.to_q.out_features // heads
    extra_options["attn_precision"] = None
    where = transformer_options.get("block")
    keys = [] if where is None else [(where[0], where[1], transformer_options.get("block_index", 0)), tuple(where)]

    def replacement(name: str) -> object | None:
        table = replace.get(name, {})
        return next((table[k] for k in keys if k in table), None)

    n = block.norm1(x)
    context_attn1: torch.Tensor | None = None
    value_attn1: torch.Tensor | None = None
    if patches.get("attn1_patch"):
        context_attn1 = value_attn1 = n
        for patch in patches["attn1_patch"]:
            n, context_attn1, value_attn1 = patch(n, context_attn1, value_attn1, extra_options)
    n = _attention(block.attn1, n, context_attn1, value_attn1, replacement("attn1"), extra_options)
    for patch in patches.get("attn1_output_patch", ()):
        n = patch(n, extra_options)
    x = x + n
    for patch in patches.get("middle_patch", ()):
        x = patch(x, extra_options)

    n = block.norm2(x)
    context_attn2: torch.Tensor = context
    value_attn2: torch.Tensor | None = None
    if patches.get("attn2_patch"):
        value_attn2 = context_attn2
        for patch in patches["attn2_patch"]:
            n, context_attn2, value_attn2 = patch(n, context_attn2, value_attn2, extra_options)
    n = _attention(block.attn2, n, context_attn2, value_attn2, replacement("attn2"), extra_options)
    for patch in patches.get("attn2_output_patch", ()):
        n = patch(n, extra_options)
    x = x + n
    return x + block.ff(block.norm3(x))


class SpatialTransformer(nn.Module):
    """Transformer over the H·W positions of a feature map, with a residual around the whole stack."""

    def __init__(
        self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int, use_linear: bool
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(NORM_GROUPS, channels, eps=1e-6)
        self.proj_in: nn.Module = nn.Linear(channels, inner) if use_linear else Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)
        )
        self.proj_out: nn.Module = nn.Linear(inner, channels) if use_linear else Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                transformer_options: dict | None = None) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, H·W, C)
        # A 1x1 conv on (B, C, H, W) is the same map as a Linear over the channels of the tokens; flatten(1) views the
        # conv weight [C, C, 1, 1] as [C, C], so both checkpoint layouts run one matmul on token-major data.
        h = F.linear(h, self.proj_in.weight.flatten(1), self.proj_in.bias)
        for index, block in enumerate(self.transformer_blocks):
            if transformer_options is None:
                h = block(h, context)
            else:
                transformer_options["block_index"] = index
                h = block(h, context, transformer_options)
        h = F.linear(h, self.proj_out.weight.flatten(1), self.proj_out.bias)  # (B, H·W, C)
        return x + h.transpose(1, 2).reshape(b, c, height, width)  # (B, C, H, W)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (halves H and W, rounding up)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: torch.Size | None = None) -> torch.Tensor:
        # With odd latent sizes a stride-2 conv rounded up (e.g. 9 -> 5); upsampling straight to the skip's size
        # (5 -> 9) keeps the nearest-neighbour map of "2x then crop", and the concat shapes match.
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=tuple(size), mode="nearest")
        return self.conv(x)


class TimestepEmbedSequential(nn.Sequential):
    """One input/middle/output block: a sequence of layers, each given what it needs."""

    def forward(  # type: ignore[override]
        self,
        h: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor,
        size: torch.Size | None = None,
        transformer_options: dict | None = None,
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context, transformer_options)
                if transformer_options is not None and "transformer_index" in transformer_options:
                    transformer_options["transformer_index"] += 1  # counts SpatialTransformers, as ComfyUI
            elif isinstance(layer, Upsample):
                h = layer(h, size)
            else:
                h = layer(h)
        return h


def _control_lists(control: ControlResiduals | None) -> dict[str, list[torch.Tensor | None]]:
    """Working copies of a control's residual lists (the value itself stays untouched)."""
    if control is None:
        return {}
    return {"input": list(control.input), "middle": list(control.middle), "output": list(control.output)}


def _apply_control(h: torch.Tensor, pending: dict[str, list[torch.Tensor | None]], name: str) -> torch.Tensor:
    """Add the next residual of list `name` (taken from its end), as ComfyUI's apply_control; a residual whose
    shape does not fit is skipped with a warning, as there."""
    residuals = pending.get(name)
    if not residuals:
        return h
    residual = residuals.pop()
    if residual is None:
        return h
    if residual.shape[0] not in (1, h.shape[0]) or residual.shape[1:] != h.shape[1:]:
        log.warning("control residual %s of shape %s does not fit %s: not applied", name, tuple(residual.shape),
                    tuple(h.shape))
        return h
    return h + residual.to(h.dtype)


class UNetModel(nn.Module):
    """The LDM UNet; `state_dict()` keys equal a checkpoint's `model.diffusion_model.*` keys."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        mc = config.model_channels
        emb_dim = config.time_embed_dim

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb: nn.Sequential | None = None
        if config.adm_in_channels is not None:
            # SDXL: "label_emb.0.0" / "label_emb.0.2" (an MLP nested in a one-element Sequential).
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(config.adm_in_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            )

        def transformer(width: int, depth: int) -> SpatialTransformer:
            heads, dim_head = config.attention_heads(width)
            return SpatialTransformer(
                width, heads, dim_head, depth, config.context_dim, config.use_linear_in_transformer
            )

        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(Conv2d(config.in_channels, mc, 3, padding=1))]
        )
        skip_widths = [mc]
        ch = mc
        levels = len(config.channel_mult)
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc)]
                ch = mult * mc
                if config.transformer_depth[level] > 0:
                    layers.append(transformer(ch, config.transformer_depth[level]))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_widths.append(ch)
            if level != levels - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_widths.append(ch)

        middle: list[nn.Module] = [ResBlock(ch, emb_dim, ch)]
        if config.transformer_depth_middle > 0:
            middle.append(transformer(ch, config.transformer_depth_middle))
        middle.append(ResBlock(ch, emb_dim, ch))
        self.middle_block = TimestepEmbedSequential(*middle)

        self.output_blocks = nn.ModuleList()
        for out_index, level in enumerate(reversed(range(levels))):
            mult = config.channel_mult[level]
            for i in range(config.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_widths.pop(), emb_dim, mult * mc)]
                ch = mult * mc
                if config.transformer_depth_output[out_index] > 0:
                    layers.append(transformer(ch, config.transformer_depth_output[out_index]))
                if level != 0 and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            nn.GroupNorm(NORM_GROUPS, ch),
            nn.SiLU(),
            Conv2d(ch, config.out_channels, 3, padding=1),
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the forward runs in (that of the weights)."""
        return self.time_embed[0].weight.dtype

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
        transformer_options: dict | None = None,
        control: ControlResiduals | None = None,
        c_concat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the model output (eps or v, per the family) for noisy latents.

        Args:
            x: [B, in_channels, H, W] latents (already scaled by the sampler's c_in).
            timesteps: [B] (fractional) discrete timesteps, 0..999.
            context: [B, T, context_dim] text-encoder hidden states.
            y: [B, adm_in_channels] extra vector (SDXL); required iff the config has adm_in_channels.
            transformer_options: a MODEL's patches in ComfyUI's dict form (model_options.ModelOptions
                .transformer_options plus cond_or_uncond / sigmas), or None for the plain network. A copy is
                annotated as ComfyUI does (original_shape, block, block_index, transformer_index) and the
                input/output block patches run between the blocks.
            control: residuals of a ControlNet / T2I-adapter (diffusion/controlnet.py), added after the input
                blocks, the middle block and to the skips, each list consumed from its end (ComfyUI's apply_control).
            c_concat: [B, in_channels − C, H, W] extra input channels of an inpainting / InstructPix2Pix model
                (diffusion/concat_cond.py), concatenated after x's channels; None for a plain model.

        Returns:
            [B, out_channels, H, W] in the weights' dtype.
        """
        if (y is None) != (self.label_emb is None):
            raise ValueError(
                f"UNetModel: adm_in_channels={self.config.adm_in_channels} but y is "
                f"{'missing' if y is None else tuple(y.shape)}"
            )
        if c_concat is not None:
            if c_concat.shape[0] != x.shape[0] or c_concat.shape[-2:] != x.shape[-2:]:
                raise ValueError(f"UNetModel: c_concat {tuple(c_concat.shape)} does not fit the latent "
                                 f"{tuple(x.shape)} (an area conditioning on an inpainting model?)")
            x = torch.cat([x, c_concat.to(x)], dim=1)  # (B, in_channels, H, W)
        dtype = self.dtype
        # fp32 sinusoids, then the weights' dtype: fp16 cannot represent t·freq accurately for large t.
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        if self.label_emb is not None and y is not None:
            emb = emb + self.label_emb(y.to(dtype))

        h = x.to(dtype)
        context = context.to(dtype)
        to = None if transformer_options is None else dict(transformer_options)
        patches = {} if to is None else to.get("patches", {})
        if to is not None:
            to["original_shape"] = list(x.shape)
            to["transformer_index"] = 0
        pending = _control_lists(control)
        skips: list[torch.Tensor] = []
        for index, block in enumerate(self.input_blocks):
            if to is not None:
                to["block"] = ("input", index)
            h = block(h, emb, context, transformer_options=to)
            h = _apply_control(h, pending, "input")
            for patch in patches.get("input_block_patch", ()):
                h = patch(h, to)
            skips.append(h)
            for patch in patches.get("input_block_patch_after_skip", ()):
                h = patch(h, to)
        if to is not None:
            to["block"] = ("middle", 0)
        h = self.middle_block(h, emb, context, transformer_options=to)
        h = _apply_control(h, pending, "middle")
        for index, block in enumerate(self.output_blocks):
            skip = _apply_control(skips.pop(), pending, "output")
            if to is not None:
                to["block"] = ("output", index)
            for patch in patches.get("output_block_patch", ()):
                h, skip = patch(h, skip, to)
            h = torch.cat([h, skip], dim=1)  # (B, C + C_skip, H, W)
            h = block(h, emb, context, skips[-1].shape[-2:] if skips else None, transformer_options=to)
        return self.out(h)
