"""Model families: the per-family constants and SDXL's size-conditioning vector."""

from __future__ import annotations

import math

import torch

from diffusion.families import FAMILIES, SD1, SD2, SDXL, SDXL_REFINER, sdxl_adm, sdxl_refiner_adm


def sinusoid(value: float, dim: int = 256) -> list[float]:
    half = dim // 2
    freqs = [math.exp(-math.log(10000.0) * i / half) for i in range(half)]
    return [math.cos(value * f) for f in freqs] + [math.sin(value * f) for f in freqs]


def test_latent_scale_and_schedule_constants_per_family() -> None:
    assert SD1.latent_scale_factor == SD2.latent_scale_factor == 0.18215
    assert SDXL.latent_scale_factor == SDXL_REFINER.latent_scale_factor == 0.13025
    for family in FAMILIES.values():
        assert (family.linear_start, family.linear_end, family.num_timesteps) == (0.00085, 0.012, 1000)
        assert family.latent_channels == 4 and family.prediction == "eps"


def test_text_encoder_slots_follow_the_reference_conditioning() -> None:
    assert [(s.name, s.prefix, s.layer) for s in SD1.text_encoders] == [("clip_l", "cond_stage_model.transformer.", "last")]
    assert [(s.name, s.layer, s.hidden_norm) for s in SD2.text_encoders] == [("clip_h", -2, "final_ln")]
    assert [(s.name, s.layer, s.hidden_norm) for s in SDXL.text_encoders] == [("clip_l", -2, "raw"), ("clip_g", -2, "raw")]


def test_with_prediction_returns_a_new_family() -> None:
    v = SD2.with_prediction("v")
    assert v.prediction == "v" and SD2.prediction == "eps" and v.name == "sd2"


def test_sdxl_adm_is_pooled_then_six_size_embeddings() -> None:
    pooled = torch.randn(2, 1280)
    y = sdxl_adm(pooled, height=1024, width=768, crop_h=16, crop_w=0)
    assert y.shape == (2, 2816) and y.dtype == torch.float32
    torch.testing.assert_close(y[:, :1280], pooled)
    for i, value in enumerate([1024, 768, 16, 0, 1024, 768]):  # target size defaults to the original size
        expected = torch.tensor(sinusoid(float(value)))
        # fp32 like the reference: for arguments near 1024 the fp32 rounding of t·freq is about 6e-5.
        torch.testing.assert_close(y[0, 1280 + 256 * i : 1280 + 256 * (i + 1)], expected, rtol=0, atol=2e-4)
    torch.testing.assert_close(y[0, 1280:], y[1, 1280:])  # the size part is shared by the batch


def test_sdxl_refiner_adm_ends_with_the_aesthetic_score() -> None:
    y = sdxl_refiner_adm(torch.zeros(1, 1280), height=1024, width=1024, aesthetic_score=2.5)
    assert y.shape == (1, 2560)
    torch.testing.assert_close(y[0, -256:], torch.tensor(sinusoid(2.5)), rtol=1e-5, atol=1e-5)
