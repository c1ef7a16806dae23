"""CLIP text encoders: detection from shapes, checkpoint key mapping, meta construction, numerics."""

import json
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn

from diffusion.text_encoders import (
    CLIP_L,
    OPEN_CLIP_BIGG,
    OPEN_CLIP_H,
    TextEncoderConfig,
    TextEncoderDetectionError,
    build_text_encoder,
    checkpoint_state_dict,
    default_heads,
    detect_text_encoder,
    text_encoder_state_dict,
)

MANIFESTS = json.loads((Path(__file__).parents[1] / "fixtures/manifests/text_encoders.json").read_text())["checkpoints"]

RELEASED = [
    ("sd15", "cond_stage_model.transformer.", CLIP_L),
    ("sd21v", "cond_stage_model.model.", OPEN_CLIP_H),
    ("sdxl_base", "conditioner.embedders.0.transformer.", CLIP_L),
    ("sdxl_base", "conditioner.embedders.1.model.", OPEN_CLIP_BIGG),
]


def manifest_shapes(name: str, prefix: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in MANIFESTS[name]["tensors"].items() if k.startswith(prefix)}


def random_encoder(cfg: TextEncoderConfig, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    encoder = build_text_encoder(cfg).eval()
    with torch.no_grad():
        for p in encoder.parameters():
            p.normal_(0, 0.2)
    return encoder


TOKENS = torch.tensor([[49406, 320, 1125, 539, 49407] + [49407] * 72, [49406, 5, 6, 7, 8, 9, 49407] + [0] * 70])


@pytest.mark.parametrize(("name", "prefix", "expected"), RELEASED)
def test_released_text_encoders_are_detected_from_shapes(name, prefix, expected):
    assert detect_text_encoder(manifest_shapes(name, prefix), prefix) == expected


@pytest.mark.parametrize(("name", "prefix", "expected"), RELEASED)
def test_meta_built_encoder_loads_the_released_keys_strictly(name, prefix, expected):
    shapes = manifest_shapes(name, prefix)
    cfg = detect_text_encoder(shapes, prefix)
    module = build_text_encoder(cfg, device="meta")
    ckpt = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    mapped = text_encoder_state_dict(ckpt, prefix, cfg)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in module.state_dict().items()}
    module.load_state_dict(mapped, strict=True, assign=True)


@pytest.mark.parametrize(("name", "prefix", "expected"), RELEASED)
def test_saving_gives_the_released_names_and_shapes(name, prefix, expected):
    shapes = manifest_shapes(name, prefix)
    module = build_text_encoder(expected, device="meta")
    saved = {k: tuple(v.shape) for k, v in checkpoint_state_dict(module, prefix, expected).items()}
    # logit_scale (CLIP's contrastive temperature) is not part of a text encoder and is not written back.
    assert saved == {k: s for k, s in shapes.items() if not k.endswith("logit_scale")}


def test_open_clip_tensors_round_trip_unchanged():
    cfg = TextEncoderConfig(
        "open_clip", width=64, layers=2, heads=1, intermediate=256, projection_dim=32, activation="gelu", pad_token=0
    )
    prefix = "conditioner.embedders.1.model."
    original = checkpoint_state_dict(random_encoder(cfg), prefix, cfg)
    reloaded = build_text_encoder(cfg, device="meta")
    reloaded.load_state_dict(text_encoder_state_dict(original, prefix, cfg), strict=True, assign=True)
    again = checkpoint_state_dict(reloaded, prefix, cfg)
    assert again.keys() == original.keys()
    assert all(torch.equal(again[k], original[k]) for k in original)


