"""The T5 v1.1 encoder (Raffel et al. 2020; v1.1: gated-GELU feed-forward, no tied output) that Flux.1 and SD3.x
condition on, with transformers' ``T5EncoderModel`` names so the released ``t5xxl_fp16.safetensors`` loads as is,
and its tokenizer, built offline from the vendored ``t5_vocab/tokenizer.json``.

As ComfyUI uses it (``comfy/text_encoders/t5.py`` with ``sd1_clip.SDClipModel``): no attention mask, the output is
the final layer norm's, and prompts are tokenized as ComfyUI's SDTokenizer does for T5 (weights syntax, no start
token, one end token, padded with 0 up to a minimum length: 256 for Flux, 77 for SD3; never truncated).

The released file holds the token embedding twice (``shared.weight`` and ``encoder.embed_tokens.weight``); the
module owns one (``shared``), and the loader drops the copy (ComfyUI ignores it the same way).
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

from diffusion.dit_layers import Linear

VOCAB_DIR = Path(__file__).parent / "t5_vocab"
TOKENIZER_FILE = VOCAB_DIR / "tokenizer.json"
END_TOKEN = 1
PAD_TOKEN = 0
DUPLICATE_EMBEDDING = "encoder.embed_tokens.weight"
"""The file's second copy of the token embedding; equal to ``shared.weight``, not loaded."""
FLUX_MIN_TOKENS = 256
SD3_MIN_TOKENS = 77


class T5ConfigError(ValueError):
    """The tensors are not a T5 v1.1 encoder this module can build."""


@dataclass(frozen=True)
class T5Config:
    """T5 encoder sizes (XXL: 4096 wide, 24 blocks, 64 heads of 64, 10240 feed-forward, 32128 tokens)."""

    vocab_size: int = 32128
    d_model: int = 4096
    num_layers: int = 24
    num_heads: int = 64
    d_kv: int = 64
    d_ff: int = 10240
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6

    @property
    def inner(self) -> int:
        return self.num_heads * self.d_kv


class T5LayerNorm(nn.Module):
    """RMS norm without mean subtraction or bias; the variance in float32 (T5's layer norm)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        x = (x.float() * torch.rsqrt(variance + self.eps)).to(self.weight.dtype)
        return self.weight * x


def relative_position_bucket(relative_position: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """Bidirectional buckets: half per direction, exact below num_buckets/4, logarithmic up to max_distance."""
    num_buckets //= 2
    buckets = (relative_position > 0).long() * num_buckets
    distance = relative_position.abs()
    max_exact = num_buckets // 2
    large = max_exact + (torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.minimum(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(distance < max_exact, distance, large)


class T5Attention(nn.Module):
    def __init__(self, cfg: T5Config, has_relative_bias: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.q = Linear(cfg.d_model, cfg.inner, bias=False)
        self.k = Linear(cfg.d_model, cfg.inner, bias=False)
        self.v = Linear(cfg.d_model, cfg.inner, bias=False)
        self.o = Linear(cfg.inner, cfg.d_model, bias=False)
        self.relative_attention_bias = nn.Embedding(cfg.num_buckets, cfg.num_heads) if has_relative_bias else None

    def position_bias(self, length: int, device: torch.device) -> Tensor:
        """[1, H, L, L] additive attention bias from the key−query offsets."""
        assert self.relative_attention_bias is not None
        pos = torch.arange(length, dtype=torch.long, device=device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.cfg.num_buckets, self.cfg.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, Lq, Lk)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, length, _ = x.shape
        heads = self.cfg.num_heads

        def split(t: Tensor) -> Tensor:
            return t.view(b, length, heads, -1).transpose(1, 2)  # (B, H, L, d_kv)

        # T5 does not scale the scores by 1/sqrt(d_kv) (it is folded into the initialisation).
        out = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)),
                                             attn_mask=bias.to(x.dtype), scale=1.0)
        return self.o(out.transpose(1, 2).reshape(b, length, -1))


class T5LayerSelfAttention(nn.Module):
    def __init__(self, cfg: T5Config, has_relative_bias: bool) -> None:
        super().__init__()
        self.SelfAttention = T5Attention(cfg, has_relative_bias)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.eps)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        return x + self.SelfAttention(self.layer_norm(x), bias)


class T5DenseGatedActDense(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.wi_0 = Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wi_1 = Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


class T5LayerFF(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(cfg)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.eps)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    def __init__(self, cfg: T5Config, has_relative_bias: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList([T5LayerSelfAttention(cfg, has_relative_bias), T5LayerFF(cfg)])

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x = self.layer[1](self.layer[0](x, bias))
        if x.dtype == torch.float16:  # T5 overflows fp16 in places; clamp as transformers does
            limit = torch.finfo(torch.float16).max - 1000
            x = x.clamp(-limit, limit)
        return x


class T5Stack(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.block = nn.ModuleList(T5Block(cfg, has_relative_bias=i == 0) for i in range(cfg.num_layers))
        self.final_layer_norm = T5LayerNorm(cfg.d_model, cfg.eps)


class T5Encoder(nn.Module):
    """The T5 encoder; ``state_dict()`` keys equal ``t5xxl_fp16.safetensors``' (less the duplicate embedding)."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.encoder.final_layer_norm.weight.dtype

    def forward(self, tokens: Tensor, inputs_embeds: Tensor | None = None) -> Tensor:
        """[B, L] token ids -> [B, L, d_model] final-layer-norm states (float32)."""
        x = self.shared(tokens) if inputs_embeds is None else inputs_embeds
        x = x.to(self.compute_dtype)
        first = self.encoder.block[0].layer[0].SelfAttention
        bias = first.position_bias(x.shape[1], x.device)
        for block in self.encoder.block:
            x = block(x, bias)
        return self.encoder.final_layer_norm(x).float()


