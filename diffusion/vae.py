"""The KL-regularised autoencoder of latent diffusion (CompVis `AutoencoderKL`, the `first_stage_model`).

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models". Module names equal the
checkpoint keys after `first_stage_model.` is stripped. Latents are in the raw VAE space: the family's
latent scale factor (0.18215 SD1/SD2, 0.13025 SDXL) is applied by sampling, not here.

Layout (note the decoder's `up` list is indexed by resolution level, level 0 = full resolution, but runs from the
deepest level up):

    encoder: conv_in, down.N.block.M (+ down.N.downsample.conv), mid.{block_1, attn_1, block_2}, norm_out, conv_out
    quant_conv (2·z -> 2·embed_dim, 1x1)       post_quant_conv (embed_dim -> z, 1x1)
    decoder: conv_in, mid.{block_1, attn_1, block_2}, up.N.block.M (+ up.N.upsample.conv), norm_out, conv_out
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.attention import multihead_attention

NORM_GROUPS = 32
"""Every GroupNorm of the reference autoencoder uses 32 groups and eps 1e-6."""


@dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of one autoencoder. Defaults are the SD1/SD2/SDXL VAE's (all three share one layout)."""

    in_channels: int = 3
    """Image channels into the encoder (RGB)."""
    out_channels: int = 3
    """Image channels out of the decoder (RGB)."""
    ch: int = 128
    """Width of level 0; level i is ch * ch_mult[i] wide."""
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    """Width multiplier per resolution level; downsampling by 2 between levels (8x for 4 levels)."""
    num_res_blocks: int = 2
    """ResnetBlocks per encoder level; each decoder level has one more."""
    z_channels: int = 4
    """Channels of the encoder output / decoder input, before quant_conv / after post_quant_conv."""
    embed_dim: int = 4
    """Channels of the latent itself (what the UNet sees)."""
    use_quant_conv: bool = True
    """Whether quant_conv / post_quant_conv exist (the 16-channel Flux / SD3 VAE has neither: embed_dim = z)."""

    def __post_init__(self) -> None:
        if not self.ch_mult:
            raise ValueError("VAEConfig.ch_mult must name at least one level")
        for width in {self.ch * m for m in self.ch_mult}:
            if width % NORM_GROUPS:
                raise ValueError(f"VAEConfig: width {width} is not divisible by {NORM_GROUPS} GroupNorm groups")

    @property
    def downscale(self) -> int:
        """Pixels per latent pixel along each side (8 for 4 levels)."""
        return 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(NORM_GROUPS, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """Two GroupNorm-SiLU-conv layers with a residual (a 1x1 `nin_shortcut` when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut: nn.Module = (
            nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H·W positions; q/k/v/proj_out are 1x1 convs in the checkpoint."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, H·W, C)
        # 1x1 convs applied as Linear maps over token-major data; flatten(1) views [C, C, 1, 1] as [C, C].
        q = F.linear(h, self.q.weight.flatten(1), self.q.bias)
        k = F.linear(h, self.k.weight.flatten(1), self.k.bias)
        v = F.linear(h, self.v.weight.flatten(1), self.v.bias)
        h = multihead_attention(q, k, v, heads=1)  # (B, H·W, C)
        h = F.linear(h, self.proj_out.weight.flatten(1), self.proj_out.bias)
        return x + h.transpose(1, 2).reshape(b, c, height, width)  # (B, C, H, W)


class Downsample(nn.Module):
    """Stride-2 3x3 conv with the reference's asymmetric zero padding (right and bottom only)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """ResnetBlock, self-attention, ResnetBlock at the lowest resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: `block.M` ResnetBlocks, then an optional resampler (`downsample` or `upsample`)."""

    def __init__(self, blocks: list[ResnetBlock], resample: nn.Module | None, resample_name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.resample_name = resample_name
        if resample is not None:
            self.add_module(resample_name, resample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        resample = getattr(self, self.resample_name, None)
        return x if resample is None else resample(x)


class Encoder(nn.Module):
    """Image [B, 3, H, W] -> moments [B, 2·z, H/f, W/f] (mean and log-variance stacked on channels)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        levels = len(config.ch_mult)
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, 3, padding=1)
        self.down = nn.ModuleList()
        width = config.ch
        for level, mult in enumerate(config.ch_mult):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(width, config.ch * mult))
                width = config.ch * mult
            resample = Downsample(width) if level != levels - 1 else None
            self.down.append(Level(blocks, resample, "downsample"))
        self.mid = MidBlock(width)
        self.norm_out = _norm(width)
        self.conv_out = nn.Conv2d(width, 2 * config.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent [B, z, h, w] -> image [B, 3, h·f, w·f], roughly in [-1, 1]."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        levels = len(config.ch_mult)
        width = config.ch * config.ch_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, width, 3, padding=1)
        self.mid = MidBlock(width)
        built: list[Level] = []
        for level in reversed(range(levels)):
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(width, config.ch * config.ch_mult[level]))
                width = config.ch * config.ch_mult[level]
            resample = Upsample(width) if level != 0 else None
            built.append(Level(blocks, resample, "upsample"))
        # Stored by level index (up.0 = full resolution) although executed deepest first, as in the checkpoint.
        self.up = nn.ModuleList(reversed(built))
        self.norm_out = _norm(width)
        self.conv_out = nn.Conv2d(width, config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """The SD VAE; `state_dict()` keys equal a checkpoint's `first_stage_model.*` keys."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        quant = config.use_quant_conv
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1) if quant else None
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1) if quant else None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the forward runs in (that of the weights)."""
        return self.encoder.conv_in.weight.dtype

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode images to the diagonal Gaussian posterior (Kingma & Welling 2014).

        Args:
            x: [B, in_channels, H, W] in [-1, 1]; H and W multiples of `config.downscale`.

        Returns:
            (mean, logvar), each [B, embed_dim, H/f, W/f] in the weights' dtype; raw VAE latent space.
        """
        moments = self.encoder(x.to(self.dtype))  # (B, 2·z, h, w)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)  # (B, 2·embed_dim, h, w)
        mean, logvar = moments.chunk(2, dim=1)
        # The reference clamps the log-variance so exp() stays finite in fp16.
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode raw VAE latents [B, embed_dim, h, w] to images [B, out_channels, h·f, w·f] (about [-1, 1])."""
        z = z.to(self.dtype)
        return self.decoder(self.post_quant_conv(z) if self.post_quant_conv is not None else z)

    def decode_tiled(self, z: torch.Tensor, *, tile: int = 64, overlap: int = 16) -> torch.Tensor:
        """Decode in overlapping latent tiles, blended linearly, to bound memory on large images.

        Args:
            z: [B, embed_dim, h, w] raw latents.
            tile: tile side in latent pixels.
            overlap: latent pixels shared by neighbouring tiles (blended with a linear ramp).

        Returns:
            The same shape as `decode(z)`; equal to it up to seams where GroupNorm statistics differ per tile.
        """
        f = self.config.downscale
        return _tiled(self.decode, z, tile=tile, overlap=overlap, scale=f, out_channels=self.config.out_channels)

    def encode_tiled(self, x: torch.Tensor, *, tile: int = 512, overlap: int = 64) -> torch.Tensor:
        """Encode in overlapping pixel tiles (the posterior mean only), blended linearly, to bound memory.

        Args:
            x: [B, in_channels, H, W] in [-1, 1]; H and W multiples of `config.downscale`.
            tile: tile side in pixels (rounded down to a multiple of the downscale factor).
            overlap: pixels shared by neighbouring tiles.

        Returns:
            [B, embed_dim, H/f, W/f] posterior mean.
        """
        f = self.config.downscale
        tile, overlap = max(f, tile - tile % f), overlap - overlap % f

        def encode_mean(x_tile: torch.Tensor) -> torch.Tensor:
            return self.encode(x_tile)[0]

        return _tiled(encode_mean, x, tile=tile, overlap=overlap, scale=1, out_channels=self.config.embed_dim,
                      out_div=f)


def _tiled(
    fn,
    x: torch.Tensor,
    *,
    tile: int,
    overlap: int,
    scale: int,
    out_channels: int,
    out_div: int = 1,
) -> torch.Tensor:
    """Apply a resolution-changing map tile by tile, blending overlaps with linear ramp weights.

    `fn` maps a [B, C, th, tw] tile to [B, out_channels, th·scale/out_div, tw·scale/out_div].
    """
    b, _, height, width = x.shape
    if height <= tile and width <= tile:
        return fn(x)
    if overlap >= tile:
        raise ValueError(f"tiled VAE: overlap {overlap} must be smaller than the tile {tile}")
    stride = tile - overlap

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        points = list(range(0, size - tile, stride))
        return points + [size - tile]

    out_h, out_w = height * scale // out_div, width * scale // out_div
    out = None
    weight = torch.zeros(1, 1, out_h, out_w, dtype=torch.float32, device=x.device)
    for top in starts(height):
        for left in starts(width):
            piece = fn(x[:, :, top : top + tile, left : left + tile]).float()  # (B, C_out, th', tw')
            if out is None:
                out = torch.zeros(b, out_channels, out_h, out_w, dtype=torch.float32, device=x.device)
            ph, pw = piece.shape[-2:]
            ramp = _ramp(ph, pw, overlap * scale // out_div, x.device)  # (1, 1, ph, pw)
            t, l = top * scale // out_div, left * scale // out_div
            out[:, :, t : t + ph, l : l + pw] += piece * ramp
            weight[:, :, t : t + ph, l : l + pw] += ramp
    assert out is not None
    return (out / weight).to(x.dtype if x.is_floating_point() else torch.float32)


def _ramp(height: int, width: int, overlap: int, device: torch.device) -> torch.Tensor:
    """Blend weights for one tile: linear from 1/(overlap+1) up to 1 over `overlap` pixels at each edge."""

    def axis(n: int) -> torch.Tensor:
        pos = torch.arange(n, dtype=torch.float32, device=device)
        edge = torch.minimum(pos + 1, n - pos)  # distance to the nearest edge, >= 1
        return (edge / max(overlap, 1)).clamp(max=1.0)

    return (axis(height)[:, None] * axis(width)[None, :])[None, None]
