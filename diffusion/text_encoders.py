"""CLIP text encoders of SD1.x (OpenAI CLIP-L), SD2.x (OpenCLIP ViT-H) and SDXL (CLIP-L + OpenCLIP ViT-bigG).

One module class for all of them, with Hugging Face's CLIP names, so a checkpoint in the HF layout
(`cond_stage_model.transformer.` + `text_model.embeddings.token_embedding.weight` ...) loads with strict key and shape
checks unchanged. OpenCLIP checkpoints (`cond_stage_model.model.`, `conditioner.embedders.1.model.`) are renamed by
`text_encoder_state_dict` (resblocks -> layers, fused in_proj -> q/k/v, text_projection transposed), and
`checkpoint_state_dict` writes them back.

The module holds no buffers: positions come from the position-embedding rows, so a model built on the meta device and
filled with `load_state_dict(..., assign=True)` is complete.

Architecture: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision" (CLIP);
a pre-norm causal transformer whose pooled output is the hidden state at the first end-of-text token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .tokenizer import CONTEXT_LENGTH, END_TOKEN, VOCAB_SIZE

Layout = Literal["clip_l_hf", "open_clip"]
Activation = Literal["quick_gelu", "gelu"]
HiddenNorm = Literal["final_ln", "raw"]
LayerChoice = int | Literal["last"]

LAYER_NORM_EPS = 1e-5  # OpenAI CLIP and OpenCLIP both use torch's LayerNorm default.
# OpenCLIP's text towers, by width, when they appear in the HF layout (diffusers, ComfyUI's own saves): they use
# exact GELU and pad with token 0, unlike OpenAI's CLIP-L.
_OPEN_CLIP_WIDTHS = frozenset({1024, 1280})
# Keys a checkpoint carries under the text-encoder prefix that the module does not hold, on purpose:
# position_ids (derived from positions), logit_scale (CLIP's contrastive temperature, unused for conditioning),
# attn_mask (the causal mask, which some OpenCLIP versions saved).
_DROPPED_SUFFIXES = ("position_ids", "logit_scale", "attn_mask")


class TextEncoderDetectionError(ValueError):
    """The checkpoint's keys under a prefix are not a CLIP text encoder this module can build."""


@dataclass(frozen=True)
class TextEncoderConfig:
    layout: Layout
    width: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int = VOCAB_SIZE
    max_positions: int = CONTEXT_LENGTH
    projection_dim: int | None = None
    activation: Activation = "quick_gelu"
    pad_token: int = END_TOKEN

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if min(self.width, self.layers, self.heads, self.intermediate, self.vocab_size, self.max_positions) < 1:
            raise ValueError(f"text encoder sizes must be positive: {self}")


CLIP_L = TextEncoderConfig("clip_l_hf", width=768, layers=12, heads=12, intermediate=3072)
OPEN_CLIP_H = TextEncoderConfig(
    "open_clip", width=1024, layers=24, heads=16, intermediate=4096, projection_dim=1024, activation="gelu", pad_token=0
)
OPEN_CLIP_BIGG = TextEncoderConfig(
    "open_clip", width=1280, layers=32, heads=20, intermediate=5120, projection_dim=1280, activation="gelu", pad_token=0
)


def default_heads(width: int) -> int:
    """Heads for a width: every CLIP text tower uses 64-wide heads; shapes cannot tell, so this rule decides."""
    heads = max(1, width // 64)
    while width % heads:  # a width that is not a multiple of 64: the largest head count that divides it
        heads -= 1
    return heads


# ---------------------------------------------------------------------------------------------------------------
# Module (names follow transformers' CLIPTextModel / CLIPTextModelWithProjection, hence the checkpoint keys)


class TextEncoderOutput(NamedTuple):
    hidden: Tensor  # [B, T, W] the chosen layer
    pooled: Tensor  # [B, P] (projected) or [B, W]


def quick_gelu(x: Tensor) -> Tensor:
    """Sigmoid approximation of GELU used by OpenAI CLIP (Hendrycks & Gimpel 2016, "Gaussian Error Linear Units")."""
    return x * torch.sigmoid(1.702 * x)


def _embedding(rows: int, width: int, factory: dict) -> nn.Embedding:
    """nn.Embedding; on the meta device built around an empty weight, because nn.Embedding's own init
    (normal_) imports torch._dynamo on first use, about a second added to every process's first checkpoint load."""
    if torch.device(factory.get("device", "cpu")).type == "meta":
        return nn.Embedding(rows, width, _weight=torch.empty((rows, width), **factory))
    return nn.Embedding(rows, width, **factory)


class ClipEmbeddings(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, factory: dict) -> None:
        super().__init__()
        self.token_embedding = _embedding(cfg.vocab_size, cfg.width, factory)
        self.position_embedding = _embedding(cfg.max_positions, cfg.width, factory)


class ClipAttention(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, factory: dict) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.q_proj = nn.Linear(cfg.width, cfg.width, **factory)
        self.k_proj = nn.Linear(cfg.width, cfg.width, **factory)
        self.v_proj = nn.Linear(cfg.width, cfg.width, **factory)
        self.out_proj = nn.Linear(cfg.width, cfg.width, **factory)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        # [B, T, W] -> [B, heads, T, W/heads]
        q, k, v = (
            proj(x).view(batch, length, self.heads, width // self.heads).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        # Causal: token t attends to tokens <= t, as in CLIP's text transformer.
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))  # back to [B, T, W]


class ClipMlp(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, factory: dict) -> None:
        super().__init__()
        self.activation = quick_gelu if cfg.activation == "quick_gelu" else F.gelu
        self.fc1 = nn.Linear(cfg.width, cfg.intermediate, **factory)
        self.fc2 = nn.Linear(cfg.intermediate, cfg.width, **factory)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class ClipEncoderLayer(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, factory: dict) -> None:
        super().__init__()
        self.self_attn = ClipAttention(cfg, factory)
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS, **factory)
        self.mlp = ClipMlp(cfg, factory)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS, **factory)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, factory: dict) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ClipEncoderLayer(cfg, factory) for _ in range(cfg.layers))


