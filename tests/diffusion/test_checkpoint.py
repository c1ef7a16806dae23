"""Checkpoint detection (names and shapes only), strict loading, saving and the errors for bad files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import (
    CheckpointFormatError,
    CheckpointMismatch,
    UnknownCheckpoint,
    check_layout,
    detect_checkpoint,
    detect_layout,
    load_checkpoint,
    load_vae_file,
    save_sd1_checkpoint,
)
from diffusion.safetensors_io import read_header, save_atomic
from diffusion.text_encoders import CLIP_L, OPEN_CLIP_BIGG, OPEN_CLIP_H, TextEncoderConfig, build_text_encoder
from diffusion.text_encoders import checkpoint_state_dict as text_checkpoint_state_dict
from diffusion.unet import UNetConfig, UNetModel
from diffusion.vae import AutoencoderKL, VAEConfig
from tests.diffusion.conftest import load_manifest, manifest_shapes
from tests.diffusion.test_unet import SD15, SD21, SDXL
from tests.diffusion.tiny_checkpoint import tiny_configs, write_tiny_sd1_checkpoint


def shapes_of(name: str) -> dict[str, tuple[int, ...]]:
    return manifest_shapes(name)


# --- detection from the released checkpoints' names and shapes --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "unet", "encoders"),
    [
        ("sd15", "sd1", SD15, {"clip_l": CLIP_L}),
        ("sd21v", "sd2", SD21, {"clip_h": OPEN_CLIP_H}),
        ("sdxl_base", "sdxl", SDXL, {"clip_l": CLIP_L, "clip_g": OPEN_CLIP_BIGG}),
    ],
)
def test_released_checkpoints_are_detected_from_shapes(name, family, unet, encoders) -> None:
    layout = detect_layout(shapes_of(name), path=f"{name}.safetensors")
    assert layout.family.name == family
    assert layout.unet_config == unet
    assert layout.vae_config == VAEConfig()
    assert {te.slot.name: te.config for te in layout.text_encoders} == encoders


@pytest.mark.parametrize("name", ["sd15", "sd21v", "sdxl_base"])
def test_every_module_built_from_the_detected_config_matches_the_file_exactly(name: str) -> None:
    # check_layout builds UNet, VAE and text encoders on the meta device and compares names and shapes strictly;
    # the DDPM buffers and model_ema scalars of the released files are the only tensors it may skip.
    layout = check_layout(shapes_of(name), path=f"{name}.safetensors")
    with torch.device("meta"):
        unet_shapes = {k: tuple(v.shape) for k, v in UNetModel(layout.unet_config).state_dict().items()}
        vae_shapes = {k: tuple(v.shape) for k, v in AutoencoderKL(layout.vae_config).state_dict().items()}
    assert unet_shapes == manifest_shapes(name, "model.diffusion_model.")
    assert vae_shapes == manifest_shapes(name, "first_stage_model.")
    for te in layout.text_encoders:
        module = build_text_encoder(te.config, device="meta")
        written = {k: tuple(v.shape) for k, v in text_checkpoint_state_dict(module, te.slot.prefix, te.config).items()}
        in_file = {k: v for k, v in shapes_of(name).items() if k.startswith(te.slot.prefix)}
        assert {k: v for k, v in in_file.items() if not k.endswith("logit_scale")} == written


def test_sdxl_v_pred_marker_selects_v_prediction() -> None:
    shapes = shapes_of("sdxl_base") | {"v_pred": ()}
    assert detect_layout(shapes, path="x.safetensors").family.prediction == "v"
    assert detect_layout(shapes_of("sdxl_base"), path="x.safetensors").family.prediction == "eps"


def test_text_encoder_of_another_family_is_rejected() -> None:
    shapes = {k: v for k, v in shapes_of("sd15").items() if not k.startswith("cond_stage_model.")}
    shapes |= {k: v for k, v in shapes_of("sd21v").items() if k.startswith("cond_stage_model.")}
    with pytest.raises(UnknownCheckpoint, match=r"sd1 but text-encoder tensors are not under cond_stage_model\.transformer\."):
        detect_layout(shapes, path="mixed.safetensors")


def test_unet_only_file_is_detected_without_vae_or_text_encoder() -> None:
    shapes = manifest_shapes("sd15")
    unet_only = {k: v for k, v in shapes.items() if k.startswith("model.diffusion_model.")}
    layout = check_layout(unet_only, path="unet.safetensors")
    assert layout.family.name == "sd1" and layout.vae_config is None and layout.text_encoders == ()


def test_unknown_layouts_name_the_reason() -> None:
    with pytest.raises(UnknownCheckpoint, match="diffusers-layout UNet") as info:
        detect_layout({"conv_in.weight": (320, 4, 3, 3), "down_blocks.0.x": (1,)}, path="d.safetensors")
    assert info.value.path == Path("d.safetensors")
    with pytest.raises(UnknownCheckpoint, match="Flux"):
        detect_layout({"double_blocks.0.img_attn.qkv.weight": (9, 3)}, path="f.safetensors")
    with pytest.raises(UnknownCheckpoint, match="no UNet under model.diffusion_model."):
        detect_layout({"something.weight": (3,)}, path="s.safetensors")


# --- tiny real-layout files ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_sd1_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def test_tiny_checkpoint_loads_back_with_identical_tensors(tiny) -> None:
    loaded = load_checkpoint(tiny.path)
    assert loaded.family.name == "sd1" and loaded.family.prediction == "eps"
    assert loaded.unet_config == tiny.unet.config and loaded.vae_config == tiny.vae.config
    assert list(loaded.text_encoders) == ["clip_l"]
    pairs = [(tiny.unet, loaded.unet), (tiny.vae, loaded.vae), (tiny.text_encoder, loaded.text_encoders["clip_l"].module)]
    for written, read in pairs:
        a, b = written.state_dict(), read.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not read.training and not any(p.requires_grad for p in read.parameters())


def test_loaded_tiny_model_runs_unet_and_vae(tiny) -> None:
    loaded = load_checkpoint(tiny.path)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 77, loaded.unet_config.context_dim)
    with torch.no_grad():
        out = loaded.unet(latent, torch.tensor([500.0]), context)
        expected = tiny.unet(latent, torch.tensor([500.0]), context)
        image = loaded.vae.decode(latent)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert image.shape == (1, 3, 64, 64)


def test_detect_checkpoint_returns_the_written_configurations(tiny) -> None:
    layout = detect_checkpoint(tiny.path)
    assert layout.family.name == "sd1"
    assert (layout.unet_config, layout.vae_config) == (tiny.unet.config, tiny.vae.config)
    assert [te.config for te in layout.text_encoders] == [tiny.text_encoder.config]


def rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a checkpoint through `edit(dict) -> dict` of its tensors."""
    from safetensors.torch import load_file

    save_atomic(dst, edit(dict(load_file(src))))
    return dst


