"""Strict load of every flow-model manifest: our modules built on the meta device from the configuration detected
in the released files' names and shapes have exactly those names and shapes (tests/fixtures/manifests_flow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import CheckpointMismatch, detect_vae_config
from diffusion.families import FLUX
from diffusion.flux import FluxConfig
from diffusion.model_files import check_diffusion_model, check_text_encoder_file
from diffusion.t5 import DUPLICATE_EMBEDDING, T5Config, T5Encoder
from diffusion.text_encoders import build_text_encoder
from diffusion.vae import AutoencoderKL

MANIFESTS = Path(__file__).parents[1] / "fixtures" / "manifests_flow"


def _shapes(name: str) -> dict[str, tuple[int, ...]]:
    manifest = json.loads((MANIFESTS / f"{name}.json").read_text())
    shapes = {k: tuple(v) for k, v in manifest["tensors"].items()}
    assert len(shapes) == manifest["key_count"]
    return shapes


@pytest.mark.parametrize("name, guidance", [("flux1_dev", True), ("flux1_schnell", False)])
def test_flux_release_files(name: str, guidance: bool) -> None:
    shapes = _shapes(name)
    layout = check_diffusion_model(shapes, path=f"{name}.safetensors")
    assert layout.family is FLUX and layout.prefix == ""
    assert layout.config == FluxConfig(guidance_embed=guidance)  # 3072 wide, 24 heads, 19 + 38 blocks
    assert layout.sampling.shift == (1.15 if guidance else 1.0)
    with torch.device("meta"):
        module = layout.build()
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == shapes
    # The same under a checkpoint's prefix.
    prefixed = {"model.diffusion_model." + k: v for k, v in shapes.items()}
    assert check_diffusion_model(prefixed, path="x.safetensors").config == layout.config


def test_a_missing_block_tensor_is_named() -> None:
    shapes = _shapes("flux1_dev")
    del shapes["double_blocks.3.img_attn.qkv.bias"]
    with pytest.raises(CheckpointMismatch, match="double_blocks.3.img_attn.qkv.bias"):
        check_diffusion_model(shapes, path="broken.safetensors")


def test_flux_ae_is_the_kl_vae_without_quant_convs() -> None:
    shapes = _shapes("flux_ae")
    config = detect_vae_config(shapes, path="ae.safetensors", prefix="")
    assert (config.z_channels, config.embed_dim, config.use_quant_conv, config.ch_mult) == (16, 16, False, (1, 2, 4, 4))
    with torch.device("meta"):
        vae = AutoencoderKL(config)
    assert {k: tuple(v.shape) for k, v in vae.state_dict().items()} == shapes


def test_clip_l_and_clip_g_files() -> None:
    for name, kind, width, layers in (("clip_l", "clip_l", 768, 12), ("clip_g", "clip_g", 1280, 32)):
        shapes = _shapes(name)
        found, config = check_text_encoder_file(shapes, path=f"{name}.safetensors")
        assert (found, config.width, config.layers) == (kind, width, layers)
        module = build_text_encoder(config, device="meta")
        own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert own == {k: v for k, v in shapes.items() if not k.endswith("position_ids")}


def test_t5xxl_file() -> None:
    shapes = _shapes("t5xxl_fp16")
    kind, config = check_text_encoder_file(shapes, path="t5xxl_fp16.safetensors")
    assert kind == "t5xxl" and config == T5Config()
    with torch.device("meta"):
        module = T5Encoder(config)
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    # The file's second copy of the token embedding is the only name the module does not own.
    assert own == {k: v for k, v in shapes.items() if k != DUPLICATE_EMBEDDING}
    assert shapes[DUPLICATE_EMBEDDING] == shapes["shared.weight"]


def test_sd35_medium_file() -> None:
    from diffusion.families import SD3
    from diffusion.mmdit import MMDiTConfig

    shapes = _shapes("sd35_medium")
    model_shapes = {k: v for k, v in shapes.items() if k.startswith("model.diffusion_model.")}
    layout = check_diffusion_model(model_shapes, path="sd3.5_medium.safetensors")
    assert layout.family is SD3 and layout.sampling.shift == 3.0
    assert layout.config == MMDiTConfig()  # 1536 wide, 24 heads, 24 blocks, MMDiT-X in 0-12, pos table 384²
    with torch.device("meta"):
        module = layout.build()
    assert {"model.diffusion_model." + k: tuple(v.shape) for k, v in module.state_dict().items()} == model_shapes
    vae_shapes = {k[len("first_stage_model."):]: v for k, v in shapes.items() if k.startswith("first_stage_model.")}
    assert vae_shapes == _shapes("flux_ae")  # the same 16-channel VAE as Flux's ae.safetensors
    assert len(model_shapes) + len(vae_shapes) == len(shapes)
