"""Prompt -> conditioning tensors through a family's CLIP text encoders, with ComfyUI's semantics.

- Weights: z = (z - z_empty) * w + z_empty per token, z_empty being the encoding of the empty prompt
  ([start, end, pad...]), computed only when some weight differs from 1 (tokens of weight 1 stay bit-identical).
- Chunks of 77 tokens are encoded as one batch and concatenated on the token axis: cond [1, 77k, D];
  the pooled output comes from the first chunk.
- Layers (CLIPSetLastLayer's stop_at_clip_layer: -1 last, -2 penultimate...): SD1 applies the final layer norm to the
  chosen layer; SD2 defaults to the penultimate layer, normed; SDXL takes clip_l and clip_g at -2 without the final
  norm and concatenates them (768 + 1280 = 2048); pooled = clip_g's projected pooled output.
- `embedding:name` resolves through an injected lookup; a missing embedding is skipped with a warning.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import safetensors.torch
import torch
from torch import Tensor

from .prompt_weights import Chunk, tokenize_with_weights
from .text_encoders import HiddenNorm, LayerChoice, TextEncoder
from .tokenizer import END_TOKEN, START_TOKEN, ClipTokenizer

log = logging.getLogger(__name__)

EncoderKey = Literal["clip_l", "clip_h", "clip_g"]
# (embedding name, encoder key) -> rows [n, D] or [D]; None when there is no such embedding.
EmbeddingLookup = Callable[[str, EncoderKey], Tensor | None]
_EMBEDDING_SLOT_ID = 0  # token id placed where an embedding row goes; its lookup is overwritten


class EncoderSlot(Protocol):
    """How a model family uses one of its text encoders (families.TextEncoderSlot is one)."""

    @property
    def name(self) -> EncoderKey:
        """clip_l / clip_h / clip_g: also the tensor name in multi-encoder embedding files."""

    @property
    def layer(self) -> LayerChoice:
        """The layer used when no CLIPSetLastLayer is applied."""

    @property
    def hidden_norm(self) -> HiddenNorm:
        """Final layer norm on an intermediate layer or not ("last" is always normed)."""


@dataclass(frozen=True)
class EncodedText:
    cond: Tensor  # [1, 77k, D] float32
    pooled: Tensor  # [1, P] float32 from the first chunk of the last encoder


class EmbeddingFormatError(ValueError):
    """An embedding file cannot be read (wrong format, or no tensor for the encoder)."""


def resolve_layer(slot: EncoderSlot, stop_at_clip_layer: int | None, layers: int) -> LayerChoice:
    """The layer an encoder uses under CLIPSetLastLayer; beyond the encoder's depth means its last layer."""
    if stop_at_clip_layer is None:
        return slot.layer
    if abs(stop_at_clip_layer) > layers:
        return "last"
    return stop_at_clip_layer


def tokenize_prompt(
    text: str,
    *,
    encoders: Sequence[tuple[EncoderSlot, TextEncoder]],
    tokenizer: ClipTokenizer,
    embedding_lookup: EmbeddingLookup | None = None,
) -> dict[EncoderKey, tuple[Chunk, ...]]:
    """The prompt's weighted chunks for each encoder (pad token and embedding rows differ per encoder)."""
    out: dict[EncoderKey, tuple[Chunk, ...]] = {}
    for slot, encoder in encoders:
        lookup = None if embedding_lookup is None else functools.partial(_lookup_for, embedding_lookup, slot.name)
        out[slot.name] = tokenize_with_weights(
            tokenizer, text, pad_token=encoder.config.pad_token, embedding_lookup=lookup
        )
    return out


def _lookup_for(lookup: EmbeddingLookup, key: EncoderKey, name: str) -> Tensor | None:
    return lookup(name, key)


def _drop_mismatched_embeddings(chunk: Chunk, width: int, pad_token: int) -> Chunk:
    """Embedding rows of another width are ignored and the chunk refilled with padding, as ComfyUI does."""
    kept = [(t, w) for t, w in chunk if isinstance(t, int) or t.shape[-1] == width]
    dropped = len(chunk) - len(kept)
    if dropped:
        log.warning("embedding width does not match the text encoder's %d, %d rows ignored", width, dropped)
    return tuple(kept) + ((pad_token, 1.0),) * dropped


def encode_chunks(
    encoder: TextEncoder, chunks: Sequence[Chunk], *, layer: LayerChoice, hidden_norm: HiddenNorm
) -> tuple[Tensor, Tensor]:
    """Weighted chunks -> (hidden [1, 77k, W], pooled [1, P] of the first chunk), float32 (ComfyUI's
    ClipTokenWeightEncoder.encode_token_weights)."""
    if not chunks:
        raise ValueError("no chunks to encode")
    cfg = encoder.config
    chunks = [_drop_mismatched_embeddings(c, cfg.width, cfg.pad_token) for c in chunks]
    length = len(chunks[0])
    weights = torch.tensor([[w for _, w in c] for c in chunks], dtype=torch.float32)  # [k, T]
    has_weights = bool((weights != 1.0).any())
    ids = [[t if isinstance(t, int) else _EMBEDDING_SLOT_ID for t, _ in c] for c in chunks]
    if has_weights:  # the empty prompt as an extra batch row, the reference the weights scale from
        ids.append([START_TOKEN, END_TOKEN] + [cfg.pad_token] * (length - 2))

    weight_param = encoder.text_model.embeddings.token_embedding.weight
    tokens = torch.tensor(ids, dtype=torch.long, device=weight_param.device)  # [k(+1), T]
    with torch.no_grad():
        inputs_embeds = None
        if any(not isinstance(t, int) for c in chunks for t, _ in c):
            inputs_embeds = encoder.token_embeddings(tokens).clone()  # [k(+1), T, W]
            for i, chunk in enumerate(chunks):
                for j, (t, _) in enumerate(chunk):
                    if not isinstance(t, int):
                        inputs_embeds[i, j] = t.to(inputs_embeds.dtype)
        hidden, pooled = encoder.encode(tokens, layer=layer, hidden_norm=hidden_norm, inputs_embeds=inputs_embeds)
    hidden, pooled = hidden.float(), pooled.float()

    z = hidden[: len(chunks)]  # [k, T, W]
    if has_weights:
        z_empty = hidden[-1:]  # [1, T, W]
        w = weights.to(z.device).unsqueeze(-1)  # [k, T, 1]
        # Only tokens with weight != 1 change, so unweighted tokens keep their exact values.
        z = torch.where(w != 1.0, (z - z_empty) * w + z_empty, z)
    return z.reshape(1, -1, z.shape[-1]), pooled[0:1]  # [k, T, W] -> [1, kT, W]


