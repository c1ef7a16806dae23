"""The text side of training: caption tokens and a CLIP text tower whose vocabulary rows train sparsely.

The captions use ~30 distinct CLIP tokens of 49,408. Training the full [49408, W] token embedding with AdamW would
update (and decay) every row every step, which cost more than the rest of the text tower; so the rows of the tokens
the captions use are trained as their own small parameter and written back into the full table for export. Every
other row keeps its initial value, exactly as if it had been trained and never received a gradient (but no decay).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from diffusion.text_encoders import TextEncoder, TextEncoderConfig, build_text_encoder
from diffusion.tokenizer import ClipTokenizer


class CaptionTokens:
    """Captions -> [B, 77] CLIP token ids, cached per caption (the grammar has a few thousand distinct captions)."""

    def __init__(self, tokenizer: ClipTokenizer) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[str, Tensor] = {}

    def __call__(self, captions: Sequence[str]) -> Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self._cache]
        if missing:
            for caption, row in zip(missing, self._tokenizer.batch(missing)):
                self._cache[caption] = row
        return torch.stack([self._cache[c] for c in captions])  # (B, 77)


class SparseVocabText(nn.Module):
    """A TextEncoder whose token-embedding rows for `vocab` are a separate trainable parameter `rows`."""

    def __init__(self, config: TextEncoderConfig, vocab: Iterable[int]) -> None:
        super().__init__()
        self.encoder: TextEncoder = build_text_encoder(config)
        embeddings = self.encoder.text_model.embeddings
        with torch.no_grad():
            # CLIP's initialisation of both tables (std 0.02) rather than nn.Embedding's N(0, 1): keeps the input of
            # the first block small next to what the blocks add, and untrained rows harmless for unknown words.
            embeddings.token_embedding.weight.normal_(0.0, 0.02)
            embeddings.position_embedding.weight.normal_(0.0, 0.01)
        table = embeddings.token_embedding.weight
        table.requires_grad_(False)
        ids = sorted(set(vocab))
        self.register_buffer("vocab", torch.tensor(ids, dtype=torch.long), persistent=True)
        lookup = torch.full((config.vocab_size,), -1, dtype=torch.long)
        lookup[self.vocab] = torch.arange(len(ids))
        self.register_buffer("lookup", lookup, persistent=False)
        self.rows = nn.Parameter(table.detach()[self.vocab].clone())  # (V_used, W)

    def forward(self, tokens: Tensor) -> Tensor:
        """[B, T] ids (all in `vocab`) -> [B, T, W] last hidden state after the final layer norm (SD1's "last")."""
        compact = self.lookup[tokens]
        if bool((compact < 0).any()):
            unknown = sorted(set(tokens[compact < 0].tolist()))
            raise ValueError(f"tokens {unknown[:8]} are not in the trained vocabulary of {len(self.vocab)} ids")
        embeds = self.rows[compact]  # (B, T, W)
        return self.encoder.encode(tokens, inputs_embeds=embeds).hidden

    def export(self) -> TextEncoder:
        """A plain TextEncoder with the trained rows written into its full table (a copy; self is unchanged)."""
        out = build_text_encoder(self.encoder.config)
        state = {k: v.clone() for k, v in self.encoder.state_dict().items()}
        table = state["text_model.embeddings.token_embedding.weight"]
        table[self.vocab] = self.rows.detach()
        out.load_state_dict(state)
        return out.eval()
