"""ComfyUI's prompt syntax: weighted segments, then 77-token chunks of (token, weight).

Syntax, as ComfyUI reads it (checked against tests/fixtures/comfyui_numerics/tokens.json):
- `(text)` multiplies the weight by 1.1 per nesting level; `(text:1.3)` sets it (the last `:` inside the group; a
  suffix Python's float() cannot read leaves the text as is, with the x1.1);
- `[text]` is plain text (no down-weighting); `\\(` and `\\)` are literal parentheses;
- an unclosed `(` makes the rest plain text; a stray `)` makes the following groups plain text until it is balanced;
- `embedding:name` (at the start or after a space/newline) inserts a textual-inversion embedding, one row per token
  slot; without an embedding lookup it is plain text (what ComfyUI does without an embeddings folder).

Chunks: 75 tokens between start (49406) and end (49407), padded to 77 with the encoder's pad token (49407 CLIP-L,
0 OpenCLIP). A segment shorter than 8 tokens is never split across chunks; a longer one is cut where the chunk is full.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from .tokenizer import CONTEXT_LENGTH, END_TOKEN, START_TOKEN, ClipTokenizer

log = logging.getLogger(__name__)

EMBEDDING_PREFIX = "embedding:"
MAX_WORD_LENGTH = 8  # ComfyUI keeps segments shorter than this in one chunk
NEST_FACTOR = 1.1

Token = int | Tensor  # a vocabulary id, or one textual-inversion row [D]
WeightedToken = tuple[Token, float]
Chunk = tuple[WeightedToken, ...]
EmbeddingLookup = Callable[[str], Tensor | None]  # name -> rows [n, D] (or [D]), None when there is none

# Stand-ins for escaped parentheses while the groups are parsed (control characters do not occur in prompts).
_ESCAPED_OPEN = "\0\2"
_ESCAPED_CLOSE = "\0\1"


@dataclass(frozen=True)
class WeightedSegment:
    text: str
    weight: float


def _top_level_groups(text: str) -> list[str]:
    """Split text into plain runs and top-level `( ... )` groups, reading parentheses as ComfyUI does."""
    pieces: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "(" and depth == 0:
            if current:
                pieces.append(current)
            current = "("
            depth = 1
        elif char == "(":
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                pieces.append(current + ")")
                current = ""
            else:  # nested, or a stray `)` (depth < 0): stays part of the text
                current += char
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _weighted(text: str, weight: float) -> list[WeightedSegment]:
    out: list[WeightedSegment] = []
    for piece in _top_level_groups(text):
        if len(piece) < 2 or piece[0] != "(" or piece[-1] != ")":
            out.append(WeightedSegment(piece, weight))
            continue
        inner = piece[1:-1]
        inner_weight = weight * NEST_FACTOR
        colon = inner.rfind(":")
        if colon > 0:
            try:
                inner_weight = float(inner[colon + 1 :])
                inner = inner[:colon]
            except ValueError:
                pass  # "(a:b)" is text with the nesting weight, as in ComfyUI
        out.extend(_weighted(inner, inner_weight))
    return out


def parse_prompt_weights(text: str) -> list[WeightedSegment]:
    """Prompt text -> (text, weight) segments in order, escapes resolved."""
    escaped = text.replace("\\)", _ESCAPED_CLOSE).replace("\\(", _ESCAPED_OPEN)
    return [
        WeightedSegment(s.text.replace(_ESCAPED_CLOSE, ")").replace(_ESCAPED_OPEN, "("), s.weight)
        for s in _weighted(escaped, 1.0)
    ]


def _split_embedding_words(segment: str) -> list[str]:
    """Split before each ` embedding:` / `\\nembedding:` (the separator's space or newline is dropped)."""
    parts = re.split(rf"[ \n]{re.escape(EMBEDDING_PREFIX)}", segment)
    words = parts[:1] + [EMBEDDING_PREFIX + p for p in parts[1:]]
    return [w for w in words if w]


def _find_embedding(word: str, lookup: EmbeddingLookup) -> tuple[str, Tensor | None, str]:
    """(name, rows or None, leftover text) for `embedding:name rest`; a trailing comma may end the name."""
    rest = word[len(EMBEDDING_PREFIX) :].strip("\n").split()
    name = rest[0] if rest else ""
    leftover = " ".join(rest[1:])
    rows = lookup(name) if name else None
    if rows is None:
        stripped = name.strip(",")
        if len(stripped) < len(name):
            return stripped, lookup(stripped) if stripped else None, f"{name[len(stripped) :]} {leftover}"
    return name, rows, leftover


def _embedding_tokens(rows: Tensor, weight: float) -> list[WeightedToken]:
    if rows.ndim == 1:
        return [(rows, weight)]
    return [(row, weight) for row in rows.reshape(-1, rows.shape[-1])]  # one token slot per row [D]


def weighted_token_groups(
    tokenizer: ClipTokenizer, text: str, *, embedding_lookup: EmbeddingLookup | None = None
) -> list[list[WeightedToken]]:
    """The prompt's tokens grouped by segment (the unit the chunker tries not to split), start/end not included."""
    groups: list[list[WeightedToken]] = []
    for segment in parse_prompt_weights(text):
        for word in _split_embedding_words(segment.text):
            if embedding_lookup is not None and word.startswith(EMBEDDING_PREFIX):
                name, rows, leftover = _find_embedding(word, embedding_lookup)
                if rows is None:
                    log.warning("embedding:%s does not exist, ignoring", name)
                else:
                    groups.append(_embedding_tokens(rows, segment.weight))
                if not leftover:
                    continue
                word = leftover
            groups.append([(t, segment.weight) for t in tokenizer.word_ids(word)])
    return groups


def chunk_tokens(
    groups: Sequence[Sequence[WeightedToken]],
    *,
    pad_token: int,
    length: int = CONTEXT_LENGTH,
    max_word_length: int = MAX_WORD_LENGTH,
) -> tuple[Chunk, ...]:
    """Pack token groups into chunks of `length`: start, up to length - 2 tokens, end, padding."""
    room = length - 1  # tokens a chunk holds before its end token, start included
    chunks: list[list[WeightedToken]] = []
    chunk: list[WeightedToken] = [(START_TOKEN, 1.0)]
    for group in groups:
        # A short group moves whole to the next chunk; a long one (or one that could never fit) is cut.
        splittable = len(group) >= max_word_length or len(group) > length - 2
        rest = list(group)
        while rest:
            if len(chunk) + len(rest) <= room:
                chunk.extend(rest)
                break
            free = room - len(chunk)
            if splittable:
                chunk.extend(rest[:free])
                rest = rest[free:]
                chunk.append((END_TOKEN, 1.0))
            else:
                chunk.append((END_TOKEN, 1.0))
                chunk.extend([(pad_token, 1.0)] * free)
            chunks.append(chunk)
            chunk = [(START_TOKEN, 1.0)]
    chunk.append((END_TOKEN, 1.0))
    chunk.extend([(pad_token, 1.0)] * (length - len(chunk)))
    chunks.append(chunk)
    return tuple(tuple(c) for c in chunks)


def tokenize_with_weights(
    tokenizer: ClipTokenizer,
    text: str,
    *,
    pad_token: int,
    embedding_lookup: EmbeddingLookup | None = None,
    length: int = CONTEXT_LENGTH,
) -> tuple[Chunk, ...]:
    """Prompt -> chunks of `length` (token, weight) pairs, as ComfyUI's SDTokenizer.tokenize_with_weights."""
    groups = weighted_token_groups(tokenizer, text, embedding_lookup=embedding_lookup)
    return chunk_tokens(groups, pad_token=pad_token, length=length)
