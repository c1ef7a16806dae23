"""The CLIP BPE tokenizer, built offline from the vendored OpenAI vocabulary (clip_vocab/, MIT licence).

Every CLIP text encoder of SD1.x, SD2.x and SDXL (CLIP-L, OpenCLIP ViT-H, ViT-bigG) uses this same 49,408-token
vocabulary; they differ only in the padding token (see prompt_weights.tokenize_with_weights).

Build one `ClipTokenizer` per process (about 0.1 s) and pass it to whoever needs it.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers

VOCAB_DIR = Path(__file__).parent / "clip_vocab"
BPE_FILE = VOCAB_DIR / "bpe_simple_vocab_16e6.txt.gz"

START_TOKEN = 49406  # <|startoftext|>
END_TOKEN = 49407  # <|endoftext|>
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
# The BPE file holds a version line, then merges; CLIP keeps the first 49152 - 256 - 2 of them so that
# 256 bytes + 256 end-of-word bytes + merges + 2 specials = 49408 tokens.
_MERGE_COUNT = 49152 - 256 - 2


class TokenizerError(RuntimeError):
    """The vendored vocabulary is missing or does not give the CLIP vocabulary."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte to a printable unicode character (byte-level BPE, Radford et al. 2019)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    # The remaining bytes (controls, space, ...) map to code points above 255, in byte order.
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def read_clip_bpe(path: Path = BPE_FILE) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read OpenAI's bpe_simple_vocab_16e6.txt.gz into (vocab token -> id, merges in rank order)."""
    if not path.is_file():
        raise TokenizerError(f"CLIP vocabulary file not found: {path}")
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + _MERGE_COUNT]]
    if len(merges) != _MERGE_COUNT or any(len(m) != 2 for m in merges):
        raise TokenizerError(f"{path} does not hold {_MERGE_COUNT} BPE merges")
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise TokenizerError(f"{path} gives {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    return vocab, merges  # type: ignore[return-value]


def _build_hf_tokenizer(path: Path) -> transformers.PreTrainedTokenizerBase:
    vocab, merges = read_clip_bpe(path)
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        # transformers 5.x silently ignores vocab_file=/merges_file= but takes the data itself.
        return transformers.CLIPTokenizer(vocab=vocab, merges=merges)
    # transformers 4.x only reads files: write the derived vocab.json + merges.txt to a scratch folder.
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        merges_text = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n"
        Path(folder, "merges.txt").write_text(merges_text, encoding="utf-8")
        return transformers.CLIPTokenizer.from_pretrained(folder)


class ClipTokenizer:
    """CLIP BPE text -> token ids. Holds no mutable state after construction."""

    start_token = START_TOKEN
    end_token = END_TOKEN
    vocab_size = VOCAB_SIZE
    context_length = CONTEXT_LENGTH

    def __init__(self, bpe_path: Path = BPE_FILE) -> None:
        self._hf = _build_hf_tokenizer(bpe_path)
        if self._hf.convert_tokens_to_ids("<|endoftext|>") != END_TOKEN or len(self._hf) != VOCAB_SIZE:
            raise TokenizerError(f"tokenizer built from {bpe_path} has {len(self._hf)} tokens, expected {VOCAB_SIZE}")

    def word_ids(self, text: str) -> list[int]:
        """Token ids of `text` without the start/end tokens and without truncation."""
        return list(self._hf(text, add_special_tokens=False)["input_ids"])

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` with the start and end tokens, not truncated."""
        return [START_TOKEN, *self.word_ids(text), END_TOKEN]

    def batch(self, texts: Sequence[str], *, length: int = CONTEXT_LENGTH, pad_token: int = END_TOKEN) -> torch.Tensor:
        """LongTensor [B, length]: start, ids cut to length - 2, end, then pad_token (49407 CLIP-L, 0 OpenCLIP)."""
        if length < 2:
            raise ValueError(f"length must be at least 2 (start + end), got {length}")
        rows = []
        for text in texts:
            ids = [START_TOKEN, *self.word_ids(text)[: length - 2], END_TOKEN]
            rows.append(ids + [pad_token] * (length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), length)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, special tokens dropped (for debugging and previews)."""
        return self._hf.decode(list(ids), skip_special_tokens=True)
