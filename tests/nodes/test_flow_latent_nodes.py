"""AddNoise and the inspect nodes on Flux / SD3 latents: the model space is (raw − shift)·scale there, as KSampler's
(nodes.ksampler.to_model_space / to_raw_space, ComfyUI's process_latent_in / process_latent_out), not raw·scale."""

from __future__ import annotations

import pytest
import torch

import nodes.inspect_frames as inspect_frames
from diffusion.families import FLUX, SD3
from diffusion.flow_sampling import FluxSampling, ShiftedFlowSampling
from diffusion.handles import Model
from diffusion.memory import ModelManager
from diffusion.noise import initial_noise
from diffusion.sampling_values import RandomNoise
from diffusion.schedules import scheduler_sigmas
from nodes.context import RunContext
from nodes.custom_sampling import AddNoise
from nodes.inspect import NoiseToTimestep
from nodes.services import Services
from nodes.types import Latent
from server.config import ServerConfig
from server.paths import ServerFolders

MODELS = {"flux": Model(unet=torch.nn.Identity(), family=FLUX, sampling=FluxSampling(1.15)),
          "sd3": Model(unet=torch.nn.Identity(), family=SD3, sampling=ShiftedFlowSampling(3.0))}


def _raw_latent(model: Model) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    channels = model.family.latent_channels
    return torch.randn((1, channels, 4, 4), generator=gen) * 0.5 + model.family.latent_shift_factor


@pytest.mark.parametrize("kind", list(MODELS))
def test_add_noise_works_in_the_flow_models_latent_space(kind: str) -> None:
    model = MODELS[kind]
    scale, shift = model.family.latent_scale_factor, model.family.latent_shift_factor
    assert shift != 0
    sigmas = scheduler_sigmas(model.sampling, "simple", 4)[1:]
    sigma = (sigmas[0] - sigmas[-1]).abs()
    raw = _raw_latent(model)
    (noisy,) = AddNoise.run(None, model, RandomNoise(5), sigmas, Latent(raw))
    noise = initial_noise(tuple(raw.shape), 5)
    # ComfyUI: process_latent_out(noise_scaling(σ, noise, process_latent_in(raw)))
    expected = (sigma * noise + (1 - sigma) * ((raw - shift) * scale)) / scale + shift
    torch.testing.assert_close(noisy.samples, expected, rtol=1e-6, atol=1e-6)

    # an empty latent is not shifted in (ComfyUI skips process_latent_in for it) but always shifted out
    (from_empty,) = AddNoise.run(None, model, RandomNoise(5), sigmas, Latent(torch.zeros_like(raw)))
    torch.testing.assert_close(from_empty.samples, sigma * noise / scale + shift, rtol=1e-6, atol=1e-6)


@pytest.fixture()
def ctx(tmp_path) -> RunContext:
    config = ServerConfig(base_dir=tmp_path, load_custom_nodes=False)
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    return RunContext(node_id="1", prompt_id="p",
                      services=Services(folders=folders, models=ModelManager(torch.device("cpu"))))


@pytest.mark.parametrize("kind", list(MODELS))
def test_noise_to_timestep_noises_and_decodes_a_flow_latent_as_ksampler_does(kind, ctx, monkeypatch) -> None:
    model = MODELS[kind]
    decoded: list[torch.Tensor] = []

    def fake_decode(models, vae, raw, *, check_interrupted=None):  # noqa: ANN001, ANN202
        decoded.append(raw.clone())
        return torch.zeros((raw.shape[0], raw.shape[2] * 8, raw.shape[3] * 8, 3))

    monkeypatch.setattr(inspect_frames, "decode_images", fake_decode)
    scale, shift = model.family.latent_scale_factor, model.family.latent_shift_factor
    raw = _raw_latent(model)
    steps, step, seed = 4, 2, 9
    result = NoiseToTimestep.run(ctx, model, seed, steps, "simple", None, step, 0.0, None, Latent(raw))
    noised = result.values[0].samples
    sigma = scheduler_sigmas(model.sampling, "simple", steps)[steps - step]
    noise = initial_noise(tuple(raw.shape), seed)
    model_space = sigma * noise + (1 - sigma) * ((raw - shift) * scale)  # KSampler's start: CONST noise_scaling
    torch.testing.assert_close(noised, model_space / scale + shift, rtol=1e-6, atol=1e-6)
    # the clean frame decodes the latent itself (shift undone), not raw − shift
    frames = decoded[0]
    torch.testing.assert_close(frames[0], raw[0], rtol=1e-6, atol=1e-6)
