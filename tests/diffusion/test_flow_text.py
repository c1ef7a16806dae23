"""Flux / SD3 prompt encoding as ComfyUI's FluxClipModel / SD3ClipModel: T5 tokens (end token, padding to a
minimum length, weights), the SD3 join of CLIP-L ⊕ CLIP-G with T5 and the zeros that stand in for missing parts."""

from __future__ import annotations

import torch

from diffusion.families import FLUX, SD3
from diffusion.flow_text import encode_flow_prompt, encode_t5, t5_token_weights
from diffusion.t5 import T5Tokenizer
from diffusion.tokenizer import ClipTokenizer
from tests.diffusion.tiny_flow_models import (
    TINY_CLIP_G,
    TINY_CLIP_L,
    TINY_T5_SD3,
    _randomize,
)
from diffusion.t5 import T5Encoder
from diffusion.text_encoders import build_text_encoder

T5_TOKENS = T5Tokenizer()
CLIP_TOKENS = ClipTokenizer()


def test_t5_tokens_end_token_padding_and_weights() -> None:
    tokens = t5_token_weights(T5_TOKENS, "a photo of a (cat:1.5)", min_length=256)
    assert len(tokens) == 256
    ids = [t for t, _ in tokens]
    assert ids[:8] == [3, 9, 1202, 13, 3, 9, 1712, 1] and set(ids[8:]) == {0}
    assert [w for _, w in tokens][:8] == [1.0] * 6 + [1.5, 1.0]
    long = t5_token_weights(T5_TOKENS, "word " * 300, min_length=77)
    assert len(long) > 300 and long[-1] == (1, 1.0)  # never truncated
    padded = t5_token_weights(T5_TOKENS, "cat", min_length=0, min_padding=3)
    assert [t for t, _ in padded] == [1712, 1, 0, 0, 0]


def _encoders():
    torch.manual_seed(0)
    clip_l, clip_g, t5 = build_text_encoder(TINY_CLIP_L), build_text_encoder(TINY_CLIP_G), T5Encoder(TINY_T5_SD3)
    for i, m in enumerate((clip_l, clip_g, t5)):
        _randomize(m, i)
    return clip_l.eval(), clip_g.eval(), t5.eval()


def test_t5_weights_move_only_weighted_tokens() -> None:
    _, _, t5 = _encoders()
    plain = encode_t5(t5, t5_token_weights(T5_TOKENS, "a red cat", min_length=16))
    weighted = encode_t5(t5, t5_token_weights(T5_TOKENS, "a (red:1.3) cat", min_length=16))
    assert plain.shape == (1, 16, 96)
    changed = (plain - weighted).abs().amax(-1)[0] > 0
    red = len(T5_TOKENS.word_ids("a"))  # the weighted token's position
    assert changed.tolist() == [i == red for i in range(16)]


def test_sd3_joins_clip_l_g_and_t5_like_comfyui() -> None:
    clip_l, clip_g, t5 = _encoders()
    encoders = list(zip(SD3.text_encoders, (clip_l, clip_g, t5)))
    out = encode_flow_prompt(SD3, {"clip_l": "a", "clip_g": "a", "t5xxl": "a"}, encoders=encoders,
                             clip_tokenizer=CLIP_TOKENS, t5_tokenizer=T5_TOKENS)
    assert out.cond.shape == (1, 77 + 77, 96) and out.pooled.shape == (1, 32 + 48)
    assert torch.count_nonzero(out.cond[:, :77, 80:]) == 0  # l ⊕ g zero-padded to T5's width
    # empty_padding "none" with an empty T5 prompt: the CLIP tokens and T5's lone end token (ComfyUI's).
    none = encode_flow_prompt(SD3, {"clip_l": "a", "clip_g": "a", "t5xxl": ""}, encoders=encoders,
                              clip_tokenizer=CLIP_TOKENS, t5_tokenizer=T5_TOKENS, empty_padding=False)
    torch.testing.assert_close(none.cond[:, :77], out.cond[:, :77])
    assert none.cond.shape[1] == 78
    torch.testing.assert_close(none.cond[:, 77:], encode_t5(t5, ((1, 1.0),)))
    # An empty CLIP-L prompt with "none" is padded to CLIP-G's chunk count with the empty prompt's encoding.
    empty_l = encode_flow_prompt(SD3, {"clip_l": "", "clip_g": "a", "t5xxl": "a"}, encoders=encoders,
                                 clip_tokenizer=CLIP_TOKENS, t5_tokenizer=T5_TOKENS, empty_padding=False)
    padded_l = encode_flow_prompt(SD3, {"clip_l": "", "clip_g": "a", "t5xxl": "a"}, encoders=encoders,
                                  clip_tokenizer=CLIP_TOKENS, t5_tokenizer=T5_TOKENS)
    torch.testing.assert_close(empty_l.cond, padded_l.cond)
    # Everything empty with "none": no CLIP part, zeros pooled.
    nothing = encode_flow_prompt(SD3, {}, encoders=encoders, clip_tokenizer=CLIP_TOKENS, t5_tokenizer=T5_TOKENS,
                                 empty_padding=False)
    assert nothing.cond.shape == (1, 1, 96) and torch.count_nonzero(nothing.pooled) == 0
    # No CLIP-L: its 32 channels and pooled part are zeros.
    no_l = encode_flow_prompt(SD3, {"clip_g": "a", "t5xxl": "a"}, encoders=encoders[1:],
                              clip_tokenizer=CLIP_TOKENS, t5_tokenizer=T5_TOKENS)
    assert no_l.pooled.shape == (1, 768 + 48) and torch.count_nonzero(no_l.pooled[:, :768]) == 0


def test_flux_takes_t5_states_and_clip_l_pooled() -> None:
    clip_l, _, _ = _encoders()
    torch.manual_seed(1)
    from tests.diffusion.tiny_flow_models import TINY_T5

    t5 = T5Encoder(TINY_T5).eval()
    _randomize(t5, 5)
    encoders = list(zip(FLUX.text_encoders, (clip_l, t5)))
    out = encode_flow_prompt(FLUX, {"clip_l": "a cat", "t5xxl": "a dog"}, encoders=encoders,
                             clip_tokenizer=CLIP_TOKENS, t5_tokenizer=T5_TOKENS,
                             tokenizer_options={"t5xxl_min_length": 8})
    assert out.cond.shape == (1, 8, 32) and out.pooled.shape == (1, 32)
    torch.testing.assert_close(out.cond, encode_t5(t5, t5_token_weights(T5_TOKENS, "a dog", min_length=8)))
    ids = CLIP_TOKENS.batch(["a cat"])
    torch.testing.assert_close(out.pooled, clip_l.encode(ids).pooled)
