"""The offline CLIP tokenizer gives OpenAI CLIP's token ids."""

import gzip

import pytest
import torch

from diffusion.tokenizer import (
    BPE_FILE,
    END_TOKEN,
    START_TOKEN,
    VOCAB_SIZE,
    ClipTokenizer,
    TokenizerError,
    read_clip_bpe,
)


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


def test_vendored_vocabulary_is_the_openai_file():
    # Size and line count of OpenAI's bpe_simple_vocab_16e6.txt.gz (recorded in reference/cpu-feasibility.md §2).
    assert BPE_FILE.stat().st_size == 1_356_917
    assert gzip.decompress(BPE_FILE.read_bytes()).decode("utf-8").startswith('"bpe_simple_vocab_16e6.txt#version: 0.2')


def test_derived_vocabulary_has_49408_tokens_and_48894_merges():
    vocab, merges = read_clip_bpe()
    assert len(vocab) == VOCAB_SIZE
    assert len(merges) == 48_894
    assert vocab["<|startoftext|>"] == START_TOKEN
    assert vocab["<|endoftext|>"] == END_TOKEN
    assert vocab["a</w>"] == 320  # "a" as a whole word, id from the CLIP reference tokenization below


def test_a_photo_of_a_cat_gives_the_reference_ids(tokenizer):
    # Reference ids of OpenAI CLIP / HF openai/clip-vit-large-patch14 for this prompt.
    assert tokenizer.encode("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_case_and_whitespace_are_normalised(tokenizer):
    assert tokenizer.word_ids("A  PHOTO\tof\na Cat") == tokenizer.word_ids("a photo of a cat")


def test_unicode_and_emoji_tokenise_like_comfyui(tokenizer):
    # Ids from tests/fixtures/comfyui_numerics/tokens.json (ComfyUI 0.8.0 SD1Tokenizer).
    assert tokenizer.word_ids("émoji 🙂 and ünïcode") == [3459, 617, 2697, 14860, 537, 6522, 77, 35689, 3217]


def test_batch_pads_and_truncates_to_77(tokenizer):
    long_text = " ".join(["cat"] * 100)
    out = tokenizer.batch(["a photo of a cat", long_text])
    assert out.dtype == torch.long and out.shape == (2, 77)
    assert out[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (out[0, 7:] == END_TOKEN).all()
    assert out[1, 0] == START_TOKEN and out[1, 76] == END_TOKEN and (out[1, 1:76] == 2368).all()


def test_batch_pads_with_zero_for_open_clip(tokenizer):
    out = tokenizer.batch([""], pad_token=0)
    assert out[0, :2].tolist() == [START_TOKEN, END_TOKEN]
    assert (out[0, 2:] == 0).all()


def test_decode_round_trips_words(tokenizer):
    assert tokenizer.decode(tokenizer.encode("a photo of a cat")) == "a photo of a cat"


def test_missing_vocabulary_file_is_a_typed_error(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        ClipTokenizer(tmp_path / "nope.txt.gz")
