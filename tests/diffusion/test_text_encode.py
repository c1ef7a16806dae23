"""Prompt encoding: weighting math, chunking, clip skip, SDXL joining, textual-inversion embeddings."""

import logging

import pytest
import safetensors.torch
import torch

from diffusion.families import SD1, SD2, SDXL
from diffusion.prompt_weights import tokenize_with_weights
from diffusion.text_encode import (
    EmbeddingFormatError,
    encode_chunks,
    encode_text,
    find_embedding_file,
    folder_embedding_lookup,
    load_embedding,
    read_embedding,
    resolve_layer,
)
from diffusion.text_encoders import TextEncoderConfig, build_text_encoder
from diffusion.tokenizer import ClipTokenizer

CLIP_L_TINY = TextEncoderConfig("clip_l_hf", width=64, layers=3, heads=1, intermediate=128)
CLIP_G_TINY = TextEncoderConfig(
    "open_clip", width=128, layers=3, heads=2, intermediate=256, projection_dim=32, activation="gelu", pad_token=0
)


def tiny(cfg, seed):
    torch.manual_seed(seed)
    return build_text_encoder(cfg).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return ClipTokenizer()


@pytest.fixture(scope="module")
def clip_l():
    return tiny(CLIP_L_TINY, 1)


@pytest.fixture(scope="module")
def clip_g():
    return tiny(CLIP_G_TINY, 2)


@pytest.fixture(scope="module")
def sd1(clip_l):
    return [(SD1.text_encoders[0], clip_l)]


def test_sd1_plain_prompt_is_the_last_layer_of_one_chunk(tokenizer, clip_l, sd1):
    out = encode_text("a photo of a cat", encoders=sd1, tokenizer=tokenizer)
    tokens = tokenizer.batch(["a photo of a cat"])
    with torch.no_grad():
        hidden, pooled = clip_l.encode(tokens, layer="last")
    assert out.cond.shape == (1, 77, 64) and out.cond.dtype == torch.float32
    torch.testing.assert_close(out.cond, hidden)
    torch.testing.assert_close(out.pooled, pooled)


def test_weight_one_is_identical_to_no_weight(tokenizer, sd1):
    plain = encode_text("a cat sits", encoders=sd1, tokenizer=tokenizer)
    assert torch.equal(encode_text("a (cat:1.0) sits", encoders=sd1, tokenizer=tokenizer).cond, plain.cond)
    weighted = encode_text("a (cat:1.5) sits", encoders=sd1, tokenizer=tokenizer)
    unweighted_positions = [i for i in range(77) if i != 2]  # start, "a", [cat], "sits", end...
    assert torch.equal(weighted.cond[0, unweighted_positions], plain.cond[0, unweighted_positions])
    assert not torch.allclose(weighted.cond[0, 2], plain.cond[0, 2])
    torch.testing.assert_close(weighted.pooled, plain.pooled)


def test_weighted_token_moves_linearly_from_the_empty_prompt(tokenizer, clip_l, sd1):
    conds = {
        w: encode_text(f"a (cat:{w}) sits", encoders=sd1, tokenizer=tokenizer).cond[0, 2] for w in (0.5, 1.0, 2.0, 3.0)
    }
    torch.testing.assert_close(conds[3.0] - conds[2.0], conds[2.0] - conds[1.0])
    with torch.no_grad():
        empty = clip_l.encode(tokenizer.batch([""]), layer="last").hidden[0, 2]
    # z = (z - z_empty) * w + z_empty
    torch.testing.assert_close(conds[0.5], (conds[1.0] - empty) * 0.5 + empty)


def test_long_prompt_is_encoded_in_chunks_joined_on_the_token_axis(tokenizer, clip_l, sd1):
    text = ", ".join(["a red brick house with a green door"] * 12)
    chunks = tokenize_with_weights(tokenizer, text, pad_token=49407)
    assert len(chunks) == 2
    out = encode_text(text, encoders=sd1, tokenizer=tokenizer)
    assert out.cond.shape == (1, 154, 64)
    ids = torch.tensor([[t for t, _ in c] for c in chunks])
    with torch.no_grad():
        hidden, pooled = clip_l.encode(ids, layer="last")
    torch.testing.assert_close(out.cond[0, :77], hidden[0])
    torch.testing.assert_close(out.cond[0, 77:], hidden[1])
    torch.testing.assert_close(out.pooled, pooled[0:1])  # pooled from the first chunk


def test_clip_skip_picks_the_layer_and_sd1_normalises_it(tokenizer, clip_l, sd1):
    tokens = tokenizer.batch(["a cat"])
    with torch.no_grad():
        raw_penultimate = clip_l.encode(tokens, layer=-2, hidden_norm="raw").hidden
    skip2 = encode_text("a cat", encoders=sd1, tokenizer=tokenizer, stop_at_clip_layer=-2)
    torch.testing.assert_close(skip2.cond, clip_l.text_model.final_layer_norm(raw_penultimate).detach())
    last = encode_text("a cat", encoders=sd1, tokenizer=tokenizer)
    torch.testing.assert_close(
        encode_text("a cat", encoders=sd1, tokenizer=tokenizer, stop_at_clip_layer=-1).cond, last.cond
    )
    # Deeper than the encoder (-24 on a 3-layer model): ComfyUI falls back to the last layer.
    torch.testing.assert_close(
        encode_text("a cat", encoders=sd1, tokenizer=tokenizer, stop_at_clip_layer=-24).cond, last.cond
    )
    assert not torch.allclose(skip2.cond, last.cond)


def test_resolve_layer_follows_clip_set_last_layer():
    sd1, sd2 = SD1.text_encoders[0], SD2.text_encoders[0]
    assert resolve_layer(sd1, None, 12) == "last"
    assert resolve_layer(sd2, None, 24) == -2
    assert resolve_layer(sd2, -1, 24) == -1
    assert resolve_layer(sd1, -13, 12) == "last"


