"""Prompt -> conditioning for the flow-matching transformers, as ComfyUI's ``FluxClipModel`` and ``SD3ClipModel``
compute it.

- Flux.1: the context is T5-XXL's last hidden states (the prompt, an end token, padded with 0 to at least 256
  tokens, never truncated); the pooled vector is CLIP-L's end-of-text state after the final norm (unprojected).
- SD3 / SD3.5: CLIP-L and CLIP-G penultimate states (no final norm) side by side (768 + 1280), zero-padded to
  4096 channels, then T5's tokens (at least 77) appended along the token axis; pooled = CLIP-L pooled (unprojected)
  ⊕ CLIP-G pooled (projected) = 2048. An encoder the CLIP value lacks contributes zeros, as in ComfyUI; an empty
  text with ``empty_padding`` off contributes nothing (CLIPTextEncodeSD3's "none").
- Weights ``(text:1.2)``: each encoder applies z = (z − z_empty)·w + z_empty per token, z_empty being the encoding
  of its empty prompt (for T5: [end, pad, ...]); tokens of weight 1 keep their exact values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusion.families import ModelFamily
from diffusion.prompt_weights import Chunk, WeightedToken, weighted_token_groups
from diffusion.t5 import END_TOKEN, FLUX_MIN_TOKENS, PAD_TOKEN, SD3_MIN_TOKENS, T5Encoder, T5Tokenizer
from diffusion.text_encode import EmbeddingLookup, EncodedText, encode_chunks, resolve_layer, tokenize_prompt
from diffusion.tokenizer import ClipTokenizer

SD3_CONTEXT_WIDTH = 4096
CLIP_L_WIDTH = 768
CLIP_G_WIDTH = 1280


class FlowTextError(ValueError):
    """The CLIP value cannot condition this model (e.g. Flux without a T5 encoder)."""


def t5_token_weights(tokenizer: T5Tokenizer, text: str, *, min_length: int, min_padding: int = 0
                     ) -> tuple[WeightedToken, ...]:
    """ComfyUI's T5 tokens: the weighted segments' ids, the end token, ``min_padding`` pads, then pads up to
    ``min_length``; one sequence of any length."""
    groups = weighted_token_groups(tokenizer, text)  # type: ignore[arg-type]  # it only calls word_ids
    tokens: list[WeightedToken] = [t for group in groups for t in group]
    tokens.append((END_TOKEN, 1.0))
    tokens.extend([(PAD_TOKEN, 1.0)] * min_padding)
    tokens.extend([(PAD_TOKEN, 1.0)] * max(0, min_length - len(tokens)))
    return tuple(tokens)


def encode_t5(encoder: T5Encoder, tokens: Sequence[WeightedToken]) -> Tensor:
    """Weighted T5 tokens -> [1, L, d_model] float32 hidden states."""
    ids = [int(t) for t, _ in tokens]  # type: ignore[arg-type]
    weights = torch.tensor([w for _, w in tokens], dtype=torch.float32)
    has_weights = bool((weights != 1.0).any())
    rows = [ids]
    if has_weights:
        rows.append([END_TOKEN] + [PAD_TOKEN] * (len(ids) - 1))
    device = encoder.shared.weight.device
    with torch.no_grad():
        out = encoder(torch.tensor(rows, dtype=torch.long, device=device))  # (1 or 2, L, D)
    z = out[:1]
    if has_weights:
        w = weights.to(z.device)[None, :, None]
        z = torch.where(w != 1.0, (z - out[1:2]) * w + out[1:2], z)
    return z


def _clip_part(slot: Any, encoder: Any, chunks: tuple[Chunk, ...], stop_at_clip_layer: int | None
               ) -> tuple[Tensor, Tensor]:
    layer = resolve_layer(slot, stop_at_clip_layer, encoder.config.layers)
    return encode_chunks(encoder, chunks, layer=layer, hidden_norm=slot.hidden_norm)


def encode_flow_prompt(
    family: ModelFamily,
    texts: Mapping[str, str],
    *,
    encoders: Sequence[tuple[Any, Any]],
    clip_tokenizer: ClipTokenizer,
    t5_tokenizer: T5Tokenizer | None,
    stop_at_clip_layer: int | None = None,
    embedding_lookup: EmbeddingLookup | None = None,
    tokenizer_options: Mapping[str, int] | None = None,
    empty_padding: bool = True,
) -> EncodedText:
    """Encode per-encoder texts ({"clip_l": ..., "clip_g": ..., "t5xxl": ...}; a missing key is "") with the
    (slot, module) encoders of a Flux or SD3 CLIP value."""
    options = dict(tokenizer_options or {})
    by_name = {slot.name: (slot, module) for slot, module in encoders}
    clip_parts: dict[str, tuple[Tensor, Tensor]] = {}
    tokens_by_name: dict[str, tuple[Chunk, ...]] = {}
    for name in ("clip_l", "clip_g"):
        if name in by_name:
            slot, module = by_name[name]
            text = texts.get(name, "")
            # CLIPTextEncodeSD3 "none": an empty prompt gives no tokens at all.
            tokens_by_name[name] = () if not text and not empty_padding else tokenize_prompt(
                text, encoders=[(slot, module)], tokenizer=clip_tokenizer, embedding_lookup=embedding_lookup)[name]
    counts = {len(chunks) for chunks in tokens_by_name.values()}
    if len(tokens_by_name) == 2 and len(counts) == 2:
        # The shorter CLIP prompt (possibly none) is padded with empty-prompt chunks to the longer's count.
        for name, chunks in tokens_by_name.items():
            slot, module = by_name[name]
            empty = tokenize_prompt("", encoders=[(slot, module)], tokenizer=clip_tokenizer)[name]
            tokens_by_name[name] = chunks + empty * (max(counts) - len(chunks))
    for name, chunks in tokens_by_name.items():
        if chunks:
            slot, module = by_name[name]
            clip_parts[name] = _clip_part(slot, module, chunks, stop_at_clip_layer)

    t5_out = None
    if "t5xxl" in by_name:
        if t5_tokenizer is None:
            raise FlowTextError("this CLIP value has a T5 encoder but no T5 tokenizer")
        text = texts.get("t5xxl", "")
        if not text and not empty_padding:
            # No tokens: ComfyUI encodes the lone end token (its empty-token sequence of length 0).
            tokens: tuple[WeightedToken, ...] = ((END_TOKEN, 1.0),)
        else:
            default_min = FLUX_MIN_TOKENS if family.name == "flux" else SD3_MIN_TOKENS
            tokens = t5_token_weights(t5_tokenizer, text, min_length=options.get("t5xxl_min_length", default_min),
                                      min_padding=options.get("t5xxl_min_padding", 0))
        t5_out = encode_t5(by_name["t5xxl"][1], tokens)

    if family.name == "flux":
        if t5_out is None:
            raise FlowTextError("Flux is conditioned on T5-XXL: load a T5 text encoder (DualCLIPLoader type flux)")
        l_width = by_name["clip_l"][1].config.width if "clip_l" in by_name else CLIP_L_WIDTH
        pooled = clip_parts["clip_l"][1] if "clip_l" in clip_parts else torch.zeros((1, l_width))
        return EncodedText(cond=t5_out, pooled=pooled.float())
    # The CLIP states are padded to T5's width (4096 for T5-XXL, ComfyUI's constant).
    width = by_name["t5xxl"][1].config.d_model if "t5xxl" in by_name else SD3_CONTEXT_WIDTH
    # Zeros stand in for a missing or left-out CLIP (768 + 1280 for the released encoders).
    l_width = by_name["clip_l"][1].config.width if "clip_l" in by_name else CLIP_L_WIDTH
    g_cfg = by_name["clip_g"][1].config if "clip_g" in by_name else None
    g_width = (g_cfg.projection_dim or g_cfg.width) if g_cfg is not None else CLIP_G_WIDTH
    return _sd3_join(clip_parts, t5_out, width, (l_width, g_width))


def _sd3_join(clip_parts: Mapping[str, tuple[Tensor, Tensor]], t5_out: Tensor | None,
              width: int = SD3_CONTEXT_WIDTH, pooled_widths: tuple[int, int] = (CLIP_L_WIDTH, CLIP_G_WIDTH)
              ) -> EncodedText:
    """SD3ClipModel.encode_token_weights: [l ⊕ g, zero-padded to 4096] then T5 tokens; pooled l ⊕ g."""
    lg_out = None
    pooled = None
    if clip_parts:
        l_hidden, l_pooled = clip_parts.get("clip_l", (None, torch.zeros((1, pooled_widths[0]))))
        g_hidden, g_pooled = clip_parts.get("clip_g", (None, torch.zeros((1, pooled_widths[1]))))
        if l_hidden is not None and g_hidden is not None:
            cut = min(l_hidden.shape[1], g_hidden.shape[1])
            lg_out = torch.cat([l_hidden[:, :cut], g_hidden[:, :cut]], dim=-1)
        elif l_hidden is not None:
            lg_out = l_hidden
        elif g_hidden is not None:
            lg_out = F.pad(g_hidden, (pooled_widths[0], 0))
        if lg_out is not None:
            lg_out = F.pad(lg_out, (0, width - lg_out.shape[-1]))
        pooled = torch.cat([l_pooled.to(g_pooled), g_pooled], dim=-1)
    out = lg_out
    if t5_out is not None:
        out = torch.cat([lg_out.to(t5_out), t5_out], dim=-2) if lg_out is not None else t5_out
    if out is None:
        out = torch.zeros((1, 77, width))
    if pooled is None:
        pooled = torch.zeros((1, sum(pooled_widths)))
    return EncodedText(cond=out.float(), pooled=pooled.float())