class ClipTextTransformer(nn.Module):
    def __init__(self, cfg: TextEncoderConfig, factory: dict) -> None:
        super().__init__()
        self.embeddings = ClipEmbeddings(cfg, factory)
        self.encoder = ClipEncoder(cfg, factory)
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=LAYER_NORM_EPS, **factory)


class TextEncoder(nn.Module):
    """A CLIP text tower. `encode` returns the chosen hidden layer and the pooled end-of-text state."""

    def __init__(
        self, cfg: TextEncoderConfig, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.config = cfg
        self.text_model = ClipTextTransformer(cfg, factory)
        self.text_projection = (
            nn.Linear(cfg.width, cfg.projection_dim, bias=False, **factory) if cfg.projection_dim else None
        )

    def token_embeddings(self, tokens: Tensor) -> Tensor:
        """[B, T] ids -> [B, T, W] input embeddings (to splice textual-inversion vectors into)."""
        return self.text_model.embeddings.token_embedding(tokens)

    def encode(
        self,
        tokens: Tensor,
        *,
        layer: LayerChoice = "last",
        hidden_norm: HiddenNorm = "final_ln",
        inputs_embeds: Tensor | None = None,
    ) -> TextEncoderOutput:
        """Encode [B, T] token ids (T <= max_positions).

        layer: "last" = the final layer norm of the last block; an int picks a block's output, negative from the end
        (-1 last, -2 penultimate), non-negative from the start (0 = first block). hidden_norm says whether the final
        layer norm is applied to an int layer. inputs_embeds [B, T, W] replaces the token-embedding lookup (textual
        inversion); `tokens` still locates the end-of-text token for the pooled output.
        """
        cfg = self.config
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tuple(tokens.shape)}")
        batch, length = tokens.shape
        if length > cfg.max_positions:
            raise ValueError(f"{length} tokens exceed the encoder's {cfg.max_positions} positions")
        index = _layer_index(layer, cfg.layers)

        embeddings = self.text_model.embeddings
        if inputs_embeds is None:
            x = embeddings.token_embedding(tokens)
        elif inputs_embeds.shape != (batch, length, cfg.width):
            raise ValueError(f"inputs_embeds must be {(batch, length, cfg.width)}, got {tuple(inputs_embeds.shape)}")
        else:
            x = inputs_embeds.to(embeddings.token_embedding.weight.dtype)
        x = x + embeddings.position_embedding.weight[:length]  # [B, T, W] + [T, W]

        hidden = None
        for i, block in enumerate(self.text_model.encoder.layers):
            x = block(x)
            if i == index:
                hidden = x
        last = self.text_model.final_layer_norm(x)
        if hidden is None:
            hidden = last
        elif hidden_norm == "final_ln":
            hidden = self.text_model.final_layer_norm(hidden)

        pooled = last[torch.arange(batch, device=last.device), _end_positions(tokens)]  # [B, W]
        if self.text_projection is not None:
            pooled = self.text_projection(pooled)
        return TextEncoderOutput(hidden, pooled)

    def forward(self, tokens: Tensor) -> TextEncoderOutput:
        return self.encode(tokens)


def _layer_index(layer: LayerChoice, layers: int) -> int | None:
    """Block index whose output `layer` names; None for "last" (the final-norm output)."""
    if layer == "last":
        return None
    if not isinstance(layer, int) or not -layers <= layer < layers:
        raise ValueError(f"layer must be 'last' or an int in [{-layers}, {layers - 1}], got {layer!r}")
    return layer % layers