# ---------------------------------------------------------------------------------------------------------------
# Detection

Shapes = Mapping[str, tuple[int, ...]]


def is_t5(shapes: Shapes, prefix: str = "") -> bool:
    return f"{prefix}encoder.block.0.layer.0.SelfAttention.q.weight" in shapes


def detect_t5_config(shapes: Shapes, *, prefix: str = "", path: str | os.PathLike[str] = "") -> T5Config:
    p = prefix

    def shape(key: str) -> tuple[int, ...]:
        if p + key not in shapes:
            raise T5ConfigError(f"{Path(path).name or 'file'}: not a T5 v1.1 encoder, {p + key} is missing")
        return shapes[p + key]

    embed = shapes.get(p + "shared.weight") or shape(DUPLICATE_EMBEDDING)
    buckets, heads = shape("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    inner = shape("encoder.block.0.layer.0.SelfAttention.q.weight")[0]
    layers = sorted({int(m.group(1)) for k in shapes if (m := re.match(re.escape(p) + r"encoder\.block\.(\d+)\.", k))})
    if layers != list(range(len(layers))):
        raise T5ConfigError(f"T5 blocks are not numbered 0..n-1: {layers[:10]}")
    return T5Config(vocab_size=embed[0], d_model=embed[1], num_layers=len(layers), num_heads=heads,
                    d_kv=inner // heads, d_ff=shape("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")[0],
                    num_buckets=buckets)


def t5_state_dict(tensors: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """File tensors under ``prefix`` -> module names: the prefix stripped, the duplicate embedding used only when
    ``shared.weight`` is absent."""
    out = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    duplicate = out.pop(DUPLICATE_EMBEDDING, None)
    if "shared.weight" not in out and duplicate is not None:
        out["shared.weight"] = duplicate
    return out


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer


class T5Tokenizer:
    """T5 sentencepiece (Unigram) tokens from the vendored ``tokenizer.json``; immutable after construction."""

    end_token = END_TOKEN
    pad_token = PAD_TOKEN

    def __init__(self, path: Path = TOKENIZER_FILE) -> None:
        import transformers

        self._hf = transformers.T5TokenizerFast(tokenizer_file=str(path))

    def word_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without the end token (what ComfyUI's SDTokenizer takes per segment)."""
        return list(self._hf(text)["input_ids"][:-1])

    def decode(self, ids: list[int]) -> str:
        return self._hf.decode(ids, skip_special_tokens=True)
