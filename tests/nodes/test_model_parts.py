"""The flow families' latent formats and EmptySD3LatentImage against ComfyUI 0.8.0's values
(tests/fixtures/comfyui_numerics_flow/flow_latent_formats.json), and the sampling nodes' tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusion.families import FLUX, SD3
from diffusion.flow_sampling import FluxSampling, ShiftedFlowSampling
from diffusion.handles import Model
from nodes.model_parts import (
    LATENT_RGB,
    EmptySD3LatentImage,
    ModelSamplingAuraFlow,
    ModelSamplingFlux,
    ModelSamplingSD3,
)

FORMATS = json.loads((Path(__file__).parents[1] / "fixtures" / "comfyui_numerics_flow" /
                      "flow_latent_formats.json").read_text())


@pytest.mark.parametrize("family, key", [(FLUX, "Flux"), (SD3, "SD3")])
def test_latent_format_constants(family, key):
    fmt = FORMATS[key]
    assert (family.latent_scale_factor, family.latent_shift_factor) == (fmt["scale_factor"], fmt["shift_factor"])
    assert family.latent_channels == fmt["latent_channels"]
    rgb = LATENT_RGB[family.name]
    assert [list(r) for r in rgb.factors] == fmt["latent_rgb_factors"]
    assert list(rgb.bias) == fmt["latent_rgb_factors_bias"]
    x = torch.linspace(-1, 1, 16).reshape(1, 16, 1, 1)
    process_in = (x - family.latent_shift_factor) * family.latent_scale_factor
    torch.testing.assert_close(process_in.flatten(), torch.tensor(fmt["example"]["process_in"]))
    process_out = x / family.latent_scale_factor + family.latent_shift_factor
    torch.testing.assert_close(process_out.flatten(), torch.tensor(fmt["example"]["process_out"]))


def test_empty_sd3_latent_image():
    expected = FORMATS["EmptySD3LatentImage"]
    (latent,) = EmptySD3LatentImage.run(None, width=1024, height=1024, batch_size=2)
    assert list(latent.samples.shape) == expected["shape"] and latent.samples.dtype == torch.float32
    assert expected["all_zero"] and torch.count_nonzero(latent.samples) == 0


def test_model_sampling_nodes_replace_the_table_only():
    model = Model(unet=torch.nn.Identity(), family=FLUX, sampling=FluxSampling(1.15))
    (flux,) = ModelSamplingFlux.run(None, model=model, max_shift=1.15, base_shift=0.5, width=512, height=512)
    assert isinstance(flux.sampling, FluxSampling) and flux.sampling.shift == pytest.approx(0.63)
    assert flux.unet is model.unet and model.sampling.shift == 1.15
    (sd3,) = ModelSamplingSD3.run(None, model=model, shift=6.0)
    assert isinstance(sd3.sampling, ShiftedFlowSampling) and (sd3.sampling.shift, sd3.sampling.multiplier) == (6, 1000)
    (aura,) = ModelSamplingAuraFlow.run(None, model=model, shift=1.73)
    assert (aura.sampling.shift, aura.sampling.multiplier) == (1.73, 1.0)
