"""The KL autoencoder: checkpoint-identical names and shapes, encode/decode shapes, tiled decoding."""

from __future__ import annotations

import pytest
import torch

from diffusion.vae import AutoencoderKL, VAEConfig
from tests.diffusion.conftest import manifest_shapes

TINY = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1)


@pytest.mark.parametrize("manifest_name", ["sd15", "sd21v", "sdxl_base"])
def test_parameter_names_and_shapes_equal_the_released_checkpoint(manifest_name: str) -> None:
    expected = manifest_shapes(manifest_name, "first_stage_model.")
    with torch.device("meta"):
        model = AutoencoderKL(VAEConfig())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if expected[k] != v} == {}


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(TINY).eval()


def test_encode_gives_mean_and_clamped_logvar_at_the_downscaled_size() -> None:
    vae = tiny_vae()
    x = torch.rand(2, 3, 24, 40) * 2 - 1
    with torch.no_grad():
        mean, logvar = vae.encode(x)
    assert TINY.downscale == 2
    assert mean.shape == logvar.shape == (2, 4, 12, 20)
    assert logvar.min() >= -30 and logvar.max() <= 20


def test_decode_upscales_raw_latents_to_rgb() -> None:
    vae = tiny_vae()
    z = torch.randn(1, 4, 5, 7)
    with torch.no_grad():
        image = vae.decode(z)
    assert image.shape == (1, 3, 10, 14)
    assert torch.isfinite(image).all()


def test_full_size_sd_vae_downscales_by_eight() -> None:
    assert VAEConfig().downscale == 8


def test_tiled_decode_equals_plain_decode_when_one_tile_covers_the_latent() -> None:
    vae = tiny_vae()
    z = torch.randn(1, 4, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(vae.decode_tiled(z, tile=16, overlap=4), vae.decode(z))


def test_tiled_decode_covers_the_whole_image_and_stays_close_to_plain_decode() -> None:
    vae = tiny_vae()
    z = torch.randn(1, 4, 20, 28)
    with torch.no_grad():
        plain = vae.decode(z)
        tiled = vae.decode_tiled(z, tile=12, overlap=4)
    assert tiled.shape == plain.shape
    # Per-tile GroupNorm statistics make tiles differ, but the blend must stay in the same range everywhere.
    assert torch.isfinite(tiled).all()
    assert (tiled - plain).abs().mean() < plain.abs().mean()


def test_tiled_encode_returns_the_mean_at_latent_size() -> None:
    vae = tiny_vae()
    x = torch.rand(1, 3, 48, 40) * 2 - 1
    with torch.no_grad():
        tiled = vae.encode_tiled(x, tile=24, overlap=8)
        whole = vae.encode_tiled(x, tile=64, overlap=8)
        mean, _ = vae.encode(x)
    assert tiled.shape == (1, 4, 24, 20)
    torch.testing.assert_close(whole, mean)


def test_decode_runs_in_the_weight_dtype() -> None:
    vae = tiny_vae().to(torch.bfloat16)
    with torch.no_grad():
        assert vae.decode(torch.randn(1, 4, 4, 4)).dtype == torch.bfloat16