def encode_tokens(
    tokens: Mapping[EncoderKey, Sequence[Chunk]],
    *,
    encoders: Sequence[tuple[EncoderSlot, TextEncoder]],
    stop_at_clip_layer: int | None = None,
) -> EncodedText:
    """Encode each encoder's chunks and join them: hidden states side by side on the feature axis (cut to the
    shortest token count), pooled output from the last encoder."""
    if not encoders:
        raise ValueError("no text encoders")
    outputs: list[tuple[Tensor, Tensor]] = []
    for slot, encoder in encoders:
        if slot.name not in tokens:
            raise KeyError(f"no tokens for text encoder {slot.name!r}; got {sorted(tokens)}")
        layer = resolve_layer(slot, stop_at_clip_layer, encoder.config.layers)
        outputs.append(encode_chunks(encoder, tokens[slot.name], layer=layer, hidden_norm=slot.hidden_norm))
    cut = min(hidden.shape[1] for hidden, _ in outputs)
    cond = torch.cat([hidden[:, :cut] for hidden, _ in outputs], dim=-1)  # [1, 77k, D1 + D2 ...]
    return EncodedText(cond=cond, pooled=outputs[-1][1])


def encode_text(
    text: str,
    *,
    encoders: Sequence[tuple[EncoderSlot, TextEncoder]],
    tokenizer: ClipTokenizer,
    stop_at_clip_layer: int | None = None,
    embedding_lookup: EmbeddingLookup | None = None,
) -> EncodedText:
    """A prompt in ComfyUI's syntax -> EncodedText (what CLIPTextEncode computes)."""
    tokens = tokenize_prompt(text, encoders=encoders, tokenizer=tokenizer, embedding_lookup=embedding_lookup)
    return encode_tokens(tokens, encoders=encoders, stop_at_clip_layer=stop_at_clip_layer)


# ---------------------------------------------------------------------------------------------------------------
# Textual-inversion embedding files (.safetensors only: no pickle)


def read_embedding(tensors: Mapping[str, Tensor], key: EncoderKey) -> Tensor | None:
    """Pick the rows for encoder `key` from an embedding file's tensors -> [n, D] float32, None if it has none.

    Formats: SDXL's {"clip_l", "clip_g"}; A1111's "emb_params"; "string_to_param.*"; a file with a single tensor.
    """
    if key in tensors:
        rows = tensors[key]
    elif "emb_params" in tensors:
        rows = tensors["emb_params"]
    elif len(params := [k for k in tensors if k.startswith("string_to_param.")]) == 1:
        rows = tensors[params[0]]
    elif len(tensors) == 1:
        rows = next(iter(tensors.values()))
    else:
        return None
    if rows.ndim == 0 or not rows.is_floating_point():
        raise EmbeddingFormatError(
            f"embedding tensor must be floating point rows, got {rows.dtype} {tuple(rows.shape)}"
        )
    return rows.reshape(-1, rows.shape[-1]).float()  # [n, D]


def load_embedding(path: Path, key: EncoderKey) -> Tensor | None:
    """Rows [n, D] for encoder `key` from a .safetensors embedding file; None (with a warning) if it has none."""
    if path.suffix.lower() != ".safetensors":
        raise EmbeddingFormatError(f"{path.name}: only .safetensors embeddings are loaded (no pickle formats)")
    rows = read_embedding(safetensors.torch.load_file(str(path)), key)
    if rows is None:
        log.warning("embedding %s holds no tensor for %s", path.name, key)
    return rows


def find_embedding_file(folders: Sequence[Path], name: str) -> Path | None:
    """The .safetensors file named `name` (extension optional) in the first folder that has it, staying inside
    the folders (a name that climbs out with `..` or an absolute path is refused)."""
    for folder in folders:
        base = Path(folder).resolve()
        candidate = (base / name).resolve()
        if not candidate.is_relative_to(base):
            log.warning("embedding name %r leaves the embeddings folder, ignored", name)
            return None
        for path in (candidate, candidate.with_name(candidate.name + ".safetensors")):
            if path.is_file() and path.suffix.lower() == ".safetensors":
                return path
        for legacy in (".pt", ".bin"):
            if candidate.with_name(candidate.name + legacy).is_file() or (
                candidate.is_file() and candidate.suffix == legacy
            ):
                log.warning(
                    "embedding %s is a pickle file (%s), which is not loaded; convert it to .safetensors", name, legacy
                )
    return None


def folder_embedding_lookup(folders: Sequence[Path]) -> EmbeddingLookup:
    """An EmbeddingLookup reading .safetensors files from the embeddings folders."""
    folders = tuple(Path(f) for f in folders)

    def lookup(name: str, key: EncoderKey) -> Tensor | None:
        path = find_embedding_file(folders, name)
        return None if path is None else load_embedding(path, key)

    return lookup
