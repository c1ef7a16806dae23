"""LoRA files in every supported key format, resolved against tiny models and checked against merged weights."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from diffusion.families import SD1, SDXL
from diffusion.handles import Clip, Model, TextEncoderHandle
from diffusion.lora import LoraFileError, LoraMismatch, apply_lora, load_lora_file
from diffusion.lora_keys import lora_targets, unet_aliases, unet_diffusers_to_ldm
from diffusion.model_sampling import DiscreteSampling
from diffusion.patches import LoraPatch, applied_to_clip, applied_to_model
from diffusion.safetensors_io import CheckpointFormatError
from diffusion.text_encoders import TextEncoder, TextEncoderConfig, build_text_encoder
from diffusion.tokenizer import ClipTokenizer
from diffusion.unet import UNetConfig, UNetModel
from tests.diffusion.conftest import load_manifest, manifest_shapes

UNET_PREFIX = "model.diffusion_model."
SD15 = UNetConfig()
SD21 = UNetConfig(context_dim=1024, num_heads=None, num_head_channels=64, use_linear_in_transformer=True)
SDXL_UNET = UNetConfig(
    channel_mult=(1, 2, 4), transformer_depth=(0, 2, 10), transformer_depth_middle=10,
    transformer_depth_output=(10, 2, 0), context_dim=2048, num_heads=None, num_head_channels=64,
    use_linear_in_transformer=True, adm_in_channels=2816,
)
# Two res blocks per level like the released models, so block indices are those of SD (input_blocks.3 = downsample).
TINY_SD1 = UNetConfig(
    model_channels=32, channel_mult=(1, 2), num_res_blocks=2, transformer_depth=(1, 1), transformer_depth_middle=1,
    transformer_depth_output=(1, 1), context_dim=16, num_heads=4,
)
# SDXL layout: no attention at level 0, linear projections, label_emb.
TINY_SDXL = UNetConfig(
    model_channels=32, channel_mult=(1, 2), num_res_blocks=2, transformer_depth=(0, 2), transformer_depth_middle=1,
    transformer_depth_output=(2, 0), context_dim=16, num_heads=None, num_head_channels=16,
    use_linear_in_transformer=True, adm_in_channels=24,
)
TINY_CLIP_L = TextEncoderConfig("clip_l_hf", width=32, layers=2, heads=2, intermediate=64, vocab_size=64)
TINY_CLIP_G = TextEncoderConfig(
    "open_clip", width=48, layers=2, heads=3, intermediate=96, vocab_size=64, projection_dim=40, activation="gelu",
    pad_token=0,
)


# ---------------------------------------------------------------------------------------------------------------
# helpers


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module.eval().requires_grad_(False)


def tiny_model(config: UNetConfig, family=SD1) -> Model:
    return Model(unet=seeded(UNetModel(config)), family=family, sampling=DiscreteSampling.linear(), name="tiny")


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


def tiny_clip(tokenizer: ClipTokenizer, family=SD1) -> Clip:
    configs = {"clip_l": TINY_CLIP_L, "clip_g": TINY_CLIP_G}
    encoders = tuple(
        TextEncoderHandle(slot, seeded(build_text_encoder(configs[slot.name]), seed=i))
        for i, slot in enumerate(family.text_encoders)
    )
    return Clip(encoders=encoders, tokenizer=tokenizer, family=family, name="tiny")


def factors(module: nn.Module, rank: int, seed: int, *, tucker: bool = False) -> dict[str, torch.Tensor]:
    """Random LoRA factors shaped for `module` (kohya layout: conv factors are 4-D)."""
    g = torch.Generator().manual_seed(seed)
    weight = module.weight
    if weight.ndim == 2:
        out, in_ = weight.shape
        return {"down": torch.randn(rank, in_, generator=g), "up": torch.randn(out, rank, generator=g)}
    out, in_, kh, kw = weight.shape
    if tucker:
        return {"down": torch.randn(rank, in_, 1, 1, generator=g), "mid": torch.randn(rank, rank, kh, kw, generator=g),
                "up": torch.randn(out, rank, 1, 1, generator=g)}
    return {"down": torch.randn(rank, in_, kh, kw, generator=g), "up": torch.randn(out, rank, 1, 1, generator=g)}


def merged_reference(module: nn.Module, targets: dict[str, dict], strength: float) -> nn.Module:
    """A copy with W + strength·alpha/rank·up@down written into each target (alpha = rank when absent)."""
    ref = copy.deepcopy(module)
    with torch.no_grad():
        for name, f in targets.items():
            weight = ref.get_submodule(name).weight
            rank = f["down"].shape[0]
            up, down = f["up"].flatten(1), f["down"].flatten(1)
            if "mid" in f:
                delta = torch.einsum("oa,abhw,bi->oihw", up, f["mid"], down)
            else:
                delta = (up @ down).reshape(weight.shape)
            weight.add_(strength * f.get("alpha", rank) / rank * delta)
    return ref


def unet_inputs(config: UNetConfig) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([400.0])
    ctx = torch.randn(1, 5, config.context_dim, generator=g)
    y = torch.randn(1, config.adm_in_channels, generator=g) if config.adm_in_channels else None
    return x, t, ctx, y


def write(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


KOHYA = {"down": ".lora_down.weight", "up": ".lora_up.weight", "mid": ".lora_mid.weight", "alpha": ".alpha"}
PEFT = {"down": ".lora_A.weight", "up": ".lora_B.weight", "alpha": ".alpha"}


def file_tensors(entries: dict[str, dict], suffixes: dict[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for base, f in entries.items():
        for part, tensor in f.items():
            out[base + suffixes[part]] = torch.tensor(float(tensor)) if part == "alpha" else tensor
    return out


# ---------------------------------------------------------------------------------------------------------------
# The diffusers <-> LDM map against the released checkpoints


def test_diffusers_map_takes_every_sd15_diffusers_unet_tensor_to_the_ldm_tensor_of_the_same_shape() -> None:
    diffusers = load_manifest("sd15_diffusers")["components"]["unet/diffusion_pytorch_model.safetensors"]["tensors"]
    ldm = manifest_shapes("sd15", UNET_PREFIX)
    names = unet_diffusers_to_ldm(SD15)
    mapped = {}
    for key, shape in diffusers.items():
        module, param = key.rsplit(".", 1)
        mapped[key] = (f"{names[module]}.{param}", tuple(shape))
    assert len(mapped) == 686
    assert {k: v for k, v in mapped.items() if ldm.get(v[0]) != v[1]} == {}
    assert {v[0] for v in mapped.values()} == set(ldm)  # onto: every LDM tensor has its diffusers name


@pytest.mark.parametrize(("manifest_name", "config"), [("sdxl_base", SDXL_UNET), ("sd21v", SD21)])
def test_diffusers_map_is_one_to_one_onto_the_released_unet_modules(manifest_name, config) -> None:
    modules = {k.rsplit(".", 1)[0] for k in manifest_shapes(manifest_name, UNET_PREFIX)}
    names = unet_diffusers_to_ldm(config)
    assert len(set(names.values())) == len(names)
    assert set(names.values()) == modules


@pytest.mark.parametrize("config", [SD15, SDXL_UNET], ids=["sd15", "sdxl"])
def test_every_adaptable_unet_layer_has_unambiguous_kohya_names(config) -> None:
    with torch.device("meta"):
        unet = UNetModel(config)
    targets = lora_targets(unet)
    diffusers = {ldm: d for d, ldm in unet_diffusers_to_ldm(config).items()}
    pairs = {(f"lora_unet_{n.replace('.', '_')}", n) for n in targets}
    pairs |= {(f"lora_unet_{diffusers[n].replace('.', '_')}", n) for n in targets}
    assert len({alias for alias, _ in pairs}) == len(pairs)  # no underscored spelling names two layers
    aliases = unet_aliases(unet, config)
    assert all(aliases[alias] == n for alias, n in pairs)
    # SDXL kohya LoRAs use the LDM names, SD1 ones the diffusers names; both resolve here.
    assert aliases["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k"] == (
        "input_blocks.4.1.transformer_blocks.0.attn1.to_k"
    )


# ---------------------------------------------------------------------------------------------------------------
# UNet LoRAs in each format


# diffusers name -> the LDM name it must resolve to in TINY_SD1, written out by hand (independent of the map).
SD1_TARGETS = {
    "down_blocks.0.resnets.1.conv1": "input_blocks.2.0.in_layers.2",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.1.proj_in": "input_blocks.2.1.proj_in",
    "down_blocks.0.downsamplers.0.conv": "input_blocks.3.0.op",
    "down_blocks.1.resnets.0.conv_shortcut": "input_blocks.4.0.skip_connection",
    "down_blocks.1.resnets.1.time_emb_proj": "input_blocks.5.0.emb_layers.1",
    "mid_block.attentions.0.proj_out": "middle_block.1.proj_out",
    "mid_block.resnets.1.conv2": "middle_block.2.out_layers.3",
    "up_blocks.0.resnets.2.conv2": "output_blocks.2.0.out_layers.3",
    "up_blocks.0.upsamplers.0.conv": "output_blocks.2.2.conv",
    "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj":
        "output_blocks.3.1.transformer_blocks.0.ff.net.0.proj",
    "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0":
        "output_blocks.5.1.transformer_blocks.0.attn2.to_out.0",
    "time_embedding.linear_1": "time_embed.0",
    "conv_out": "out.2",
}


def check_unet_lora(model: Model, path: Path, expected: dict[str, dict], strength: float) -> None:
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    lora = load_lora_file(path)
    patched, clip, not_loaded = apply_lora(model, None, lora, strength_model=strength, strength_clip=1.0)
    assert clip is None and not_loaded == []
    assert patched is not None and patched is not model
    assert sorted(p.target for p in patched.patches) == sorted(expected)
    inputs = unet_inputs(model.unet.config)
    with applied_to_model(patched) as unet:
        got = unet(*inputs)
    reference = merged_reference(model.unet, expected, strength)(*inputs)
    assert not torch.allclose(got, model.unet(*inputs), atol=1e-3)
    torch.testing.assert_close(got, reference, atol=2e-5, rtol=2e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.unet.state_dict().items())


def test_kohya_lora_with_diffusers_names_matches_merged_weights(tmp_path) -> None:
    """SD1/SD2 kohya LoRAs: lora_unet_ + diffusers path with underscores; LoCon on 3x3 convs, Tucker on one."""
    model = tiny_model(TINY_SD1)
    entries, expected = {}, {}
    for i, (d_name, ldm) in enumerate(SD1_TARGETS.items()):
        tucker = d_name == "up_blocks.0.resnets.2.conv2"
        f = factors(model.unet.get_submodule(ldm), rank=2 + i % 3, seed=i, tucker=tucker)
        f["alpha"] = 1.0 + i % 4
        entries["lora_unet_" + d_name.replace(".", "_")] = f
        expected[ldm] = f
    check_unet_lora(model, write(tmp_path / "kohya_sd1.safetensors", file_tensors(entries, KOHYA)), expected, 0.8)


SDXL_LDM_TARGETS = (
    "input_blocks.0.0",
    "input_blocks.4.1.transformer_blocks.1.attn1.to_k",
    "input_blocks.4.1.proj_in",
    "middle_block.1.transformer_blocks.0.attn2.to_v",
    "output_blocks.1.1.transformer_blocks.0.ff.net.2",
    "output_blocks.2.2.conv",
    "output_blocks.4.0.in_layers.2",
    "label_emb.0.0",
    "time_embed.2",
)


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(lambda n: "lora_unet_" + n.replace(".", "_"), id="kohya-sdxl-ldm"),
        pytest.param(lambda n: "model.diffusion_model." + n, id="ldm-dotted"),
        pytest.param(lambda n: "diffusion_model." + n, id="comfyui"),
    ],
)
def test_ldm_named_lora_matches_merged_weights(tmp_path, spelling: Callable[[str], str]) -> None:
    model = tiny_model(TINY_SDXL, SDXL)
    entries, expected = {}, {}
    for i, name in enumerate(SDXL_LDM_TARGETS):
        f = factors(model.unet.get_submodule(name), rank=3, seed=40 + i)
        f["alpha"] = 1.5
        entries[spelling(name)] = f
        expected[name] = f
    check_unet_lora(model, write(tmp_path / "ldm.safetensors", file_tensors(entries, KOHYA)), expected, 1.0)


def test_peft_lora_with_diffusers_names_and_no_alpha_matches_merged_weights(tmp_path) -> None:
    model = tiny_model(TINY_SDXL, SDXL)
    targets = {
        "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q":
            "input_blocks.4.1.transformer_blocks.1.attn1.to_q",
        "down_blocks.1.attentions.1.proj_out": "input_blocks.5.1.proj_out",
        "up_blocks.0.attentions.2.transformer_blocks.0.attn2.to_out.0":
            "output_blocks.2.1.transformer_blocks.0.attn2.to_out.0",
        "add_embedding.linear_2": "label_emb.0.2",
    }
    entries, expected = {}, {}
    for i, (d_name, ldm) in enumerate(targets.items()):
        f = factors(model.unet.get_submodule(ldm), rank=2, seed=60 + i)
        entries["unet." + d_name] = f
        expected[ldm] = f  # no alpha: scale 1
    check_unet_lora(model, write(tmp_path / "peft.safetensors", file_tensors(entries, PEFT)), expected, 0.5)


def test_diffusers_attention_processor_lora_resolves_to_the_attention_projections(tmp_path) -> None:
    model = tiny_model(TINY_SD1)
    entries, expected = {}, {}
    for i, proj in enumerate(("to_q", "to_k", "to_v", "to_out")):
        ldm = f"input_blocks.1.1.transformer_blocks.0.attn2.{proj}" + (".0" if proj == "to_out" else "")
        f = factors(model.unet.get_submodule(ldm), rank=2, seed=70 + i)
        base = f"down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.{proj}_lora"
        entries[base] = f
        expected[ldm] = f
    tensors = file_tensors(entries, {"down": ".down.weight", "up": ".up.weight"})
    check_unet_lora(model, write(tmp_path / "attn_procs.safetensors", tensors), expected, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Text encoders


def encode(clip: Clip) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    tokens = torch.tensor([[1, 5, 17, 33, 2, 63, 0, 0]])  # ids of the tiny 64-token vocabulary
    return {e.slot.name: tuple(e.module.encode(tokens, layer="last")) for e in clip.encoders}


def check_clip_lora(clip: Clip, path: Path, expected: dict[str, dict[str, dict]], strength: float) -> Clip:
    """expected: slot name -> {module name: factors}."""
    _, patched, not_loaded = apply_lora(None, clip, load_lora_file(path), strength_model=1.0, strength_clip=strength)
    assert not_loaded == []
    assert patched is not None
    assert sorted((p.root, p.target) for p in patched.patches) == sorted(
        (slot, name) for slot, names in expected.items() for name in names
    )
    base = encode(clip)
    with applied_to_clip(patched):
        got = encode(patched)
    for encoder in clip.encoders:
        reference = merged_reference(encoder.module, expected.get(encoder.slot.name, {}), strength)
        ref_clip = Clip(encoders=(TextEncoderHandle(encoder.slot, reference),), tokenizer=clip.tokenizer,
                        family=clip.family)
        want = encode(ref_clip)[encoder.slot.name]
        for g, w in zip(got[encoder.slot.name], want, strict=True):
            torch.testing.assert_close(g, w, atol=2e-5, rtol=2e-5)
        if expected.get(encoder.slot.name):
            assert not torch.allclose(got[encoder.slot.name][0], base[encoder.slot.name][0], atol=1e-3)
    after = encode(clip)
    assert all(torch.equal(a, b) for slot in base for a, b in zip(after[slot], base[slot], strict=True))
    return patched


def te_entries(encoder: TextEncoder, names: list[str], prefix: str, underscore: bool, seed: int):
    entries, expected = {}, {}
    for i, name in enumerate(names):
        f = factors(encoder.get_submodule(name), rank=2, seed=seed + i)
        f["alpha"] = 1.0
        entries[prefix + (name.replace(".", "_") if underscore else name)] = f
        expected[name] = f
    return entries, expected


SD1_TE_LAYERS = ["text_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.1.mlp.fc1",
                 "text_model.encoder.layers.1.self_attn.out_proj"]


def test_kohya_sd1_text_encoder_lora_matches_merged_weights(tmp_path, tokenizer) -> None:
    clip = tiny_clip(tokenizer, SD1)
    entries, expected = te_entries(clip.encoders[0].module, SD1_TE_LAYERS, "lora_te_", True, seed=80)
    check_clip_lora(clip, write(tmp_path / "te.safetensors", file_tensors(entries, KOHYA)), {"clip_l": expected}, 0.7)


def test_kohya_sdxl_text_encoder_loras_go_to_clip_l_and_clip_g(tmp_path, tokenizer) -> None:
    clip = tiny_clip(tokenizer, SDXL)
    clip_l, clip_g = (e.module for e in clip.encoders)
    e1, x1 = te_entries(clip_l, SD1_TE_LAYERS[:2], "lora_te1_", True, seed=90)
    e2, x2 = te_entries(clip_g, ["text_model.encoder.layers.0.mlp.fc2", "text_projection"], "lora_te2_", True, seed=95)
    path = write(tmp_path / "te12.safetensors", file_tensors({**e1, **e2}, KOHYA))
    check_clip_lora(clip, path, {"clip_l": x1, "clip_g": x2}, 1.0)


def test_diffusers_text_encoder_loras_use_text_encoder_and_text_encoder_2(tmp_path, tokenizer) -> None:
    clip = tiny_clip(tokenizer, SDXL)
    clip_l, clip_g = (e.module for e in clip.encoders)
    e1, x1 = te_entries(clip_l, SD1_TE_LAYERS[:1], "text_encoder.", False, seed=100)
    e2, x2 = te_entries(clip_g, ["text_model.encoder.layers.1.self_attn.v_proj"], "text_encoder_2.", False, seed=105)
    for f in (*e1.values(), *e2.values()):
        del f["alpha"]
    path = write(tmp_path / "te_peft.safetensors", file_tensors({**e1, **e2}, PEFT))
    check_clip_lora(clip, path, {"clip_l": x1, "clip_g": x2}, 1.0)


def test_ldm_named_text_encoder_loras_use_the_checkpoint_prefixes(tmp_path, tokenizer) -> None:
    clip = tiny_clip(tokenizer, SDXL)
    clip_l, clip_g = (e.module for e in clip.encoders)
    e1, x1 = te_entries(clip_l, SD1_TE_LAYERS[1:2], "conditioner.embedders.0.transformer.", False, seed=110)
    g = factors(clip_g.get_submodule("text_model.encoder.layers.1.mlp.fc1"), rank=2, seed=115)
    e2 = {"conditioner.embedders.1.model.transformer.resblocks.1.mlp.c_fc": g}  # OpenCLIP's own name
    path = write(tmp_path / "te_ldm.safetensors", file_tensors({**e1, **e2}, KOHYA))
    check_clip_lora(clip, path, {"clip_l": x1, "clip_g": {"text_model.encoder.layers.1.mlp.fc1": g}}, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# What is not loaded, strengths, errors


def test_keys_that_adapt_nothing_are_reported_and_the_rest_still_applies(tmp_path, tokenizer) -> None:
    model, clip = tiny_model(TINY_SD1), tiny_clip(tokenizer, SD1)
    good = factors(model.unet.get_submodule("time_embed.0"), rank=2, seed=1)
    no_layer = factors(model.unet.get_submodule("time_embed.0"), rank=2, seed=2)
    dora = factors(model.unet.get_submodule("time_embed.2"), rank=2, seed=3)
    te_missing = factors(clip.encoders[0].module.get_submodule("text_model.encoder.layers.0.mlp.fc1"), rank=2, seed=4)
    tensors = file_tensors(
        {"lora_unet_time_embedding_linear_1": good, "lora_unet_down_blocks_7_resnets_0_conv1": no_layer,
         "lora_unet_time_embedding_linear_2": dora, "lora_te_text_model_encoder_layers_9_mlp_fc1": te_missing},
        KOHYA,
    )
    tensors["lora_unet_time_embedding_linear_2.dora_scale"] = torch.ones(1, 128)
    tensors["lora_unet_conv_in.hada_w1_a"] = torch.ones(2, 2)
    tensors["lora_unet_input_blocks_1_0_emb_layers_1.lora_down.weight"] = torch.ones(2, 128)  # no up factor
    path = write(tmp_path / "mixed.safetensors", tensors)
    lora = load_lora_file(path)

    patched, _, not_loaded = apply_lora(model, None, lora, strength_model=1.0, strength_clip=1.0)
    assert [p.target for p in patched.patches] == ["time_embed.0"]
    unet_misses = [
        "lora_unet_conv_in.hada_w1_a",
        "lora_unet_down_blocks_7_resnets_0_conv1.lora_down.weight",
        "lora_unet_down_blocks_7_resnets_0_conv1.lora_up.weight",
        "lora_unet_input_blocks_1_0_emb_layers_1.lora_down.weight",
        "lora_unet_time_embedding_linear_2.dora_scale",
        "lora_unet_time_embedding_linear_2.lora_down.weight",
        "lora_unet_time_embedding_linear_2.lora_up.weight",
    ]
    assert not_loaded == unet_misses  # model only: the text-encoder entry is not asked for, so not reported

    _, patched_clip, not_loaded = apply_lora(model, clip, lora, strength_model=1.0, strength_clip=1.0)
    assert patched_clip is clip  # nothing matched its encoder
    assert not_loaded == sorted(unet_misses + [
        "lora_te_text_model_encoder_layers_9_mlp_fc1.lora_down.weight",
        "lora_te_text_model_encoder_layers_9_mlp_fc1.lora_up.weight",
    ])


def test_strength_zero_returns_the_handles_unchanged(tmp_path, tokenizer) -> None:
    model, clip = tiny_model(TINY_SD1), tiny_clip(tokenizer, SD1)
    entries = {"lora_unet_conv_in": factors(model.unet.get_submodule("input_blocks.0.0"), rank=2, seed=1),
               "lora_te_text_model_encoder_layers_0_mlp_fc2": factors(
                   clip.encoders[0].module.get_submodule("text_model.encoder.layers.0.mlp.fc2"), rank=2, seed=2)}
    lora = load_lora_file(write(tmp_path / "l.safetensors", file_tensors(entries, KOHYA)))
    new_model, new_clip, not_loaded = apply_lora(model, clip, lora, strength_model=0.0, strength_clip=0.0)
    assert new_model is model and new_clip is clip and not_loaded == []
    new_model, new_clip, _ = apply_lora(model, clip, lora, strength_model=-1.5, strength_clip=0.0)
    assert new_clip is clip
    assert [(p.target, p.strength) for p in new_model.patches] == [("input_blocks.0.0", -1.5)]
    assert all(isinstance(p, LoraPatch) for p in new_model.patches)


def test_lora_for_another_model_size_is_refused_with_the_file_and_shapes(tmp_path) -> None:
    small, wide = tiny_model(TINY_SD1), tiny_model(UNetConfig(**{**TINY_SD1.__dict__, "model_channels": 64}))
    entries = {"lora_unet_conv_in": factors(small.unet.get_submodule("input_blocks.0.0"), rank=2, seed=1)}
    lora = load_lora_file(write(tmp_path / "sd1_lora.safetensors", file_tensors(entries, KOHYA)))
    with pytest.raises(LoraMismatch, match=r"sd1_lora\.safetensors.*input_blocks\.0\.0.*\(64, 4, 3, 3\)"):
        apply_lora(wide, None, lora, strength_model=1.0, strength_clip=1.0)


def test_unreadable_files_fail_with_typed_errors_naming_the_file(tmp_path) -> None:
    pickle = tmp_path / "old.pt"
    pickle.write_bytes(b"PK\x03\x04 not loaded")
    with pytest.raises(CheckpointFormatError, match=r"old\.pt.*pickle"):
        load_lora_file(pickle)
    with pytest.raises(CheckpointFormatError, match="missing.safetensors"):
        load_lora_file(tmp_path / "missing.safetensors")
    with pytest.raises(LoraFileError, match=r"checkpoint\.safetensors: no LoRA tensors"):
        not_lora = {"model.diffusion_model.out.2.weight": torch.ones(2)}
        load_lora_file(write(tmp_path / "checkpoint.safetensors", not_lora))
    bad_alpha = {"lora_unet_conv_in.lora_down.weight": torch.ones(2, 4, 3, 3),
                 "lora_unet_conv_in.lora_up.weight": torch.ones(32, 2, 1, 1), "lora_unet_conv_in.alpha": torch.ones(3)}
    with pytest.raises(LoraFileError, match=r"alpha.*single number"):
        load_lora_file(write(tmp_path / "alpha.safetensors", bad_alpha))
