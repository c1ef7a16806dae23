"""T5 v1.1 encoder: the same outputs as transformers' T5EncoderModel on the same random weights, config detection
from shapes, and the vendored tokenizer."""

from __future__ import annotations

import pytest
import torch

from diffusion.t5 import DUPLICATE_EMBEDDING, T5Config, T5Encoder, T5Tokenizer, detect_t5_config, t5_state_dict

TINY = T5Config(vocab_size=96, d_model=64, num_layers=3, num_heads=4, d_kv=16, d_ff=96)


def random_t5(config: T5Config = TINY, seed: int = 0) -> T5Encoder:
    torch.manual_seed(seed)
    model = T5Encoder(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 if "shared" in name or "relative" in name else 0.1))
    return model.eval()


def test_matches_transformers_t5_encoder() -> None:
    transformers = pytest.importorskip("transformers")
    ours = random_t5()
    hf_config = transformers.T5Config(vocab_size=96, d_model=64, d_kv=16, d_ff=96, num_layers=3, num_heads=4,
                                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                                      relative_attention_max_distance=128, dropout_rate=0.0)
    theirs = transformers.T5EncoderModel(hf_config).eval()
    sd = ours.state_dict()
    sd[DUPLICATE_EMBEDDING] = sd["shared.weight"]
    missing, unexpected = theirs.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {DUPLICATE_EMBEDDING}
    # Positions far apart exercise the logarithmic buckets (distance >= 8 and beyond max_distance 128).
    tokens = torch.randint(0, 96, (2, 150), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = ours(tokens)
        want = theirs(input_ids=tokens).last_hidden_state
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_config_detected_and_duplicate_embedding_dropped() -> None:
    with torch.device("meta"):
        model = T5Encoder(TINY)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes[DUPLICATE_EMBEDDING] = shapes["shared.weight"]
    assert detect_t5_config(shapes) == TINY
    tensors = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert set(t5_state_dict(tensors)) == set(model.state_dict())
    only_duplicate = {k: v for k, v in tensors.items() if k != "shared.weight"}
    assert set(t5_state_dict(only_duplicate)) == set(model.state_dict())


def test_tokenizer_is_t5_v1_1_offline() -> None:
    tok = T5Tokenizer()
    assert tok.word_ids("a photo of a cat") == [3, 9, 1202, 13, 3, 9, 1712]
    assert tok.word_ids("") == []
    assert tok.decode(tok.word_ids("Hello world")) == "Hello world"