def test_missing_key_is_reported_by_module_with_the_key_and_count(tiny, tmp_path) -> None:
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    path = rewrite(tiny.path, tmp_path / "missing.safetensors", lambda t: {k: v for k, v in t.items() if k != key})
    with pytest.raises(CheckpointMismatch) as info:
        load_checkpoint(path)
    err = info.value
    assert err.module == "UNet" and err.missing == [key.removeprefix("model.diffusion_model.")]
    assert "missing.safetensors" in str(err) and "1 missing" in str(err)


def test_wrong_shape_is_reported_with_file_and_model_shapes(tiny, tmp_path) -> None:
    key = "first_stage_model.decoder.mid.attn_1.q.weight"

    def edit(t):
        return t | {key: torch.zeros(t[key].shape[0], t[key].shape[1])}  # 2-D instead of a 1x1 conv

    path = rewrite(tiny.path, tmp_path / "shape.safetensors", edit)
    with pytest.raises(CheckpointMismatch, match=r"wrong shape .*decoder\.mid\.attn_1\.q\.weight: file \[32, 32\] vs model \[32, 32, 1, 1\]") as info:
        load_checkpoint(path)
    assert info.value.module == "VAE"


def test_known_extras_are_ignored_but_stray_tensors_are_not(tiny, tmp_path) -> None:
    extras = {"betas": torch.zeros(1000), "alphas_cumprod": torch.zeros(1000), "model_ema.decay": torch.tensor(0.9999),
              "model_ema.num_updates": torch.tensor(3, dtype=torch.int32)}
    ok = rewrite(tiny.path, tmp_path / "extras.safetensors", lambda t: t | extras)
    assert load_checkpoint(ok).family.name == "sd1"
    bad = rewrite(tiny.path, tmp_path / "stray.safetensors", lambda t: t | {"embedding_manager.x": torch.zeros(2)})
    with pytest.raises(CheckpointMismatch, match="1 unexpected \\(embedding_manager.x\\)"):
        load_checkpoint(bad)