def open_clip_reference(
    state: dict, prefix: str, tokens: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCLIP's text tower written directly on the OpenCLIP-layout tensors, with torch's MultiheadAttention."""
    w = state[prefix + "token_embedding.weight"]
    width = w.shape[1]
    x = w[tokens] + state[prefix + "positional_embedding"]
    mask = torch.full((tokens.shape[1],) * 2, float("-inf")).triu(1)
    i = 0
    while prefix + f"transformer.resblocks.{i}.ln_1.weight" in state:
        r = f"{prefix}transformer.resblocks.{i}."
        attn = nn.MultiheadAttention(width, heads, batch_first=True)
        attn.load_state_dict({k[len(r) + 5 :]: v for k, v in state.items() if k.startswith(r + "attn.")})
        h = nn.functional.layer_norm(x, (width,), state[r + "ln_1.weight"], state[r + "ln_1.bias"])
        x = x + attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = nn.functional.layer_norm(x, (width,), state[r + "ln_2.weight"], state[r + "ln_2.bias"])
        h = nn.functional.linear(h, state[r + "mlp.c_fc.weight"], state[r + "mlp.c_fc.bias"])
        x = x + nn.functional.linear(
            nn.functional.gelu(h), state[r + "mlp.c_proj.weight"], state[r + "mlp.c_proj.bias"]
        )
        i += 1
    x = nn.functional.layer_norm(x, (width,), state[prefix + "ln_final.weight"], state[prefix + "ln_final.bias"])
    pooled = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ state[prefix + "text_projection"]
    return x, pooled


def test_open_clip_mapping_computes_what_open_clip_computes():
    cfg = TextEncoderConfig(
        "open_clip", width=128, layers=2, heads=2, intermediate=512, projection_dim=64, activation="gelu", pad_token=0
    )
    prefix = "cond_stage_model.model."
    encoder = random_encoder(cfg)
    state = checkpoint_state_dict(encoder, prefix, cfg)
    with torch.no_grad():
        hidden, pooled = encoder.encode(TOKENS)
        ref_hidden, ref_pooled = open_clip_reference(state, prefix, TOKENS, heads=2)
    torch.testing.assert_close(hidden, ref_hidden, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pooled, ref_pooled, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("activation", "projection"), [("quick_gelu", None), ("gelu", 32)])
def test_hidden_layers_and_pooled_match_transformers_clip(activation, projection):
    cfg = TextEncoderConfig(
        "clip_l_hf", width=64, layers=3, heads=1, intermediate=128, projection_dim=projection, activation=activation
    )
    encoder = random_encoder(cfg)
    hf_config = transformers.CLIPTextConfig(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=1,
        max_position_embeddings=77,
        hidden_act=activation,
        projection_dim=projection or 64,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    state = encoder.state_dict()
    # transformers 5.x: CLIPTextModel has no `text_model.` level; CLIPTextModelWithProjection keeps it.
    if projection is None and not hasattr(transformers.CLIPTextModel(hf_config), "text_model"):
        hf = transformers.CLIPTextModel(hf_config)
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    else:
        hf = (transformers.CLIPTextModelWithProjection if projection else transformers.CLIPTextModel)(hf_config)
    hf.load_state_dict(state, strict=True)
    hf.eval()
    with torch.no_grad():
        ref = hf(input_ids=TOKENS, output_hidden_states=True)
        for layer in ("last", -1, -2, 0):
            hidden, pooled = encoder.encode(TOKENS, layer=layer, hidden_norm="raw")
            expected = (
                ref.last_hidden_state if layer == "last" else ref.hidden_states[layer if layer < 0 else layer + 1]
            )
            torch.testing.assert_close(hidden, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, ref.text_embeds if projection else ref.pooler_output, rtol=1e-5, atol=1e-5)


def test_hidden_norm_applies_the_final_layer_norm_to_the_chosen_layer():
    encoder = random_encoder(TextEncoderConfig("clip_l_hf", width=64, layers=3, heads=1, intermediate=128))
    with torch.no_grad():
        raw, _ = encoder.encode(TOKENS, layer=-2, hidden_norm="raw")
        normed, _ = encoder.encode(TOKENS, layer=-2, hidden_norm="final_ln")
        last, _ = encoder.encode(TOKENS, layer="last")
        last_by_index, _ = encoder.encode(TOKENS, layer=-1, hidden_norm="final_ln")
    torch.testing.assert_close(normed, encoder.text_model.final_layer_norm(raw))
    assert not torch.allclose(raw, normed)
    torch.testing.assert_close(last, last_by_index)


def test_layer_out_of_range_is_rejected():
    encoder = random_encoder(TextEncoderConfig("clip_l_hf", width=64, layers=2, heads=1, intermediate=128))
    with pytest.raises(ValueError, match="layer must be"):
        encoder.encode(TOKENS, layer=-3)


def test_input_embeddings_replace_the_token_lookup():
    encoder = random_encoder(TextEncoderConfig("clip_l_hf", width=64, layers=2, heads=1, intermediate=128))
    with torch.no_grad():
        plain = encoder.encode(TOKENS)
        same = encoder.encode(TOKENS, inputs_embeds=encoder.token_embeddings(TOKENS))
        injected = encoder.token_embeddings(TOKENS).clone()
        injected[:, 2] = torch.randn(64)
        changed = encoder.encode(TOKENS, inputs_embeds=injected)
    torch.testing.assert_close(same.hidden, plain.hidden)
    torch.testing.assert_close(changed.hidden[:, :2], plain.hidden[:, :2])  # causal: earlier tokens unaffected
    assert not torch.allclose(changed.hidden[:, 2:], plain.hidden[:, 2:])


def test_pooled_output_is_taken_at_the_first_end_token():
    encoder = random_encoder(TextEncoderConfig("clip_l_hf", width=64, layers=2, heads=1, intermediate=128))
    with torch.no_grad():
        last, pooled = encoder.encode(TOKENS)
    torch.testing.assert_close(pooled, torch.stack([last[0, 4], last[1, 6]]))


@pytest.mark.parametrize(
    ("width", "heads"), [(64, 1), (128, 2), (256, 4), (768, 12), (1024, 16), (1280, 20), (32, 1), (192, 3)]
)
def test_heads_follow_the_64_wide_rule(width, heads):
    assert default_heads(width) == heads


def test_narrow_sd1_layout_encoder_is_detected_with_its_heads():
    cfg = TextEncoderConfig("clip_l_hf", width=256, layers=3, heads=4, intermediate=1024)
    saved = checkpoint_state_dict(build_text_encoder(cfg, device="meta"), "cond_stage_model.transformer.", cfg)
    assert detect_text_encoder({k: tuple(v.shape) for k, v in saved.items()}, "cond_stage_model.transformer.") == cfg


def test_old_sd1_format_without_text_model_level_loads():
    cfg = TextEncoderConfig("clip_l_hf", width=64, layers=2, heads=1, intermediate=128)
    prefix = "cond_stage_model.transformer."
    saved = checkpoint_state_dict(random_encoder(cfg), prefix, cfg)
    old = {k.replace("transformer.text_model.", "transformer."): v for k, v in saved.items()}
    assert detect_text_encoder({k: tuple(v.shape) for k, v in old.items()}, prefix) == cfg
    module = build_text_encoder(cfg, device="meta")
    module.load_state_dict(text_encoder_state_dict(old, prefix, cfg), strict=True, assign=True)
    torch.testing.assert_close(
        module.text_model.final_layer_norm.weight, saved[prefix + "text_model.final_layer_norm.weight"]
    )


def test_meta_built_encoder_runs_after_assign_load():
    cfg = TextEncoderConfig("clip_l_hf", width=64, layers=2, heads=1, intermediate=128)
    reference = random_encoder(cfg)
    module = build_text_encoder(cfg, device="meta")
    module.load_state_dict(reference.state_dict(), strict=True, assign=True)
    assert not any(t.is_meta for t in [*module.parameters(), *module.buffers()])
    with torch.no_grad():
        torch.testing.assert_close(module.encode(TOKENS).hidden, reference.encode(TOKENS).hidden)


def test_unknown_keys_under_the_prefix_surface_in_a_strict_load():
    cfg = TextEncoderConfig("clip_l_hf", width=64, layers=1, heads=1, intermediate=128)
    saved = checkpoint_state_dict(random_encoder(cfg), "te.", cfg)
    saved["te.text_model.something_new"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="something_new"):
        build_text_encoder(cfg).load_state_dict(text_encoder_state_dict(saved, "te.", cfg), strict=True)


def test_no_text_encoder_under_the_prefix_is_a_typed_error():
    with pytest.raises(TextEncoderDetectionError, match="no CLIP text encoder"):
        detect_text_encoder({"model.diffusion_model.x": (1,)}, "cond_stage_model.transformer.")


def test_prefix_may_include_the_text_model_level():
    cfg = TextEncoderConfig("clip_l_hf", width=64, layers=1, heads=1, intermediate=128)
    saved = checkpoint_state_dict(random_encoder(cfg), "cond_stage_model.transformer.", cfg)
    prefix = "cond_stage_model.transformer.text_model."
    assert detect_text_encoder({k: tuple(v.shape) for k, v in saved.items()}, prefix) == cfg
    module = build_text_encoder(cfg, device="meta")
    module.load_state_dict(text_encoder_state_dict(saved, prefix, cfg), strict=True, assign=True)
