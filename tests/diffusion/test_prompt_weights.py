"""Prompt weighting syntax and 77-token chunking, checked against ComfyUI's own output."""

import json
import logging
from pathlib import Path

import pytest
import torch

from diffusion.prompt_weights import (
    WeightedSegment,
    chunk_tokens,
    parse_prompt_weights,
    tokenize_with_weights,
)
from diffusion.tokenizer import END_TOKEN, START_TOKEN, ClipTokenizer

# ComfyUI 0.8.0 SD1Tokenizer / SDXLTokenizer.tokenize_with_weights output (fixture README records the origin).
TOKENS = json.loads((Path(__file__).parents[1] / "fixtures/comfyui_numerics/tokens.json").read_text())
CASES = [(c["text"], 49407, c["chunks"]) for c in TOKENS["sd1"]]
CASES += [(c["text"], 49407, c["clip_l"]) for c in TOKENS["sdxl"]]
CASES += [(c["text"], 0, c["clip_g"]) for c in TOKENS["sdxl"]]
CASE_IDS = [f"sd1:{c['text'][:30]!r}" for c in TOKENS["sd1"]]
CASE_IDS += [f"sdxl_l:{c['text'][:30]!r}" for c in TOKENS["sdxl"]]
CASE_IDS += [f"sdxl_g:{c['text'][:30]!r}" for c in TOKENS["sdxl"]]


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


@pytest.mark.parametrize(("text", "pad", "expected"), CASES, ids=CASE_IDS)
def test_chunks_equal_comfyui(tokenizer, text, pad, expected):
    chunks = tokenize_with_weights(tokenizer, text, pad_token=pad)
    assert [[t for t, _ in c] for c in chunks] == [[t for t, _ in c] for c in expected]
    # The fixture stores weights rounded (1.21 for 1.1 * 1.1).
    assert [[w for _, w in c] for c in chunks] == [pytest.approx([w for _, w in c], abs=1e-9) for c in expected]


def test_every_fixture_case_is_covered():
    assert len(CASES) == len(TOKENS["sd1"]) + 2 * len(TOKENS["sdxl"]) == 22


def test_explicit_weight_and_nesting():
    assert parse_prompt_weights("a (b:1.2) ((c))") == [
        WeightedSegment("a ", 1.0),
        WeightedSegment("b", 1.2),
        WeightedSegment(" ", 1.0),
        WeightedSegment("c", 1.1 * 1.1),
    ]


def test_explicit_weight_replaces_the_outer_weight():
    assert parse_prompt_weights("((x:0.5))") == [WeightedSegment("x", 0.5)]
    assert parse_prompt_weights("(a (b):2)") == [WeightedSegment("a ", 2.0), WeightedSegment("b", 2.0 * 1.1)]


def test_square_brackets_are_plain_text():
    assert parse_prompt_weights("[cat]") == [WeightedSegment("[cat]", 1.0)]


def test_escaped_parentheses_are_literal():
    assert parse_prompt_weights(r"\(a\) (b)") == [WeightedSegment("(a) ", 1.0), WeightedSegment("b", 1.1)]


def test_unreadable_weight_keeps_the_text_and_the_nesting_weight():
    assert parse_prompt_weights("(a:b)") == [WeightedSegment("a:b", 1.1)]
    assert parse_prompt_weights("(:2)") == [WeightedSegment(":2", 1.1)]  # a colon at the start is not a weight


def test_stray_closing_parenthesis_turns_the_rest_into_text():
    assert parse_prompt_weights("a) (b)") == [WeightedSegment("a) (b)", 1.0)]


def test_unclosed_parenthesis_is_text():
    assert parse_prompt_weights("x (a b") == [WeightedSegment("x ", 1.0), WeightedSegment("(a b", 1.0)]


def test_unclosed_outer_group_ending_in_a_closed_one_reads_as_one_group():
    # ComfyUI's reading: "(a (b:2)" starts with "(" and ends with ")", so it is taken as a group whose weight is
    # the last ":2"; inside it, "(b" is unclosed text.
    assert parse_prompt_weights("x (a (b:2)") == [
        WeightedSegment("x ", 1.0),
        WeightedSegment("a ", 2.0),
        WeightedSegment("(b", 2.0),
    ]


def test_short_group_moves_whole_to_the_next_chunk():
    long_group = [(7, 1.0)] * 74
    short_group = [(9, 1.3)] * 3
    chunks = chunk_tokens([long_group, short_group], pad_token=0)
    assert len(chunks) == 2 and all(len(c) == 77 for c in chunks)
    assert chunks[0][75] == (END_TOKEN, 1.0) and chunks[0][76] == (0, 1.0)
    assert chunks[1][:5] == ((START_TOKEN, 1.0), (9, 1.3), (9, 1.3), (9, 1.3), (END_TOKEN, 1.0))


def test_long_group_is_cut_where_the_chunk_is_full():
    chunks = chunk_tokens([[(7, 1.0)] * 70, [(9, 1.3)] * 10], pad_token=0)
    assert [t for t, _ in chunks[0]] == [START_TOKEN] + [7] * 70 + [9] * 5 + [END_TOKEN]
    assert [t for t, _ in chunks[1][:7]] == [START_TOKEN] + [9] * 5 + [END_TOKEN]


def test_chunks_have_the_requested_length():
    chunks = chunk_tokens([[(7, 1.0)] * 20], pad_token=END_TOKEN, length=10)
    assert [len(c) for c in chunks] == [10, 10, 10]


def test_embedding_rows_take_one_slot_each(tokenizer):
    rows = torch.arange(12.0).reshape(3, 4)
    (chunk,) = tokenize_with_weights(
        tokenizer, "a (embedding:style:1.2) cat", pad_token=END_TOKEN, embedding_lookup={"style": rows}.get
    )
    assert chunk[1] == (320, 1.0)
    for i in range(3):
        token, weight = chunk[2 + i]
        assert torch.equal(token, rows[i]) and weight == 1.2
    assert chunk[5] == (2368, 1.0) and chunk[6] == (END_TOKEN, 1.0)


def test_embedding_name_may_end_with_a_comma(tokenizer):
    row = torch.ones(4)
    (chunk,) = tokenize_with_weights(
        tokenizer, "embedding:style, cat", pad_token=END_TOKEN, embedding_lookup={"style": row}.get
    )
    assert torch.equal(chunk[1][0], row)
    assert [t for t, _ in chunk[2:5]] == [267, 2368, END_TOKEN]  # ",", "cat", end


def test_missing_embedding_is_skipped_with_a_warning(tokenizer, caplog):
    with caplog.at_level(logging.WARNING):
        (chunk,) = tokenize_with_weights(
            tokenizer, "embedding:nope a house", pad_token=END_TOKEN, embedding_lookup=lambda name: None
        )
    assert "embedding:nope does not exist" in caplog.text
    assert [t for t, _ in chunk[:4]] == [START_TOKEN, 320, 1212, END_TOKEN]


def test_embedding_is_plain_text_without_a_lookup(tokenizer):
    (chunk,) = tokenize_with_weights(tokenizer, "embedding:nope", pad_token=END_TOKEN)
    ids = tokenizer.word_ids("embedding:nope")
    assert [t for t, _ in chunk[: len(ids) + 2]] == [START_TOKEN, *ids, END_TOKEN]