def _end_positions(tokens: Tensor) -> Tensor:
    """Index of the first end-of-text token of each row; the last position where a row has none (truncated)."""
    is_end = tokens == END_TOKEN
    first = is_end.int().argmax(dim=-1)
    return torch.where(is_end.any(dim=-1), first, torch.full_like(first, tokens.shape[1] - 1))


def build_text_encoder(
    cfg: TextEncoderConfig, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> TextEncoder:
    """A text encoder with freshly initialised weights (meta device: no memory, for loading with assign=True)."""
    return TextEncoder(cfg, device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# Detection and key mapping


def _hf_root(keys: Mapping[str, object], prefix: str) -> str | None:
    """Where the HF names start: `prefix + "text_model."`, or `prefix` for the old SD1 format without it."""
    for root in (prefix + "text_model.", prefix):
        if root + "embeddings.token_embedding.weight" in keys:
            return root
    return None


def _layer_count(keys: Mapping[str, object], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not found:
        return 0
    if found != set(range(max(found) + 1)):
        raise TextEncoderDetectionError(f"text encoder layers are not numbered 0..N: {sorted(found)}")
    return max(found) + 1


def detect_text_encoder(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> TextEncoderConfig:
    """Read the text encoder's configuration from the checkpoint's tensor shapes under `prefix`."""
    hf_root = _hf_root(shapes, prefix)
    if hf_root is not None:
        vocab, width = shapes[hf_root + "embeddings.token_embedding.weight"]
        positions = shapes[hf_root + "embeddings.position_embedding.weight"][0]
        layers = _layer_count(shapes, re.escape(hf_root) + r"encoder\.layers\.(\d+)\.")
        fc1 = shapes.get(hf_root + "encoder.layers.0.mlp.fc1.weight")
        projection = shapes.get(prefix + "text_projection.weight")
        open_clip_tower = width in _OPEN_CLIP_WIDTHS
        layout: Layout = "clip_l_hf"
        projection_dim = projection[0] if projection else None
    elif prefix + "token_embedding.weight" in shapes and prefix + "positional_embedding" in shapes:
        vocab, width = shapes[prefix + "token_embedding.weight"]
        positions = shapes[prefix + "positional_embedding"][0]
        layers = _layer_count(shapes, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
        fc1 = shapes.get(prefix + "transformer.resblocks.0.mlp.c_fc.weight")
        projection = shapes.get(prefix + "text_projection")
        open_clip_tower = True
        layout = "open_clip"
        projection_dim = projection[1] if projection else None
    else:
        raise TextEncoderDetectionError(
            f"no CLIP text encoder under {prefix!r}: expected {prefix}text_model.embeddings.token_embedding.weight "
            f"(HF layout) or {prefix}token_embedding.weight + {prefix}positional_embedding (OpenCLIP layout)"
        )
    if layers == 0 or fc1 is None:
        raise TextEncoderDetectionError(f"text encoder under {prefix!r} has no transformer layers")
    return TextEncoderConfig(
        layout=layout,
        width=width,
        layers=layers,
        heads=default_heads(width),
        intermediate=fc1[0],
        vocab_size=vocab,
        max_positions=positions,
        projection_dim=projection_dim,
        activation="gelu" if open_clip_tower else "quick_gelu",
        pad_token=0 if open_clip_tower else END_TOKEN,
    )


# OpenCLIP name -> module name, for the per-layer and top-level tensors that only need a rename.
_OPEN_CLIP_RENAMES = (
    (r"token_embedding\.weight", "text_model.embeddings.token_embedding.weight"),
    (r"positional_embedding", "text_model.embeddings.position_embedding.weight"),
    (r"ln_final\.(weight|bias)", r"text_model.final_layer_norm.\1"),
    (r"transformer\.resblocks\.(\d+)\.ln_1\.(weight|bias)", r"text_model.encoder.layers.\1.layer_norm1.\2"),
    (r"transformer\.resblocks\.(\d+)\.ln_2\.(weight|bias)", r"text_model.encoder.layers.\1.layer_norm2.\2"),
    (
        r"transformer\.resblocks\.(\d+)\.attn\.out_proj\.(weight|bias)",
        r"text_model.encoder.layers.\1.self_attn.out_proj.\2",
    ),
    (r"transformer\.resblocks\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"text_model.encoder.layers.\1.mlp.fc1.\2"),
    (r"transformer\.resblocks\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"text_model.encoder.layers.\1.mlp.fc2.\2"),
)
_IN_PROJ = re.compile(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)")


def _open_clip_to_module(name: str, tensor: Tensor) -> dict[str, Tensor]:
    for pattern, target in _OPEN_CLIP_RENAMES:
        if re.fullmatch(pattern, name):
            return {re.sub(pattern, target, name): tensor}
    if m := _IN_PROJ.fullmatch(name):
        # nn.MultiheadAttention's fused projection: rows [0:W] query, [W:2W] key, [2W:3W] value.
        q, k, v = tensor.chunk(3, dim=0)
        root = f"text_model.encoder.layers.{m.group(1)}.self_attn"
        return {f"{root}.q_proj.{m.group(2)}": q, f"{root}.k_proj.{m.group(2)}": k, f"{root}.v_proj.{m.group(2)}": v}
    if name == "text_projection":
        # OpenCLIP computes pooled @ P with P [W, proj]; nn.Linear holds the transpose [proj, W].
        return {"text_projection.weight": tensor.t()}
    return {name: tensor}  # unknown: passed through so a strict load names it as unexpected


def text_encoder_state_dict(ckpt: Mapping[str, Tensor], prefix: str, cfg: TextEncoderConfig) -> dict[str, Tensor]:
    """The tensors under `prefix`, renamed to TextEncoder's keys (position_ids, logit_scale, attn_mask dropped).

    Keys the mapping does not know are kept under their own name, so `load_state_dict(strict=True)` reports them.
    """
    out: dict[str, Tensor] = {}
    hf_root = _hf_root(ckpt, prefix) if cfg.layout == "clip_l_hf" else None
    for key, tensor in ckpt.items():
        if not key.startswith(prefix) or key.endswith(_DROPPED_SUFFIXES):
            continue
        name = key[len(prefix) :]
        if cfg.layout == "open_clip":
            out.update(_open_clip_to_module(name, tensor))
        elif hf_root == prefix and name != "text_projection.weight":
            out["text_model." + name] = tensor  # old SD1 format: no `text_model.` level
        else:
            out[name] = tensor
    return out


def checkpoint_state_dict(module: TextEncoder, prefix: str, cfg: TextEncoderConfig) -> dict[str, Tensor]:
    """The module's tensors under checkpoint names (`prefix` + the layout's names), as SD checkpoints store them."""
    state = module.state_dict()
    if cfg.layout == "clip_l_hf":
        out = {prefix + name: tensor for name, tensor in state.items()}
        # Released SD1.5/SDXL files carry the position ids; older loaders expect them.
        device = state["text_model.embeddings.position_embedding.weight"].device
        out[prefix + "text_model.embeddings.position_ids"] = torch.arange(
            cfg.max_positions, dtype=torch.int64, device=device
        ).unsqueeze(0)  # [1, T]
        return out
    out = {}
    for name, tensor in state.items():
        out[prefix + _module_to_open_clip_name(name)] = tensor
    # Fuse q/k/v back into nn.MultiheadAttention's in_proj ([3W, W] and [3W]).
    for i in range(cfg.layers):
        root = f"text_model.encoder.layers.{i}.self_attn"
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{prefix}{root}.{p}_proj.{kind}") for p in "qkv"]
            out[f"{prefix}transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
    if "text_projection.weight" in state:
        out[prefix + "text_projection"] = out.pop(prefix + "text_projection.weight").t().contiguous()  # [W, proj]
    return out


_MODULE_TO_OPEN_CLIP = (
    (r"text_model\.embeddings\.token_embedding\.weight", "token_embedding.weight"),
    (r"text_model\.embeddings\.position_embedding\.weight", "positional_embedding"),
    (r"text_model\.final_layer_norm\.(weight|bias)", r"ln_final.\1"),
    (r"text_model\.encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)", r"transformer.resblocks.\1.ln_1.\2"),
    (r"text_model\.encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)", r"transformer.resblocks.\1.ln_2.\2"),
    (
        r"text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)",
        r"transformer.resblocks.\1.attn.out_proj.\2",
    ),
    (r"text_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", r"transformer.resblocks.\1.mlp.c_fc.\2"),
    (r"text_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", r"transformer.resblocks.\1.mlp.c_proj.\2"),
)


def _module_to_open_clip_name(name: str) -> str:
    for pattern, target in _MODULE_TO_OPEN_CLIP:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, target, name)
    return name  # q/k/v and text_projection: handled by the caller


__all__ = [
    "CLIP_L",
    "OPEN_CLIP_BIGG",
    "OPEN_CLIP_H",
    "TextEncoder",
    "TextEncoderConfig",
    "TextEncoderDetectionError",
    "TextEncoderOutput",
    "build_text_encoder",
    "checkpoint_state_dict",
    "default_heads",
    "detect_text_encoder",
    "quick_gelu",
    "text_encoder_state_dict",
]
