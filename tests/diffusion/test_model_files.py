"""Loading diffusion-model and text-encoder files on their own: weight storage (fp8 files stay fp8, UNETLoader's
fp8 options), and the typed errors for files that are not what they should be."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion.checkpoint import CheckpointMismatch, UnknownCheckpoint
from diffusion.model_files import load_diffusion_model, load_text_encoder_file
from tests.diffusion.tiny_flow_models import write_tiny_flux_parts


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return write_tiny_flux_parts(tmp_path_factory.mktemp("files"))


def _velocity(module: torch.nn.Module) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x, ctx, y = (torch.randn(1, 16, 4, 4, generator=gen), torch.randn(1, 3, 32, generator=gen),
                 torch.randn(1, 32, generator=gen))
    with torch.no_grad():
        return module(x, torch.tensor([0.6]), ctx, y=y, guidance=torch.tensor([3.5]))


def test_fp8_storage_options_and_fp8_files(parts, tmp_path):
    default = load_diffusion_model(parts.flux_path)
    assert default.storage is None and default.module.img_in.weight.dtype == torch.float32
    reference = _velocity(default.module)
    for option, dtype in (("fp8_e4m3fn", torch.float8_e4m3fn), ("fp8_e4m3fn_fast", torch.float8_e4m3fn),
                          ("fp8_e5m2", torch.float8_e5m2)):
        loaded = load_diffusion_model(parts.flux_path, weight_dtype=option)
        module = loaded.module
        assert loaded.storage == dtype and module.img_in.weight.dtype == dtype
        assert module.img_in.bias.dtype == torch.float32  # biases and norms keep the compute dtype
        assert module.double_blocks[0].img_attn.norm.query_norm.scale.dtype == torch.float32
        out = _velocity(module)
        assert out.dtype == torch.float32
        assert 0 < (out - reference).norm() / reference.norm() < 0.2
    # A file stored in fp8 (e.g. flux1-dev-fp8) stays fp8 in memory without asking.
    fp8_file = tmp_path / "fp8.safetensors"
    save_file({k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in load_file(parts.flux_path).items()},
              fp8_file)
    loaded = load_diffusion_model(fp8_file)
    assert loaded.storage == torch.float8_e4m3fn and loaded.module.txt_in.weight.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(_velocity(loaded.module),
                               _velocity(load_diffusion_model(parts.flux_path, weight_dtype="fp8_e4m3fn").module))


def test_wrong_files_raise_typed_errors(parts, tmp_path):
    with pytest.raises(UnknownCheckpoint, match="not a Flux"):
        load_diffusion_model(parts.vae_path)
    broken = tmp_path / "broken.safetensors"
    tensors = load_file(parts.flux_path)
    del tensors["single_blocks.1.linear2.bias"]
    save_file(tensors, broken)
    with pytest.raises(CheckpointMismatch, match="single_blocks.1.linear2.bias"):
        load_diffusion_model(broken)
    with pytest.raises(UnknownCheckpoint, match="not a CLIP or T5"):
        load_text_encoder_file(parts.vae_path)
    with pytest.raises(ValueError, match="weight_dtype"):
        load_diffusion_model(parts.flux_path, weight_dtype="int4")  # type: ignore[arg-type]


def test_text_encoder_files_keep_the_file_weights(parts):
    t5 = load_text_encoder_file(parts.t5_path)
    assert t5.kind == "t5xxl" and t5.tokenizer is not None
    torch.testing.assert_close(t5.module.shared.weight, parts.t5.shared.weight)
    clip = load_text_encoder_file(parts.clip_l_path)
    assert clip.kind == "clip_l" and clip.tokenizer is None
    torch.testing.assert_close(clip.module.text_model.final_layer_norm.weight,
                               parts.clip_l.text_model.final_layer_norm.weight)