def test_sd2_defaults_to_the_normed_penultimate_layer(tokenizer, clip_g):
    out = encode_text("a cat", encoders=[(SD2.text_encoders[0], clip_g)], tokenizer=tokenizer)
    with torch.no_grad():
        expected = clip_g.encode(tokenizer.batch(["a cat"], pad_token=0), layer=-2, hidden_norm="final_ln")
    torch.testing.assert_close(out.cond, expected.hidden)
    torch.testing.assert_close(out.pooled, expected.pooled)


def test_sdxl_joins_raw_penultimate_layers_and_pools_from_clip_g(tokenizer, clip_l, clip_g):
    roles = SDXL.text_encoders
    out = encode_text("a (cat:1.2)", encoders=[(roles[0], clip_l), (roles[1], clip_g)], tokenizer=tokenizer)
    assert out.cond.shape == (1, 77, 64 + 128)
    assert out.pooled.shape == (1, 32)  # clip_g's projection
    l_chunks = tokenize_with_weights(tokenizer, "a (cat:1.2)", pad_token=49407)
    g_chunks = tokenize_with_weights(tokenizer, "a (cat:1.2)", pad_token=0)
    l_hidden, _ = encode_chunks(clip_l, l_chunks, layer=-2, hidden_norm="raw")
    g_hidden, g_pooled = encode_chunks(clip_g, g_chunks, layer=-2, hidden_norm="raw")
    torch.testing.assert_close(out.cond, torch.cat([l_hidden, g_hidden], dim=-1))
    torch.testing.assert_close(out.pooled, g_pooled)
    with torch.no_grad():
        g_raw = clip_g.encode(torch.tensor([[t for t, _ in g_chunks[0]]]), layer=-2, hidden_norm="raw")
    torch.testing.assert_close(out.cond[0, 0, 64:], g_raw.hidden[0, 0])  # start token (weight 1): no final norm


def test_embedding_rows_encode_like_the_tokens_they_copy(tokenizer, clip_l, sd1):
    cat_row = clip_l.token_embeddings(torch.tensor([2368])).detach()  # "cat" as a one-row embedding
    lookup = {("kitty", "clip_l"): cat_row}
    out = encode_text(
        "a embedding:kitty on a mat",
        encoders=sd1,
        tokenizer=tokenizer,
        embedding_lookup=lambda name, key: lookup.get((name, key)),
    )
    plain = encode_text("a cat on a mat", encoders=sd1, tokenizer=tokenizer)
    torch.testing.assert_close(out.cond, plain.cond)
    torch.testing.assert_close(out.pooled, plain.pooled)


def test_missing_embedding_is_skipped_with_a_warning(tokenizer, sd1, caplog):
    with caplog.at_level(logging.WARNING):
        out = encode_text(
            "embedding:nothing a cat", encoders=sd1, tokenizer=tokenizer, embedding_lookup=lambda name, key: None
        )
    assert "embedding:nothing does not exist" in caplog.text
    torch.testing.assert_close(out.cond, encode_text("a cat", encoders=sd1, tokenizer=tokenizer).cond)


def test_embedding_of_another_width_is_ignored(tokenizer, sd1, caplog):
    with caplog.at_level(logging.WARNING):
        out = encode_text(
            "a embedding:wide cat",
            encoders=sd1,
            tokenizer=tokenizer,
            embedding_lookup=lambda name, key: torch.ones(2, 999),
        )
    assert "does not match" in caplog.text
    torch.testing.assert_close(out.cond, encode_text("a cat", encoders=sd1, tokenizer=tokenizer).cond)


def test_embedding_file_formats(tmp_path):
    rows = torch.randn(3, 64)
    safetensors.torch.save_file({"emb_params": rows}, tmp_path / "a1111.safetensors")
    safetensors.torch.save_file({"clip_l": rows, "clip_g": torch.randn(3, 128)}, tmp_path / "sdxl.safetensors")
    safetensors.torch.save_file({"anything": rows.unsqueeze(0)}, tmp_path / "single.safetensors")
    assert torch.equal(load_embedding(tmp_path / "a1111.safetensors", "clip_l"), rows)
    assert torch.equal(load_embedding(tmp_path / "sdxl.safetensors", "clip_l"), rows)
    assert load_embedding(tmp_path / "sdxl.safetensors", "clip_g").shape == (3, 128)
    assert load_embedding(tmp_path / "sdxl.safetensors", "clip_h") is None
    assert torch.equal(load_embedding(tmp_path / "single.safetensors", "clip_g"), rows)  # [1, 3, 64] -> [3, 64]
    assert torch.equal(read_embedding({"string_to_param.*": rows}, "clip_l"), rows)


def test_pickle_embeddings_are_refused(tmp_path):
    (tmp_path / "old.pt").write_bytes(b"not loaded")
    with pytest.raises(EmbeddingFormatError, match="no pickle"):
        load_embedding(tmp_path / "old.pt", "clip_l")
    assert find_embedding_file([tmp_path], "old") is None


def test_folder_lookup_finds_names_with_or_without_extension_and_stays_inside(tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    safetensors.torch.save_file({"emb_params": torch.ones(1, 64)}, folder / "style.safetensors")
    safetensors.torch.save_file({"emb_params": torch.ones(1, 64)}, tmp_path / "outside.safetensors")
    lookup = folder_embedding_lookup([folder])
    assert lookup("style", "clip_l").shape == (1, 64)
    assert lookup("style.safetensors", "clip_l").shape == (1, 64)
    assert lookup("nope", "clip_l") is None
    assert lookup("../outside", "clip_l") is None