def test_truncated_file_is_refused_before_loading(tiny, tmp_path) -> None:
    data = tiny.path.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match="truncated"):
        load_checkpoint(path)


def test_non_safetensors_and_pickle_files_are_refused(tmp_path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.raises(CheckpointFormatError, match="not a .safetensors file"):
        load_checkpoint(garbage)
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"whatever")
    with pytest.raises(CheckpointFormatError, match="pickles"):
        load_checkpoint(pickle)
    with pytest.raises(CheckpointFormatError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_fp16_file_becomes_fp32_on_cpu_unless_a_dtype_is_asked(tmp_path) -> None:
    tiny = write_tiny_sd1_checkpoint(tmp_path / "a.safetensors")
    half = rewrite(tiny.path, tmp_path / "half.safetensors",
                  lambda t: {k: (v.half() if v.is_floating_point() else v) for k, v in t.items()})
    assert read_header(half).tensors["first_stage_model.quant_conv.weight"].dtype == "F16"
    loaded = load_checkpoint(half)
    assert loaded.unet.dtype == torch.float32 and loaded.vae.dtype == torch.float32
    torch.testing.assert_close(loaded.unet.out[2].weight, tiny.unet.out[2].weight.half().float())
    assert load_checkpoint(half, dtype=torch.bfloat16).unet.dtype == torch.bfloat16


def test_save_refuses_models_that_would_not_load_back(tmp_path) -> None:
    unet_cfg, vae_cfg, text_cfg = tiny_configs()
    four_heads = UNetConfig(**{**unet_cfg.__dict__, "num_heads": 4})
    with pytest.raises(ValueError, match="would not load back"):
        save_sd1_checkpoint(tmp_path / "x.safetensors", unet=UNetModel(four_heads), vae=AutoencoderKL(vae_cfg),
                            text_encoder=build_text_encoder(text_cfg))
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic_and_keeps_metadata(tmp_path) -> None:
    tiny = write_tiny_sd1_checkpoint(tmp_path / "m.safetensors", metadata={"chisel.note": "tiny"})
    assert read_header(tiny.path).metadata == {"chisel.note": "tiny"}
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind


# --- SD2 eps / v -----------------------------------------------------------------------------------------------------


def write_tiny_sd2(path: Path, bias_std: float) -> Path:
    unet_cfg = UNetConfig(model_channels=64, channel_mult=(1, 1), num_res_blocks=1, transformer_depth=(1, 1),
                          transformer_depth_middle=1, transformer_depth_output=(1, 1), context_dim=64,
                          num_heads=None, num_head_channels=64, use_linear_in_transformer=True)
    text_cfg = TextEncoderConfig("open_clip", width=64, layers=1, heads=1, intermediate=256, projection_dim=64,
                                 activation="gelu", pad_token=0)
    torch.manual_seed(0)
    unet, vae, te = UNetModel(unet_cfg), AutoencoderKL(VAEConfig(ch=32, ch_mult=(1,), num_res_blocks=1)), build_text_encoder(text_cfg)
    tensors = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    probe = "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.norm1.bias"
    tensors[probe] = torch.randn(64, generator=torch.Generator().manual_seed(1)) * bias_std
    tensors |= {"first_stage_model." + k: v for k, v in vae.state_dict().items()}
    tensors |= text_checkpoint_state_dict(te, "cond_stage_model.model.", text_cfg)
    save_atomic(path, tensors)
    return path


def test_sd2_prediction_follows_the_norm_bias_spread(tmp_path) -> None:
    v_model = load_checkpoint(write_tiny_sd2(tmp_path / "v.safetensors", bias_std=0.3))
    eps_model = detect_checkpoint(write_tiny_sd2(tmp_path / "eps.safetensors", bias_std=0.01))
    assert v_model.family.name == "sd2" and v_model.family.prediction == "v"
    assert eps_model.family.prediction == "eps"
    assert v_model.unet_config.num_head_channels == 64 and "clip_h" in v_model.text_encoders


# --- standalone VAE files --------------------------------------------------------------------------------------------


def test_vae_file_loads_from_checkpoint_prefix_and_bare_keys(tiny, tmp_path) -> None:
    from_full = load_vae_file(tiny.path)
    bare = rewrite(tiny.path, tmp_path / "vae.safetensors",
                   lambda t: {k.removeprefix("first_stage_model."): v for k, v in t.items()
                              if k.startswith("first_stage_model.")})
    from_bare = load_vae_file(bare)
    for loaded in (from_full, from_bare):
        assert loaded.config == tiny.vae.config
        assert all(torch.equal(a, b) for a, b in zip(loaded.vae.state_dict().values(), tiny.vae.state_dict().values()))


def to_diffusers_vae_name(key: str, levels: int) -> str:
    """Inverse of the loader's mapping, written independently for the test (ldm -> diffusers names)."""
    key = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", key)
    key = re.sub(r"^(encoder|decoder)\.mid\.block_(\d)\.", lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.", key)
    key = re.sub(r"^(encoder|decoder)\.mid\.attn_1\.norm\.", r"\1.mid_block.attentions.0.group_norm.", key)
    key = re.sub(r"^(encoder|decoder)\.mid\.attn_1\.(q|k|v)\.", r"\1.mid_block.attentions.0.to_\2.", key)
    key = re.sub(r"^(encoder|decoder)\.mid\.attn_1\.proj_out\.", r"\1.mid_block.attentions.0.to_out.0.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", key)
    key = re.sub(r"^decoder\.up\.(\d+)\.block\.", lambda m: f"decoder.up_blocks.{levels - 1 - int(m[1])}.resnets.", key)
    key = re.sub(r"^decoder\.up\.(\d+)\.upsample\.",
                 lambda m: f"decoder.up_blocks.{levels - 1 - int(m[1])}.upsamplers.0.", key)
    return key.replace(".nin_shortcut.", ".conv_shortcut.")


def test_diffusers_vae_manifest_maps_onto_the_ldm_vae_exactly() -> None:
    component = load_manifest("sd15_diffusers")["components"]["vae/diffusion_pytorch_model.safetensors"]
    ldm = manifest_shapes("sd15", "first_stage_model.")
    mapped = {to_diffusers_vae_name(k, 4): v for k, v in ldm.items()}
    attention_2d = {k: v[:2] if ".attentions.0.to_" in k and k.endswith(".weight") else v for k, v in mapped.items()}
    assert attention_2d == {k: tuple(v) for k, v in component["tensors"].items()}


def test_diffusers_layout_vae_file_loads_with_identical_weights(tiny, tmp_path) -> None:
    levels = len(tiny.vae.config.ch_mult)

    def to_diffusers(t):
        out = {}
        for k, v in t.items():
            if k.startswith("first_stage_model."):
                name = to_diffusers_vae_name(k.removeprefix("first_stage_model."), levels)
                out[name] = v.flatten(1) if ".attentions.0.to_" in name and name.endswith(".weight") else v
        return out

    path = rewrite(tiny.path, tmp_path / "diffusers_vae.safetensors", to_diffusers)
    loaded = load_vae_file(path)
    assert loaded.config == tiny.vae.config
    expected = tiny.vae.state_dict()
    got = loaded.vae.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def test_vae_loader_rejects_a_file_without_a_vae(tmp_path) -> None:
    path = tmp_path / "nothing.safetensors"
    save_atomic(path, {"foo.weight": torch.zeros(2)})
    with pytest.raises(UnknownCheckpoint, match="not a VAE"):
        load_vae_file(path)
