"""T2I-adapters: full-size layouts (full, light, SDXL diffusers) load strictly, a reduced random file loads
through the ControlNet loader's dispatch, its features land on the UNet's input blocks and change the sample,
are computed once per run, and strength 0 changes nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import UnknownCheckpoint
from diffusion.controlnet import AppliedControl, T2IAdapter, check_names, load_control_file
from diffusion.model_sampling import DiscreteSampling
from diffusion.noise import initial_noise
from diffusion.safetensors_io import save_atomic
from diffusion.sampling_pipeline import sample_latent
from diffusion.schedules import sampler_sigmas
from diffusion.t2i_adapter import LoadedT2IAdapter, T2IAdapterConfig, T2IAdapterModel, detect_t2i_adapter
from diffusion.unet import UNetConfig, UNetModel
from diffusion.values import CondEntry, Conditioning

MANIFESTS = Path(__file__).parents[1] / "fixtures" / "manifests_controlnet"
SAMPLING = DiscreteSampling.linear(prediction="eps")
# An SD1-shaped UNet (4 levels, 2 ResBlocks each: 12 input blocks) at a tenth of the width.
UNET = UNetConfig(model_channels=32, channel_mult=(1, 2, 4, 4), num_res_blocks=2, transformer_depth=(1, 1, 1, 0),
                  transformer_depth_middle=1, transformer_depth_output=(0, 1, 1, 1), context_dim=32, num_heads=8)


@pytest.mark.parametrize("name, kind, hint_channels", [
    ("t2i_adapter_sd15_full.json", "full", 1),
    ("t2i_adapter_sd14_full_conv.json", "full", 3),
    ("t2i_adapter_sd14_light.json", "light", 3),
    ("t2i_adapter_sdxl_diffusers.json", "full_xl", 1),
])
def test_full_size_adapters_match_the_module_built_on_meta_exactly(name, kind, hint_channels):
    shapes = {k: tuple(v) for k, v in json.loads((MANIFESTS / name).read_text())["tensors"].items()}
    config, names = detect_t2i_adapter(shapes, path=name)
    assert (config.kind, config.hint_channels) == (kind, hint_channels)
    with torch.device("meta"):
        module = T2IAdapterModel(config)
    check_names(module, {names[k]: v for k, v in shapes.items()}, Path(name), "T2I-adapter")


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        module = T2IAdapterModel(T2IAdapterConfig(kind="full", cin=64, width=32, ksize=1))
    path = tmp_path_factory.mktemp("t2i") / "t2iadapter_canny_tiny.safetensors"
    save_atomic(path, module.state_dict())
    return path


@pytest.fixture(scope="module")
def unet() -> UNetModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return UNetModel(UNET).eval().requires_grad_(False)


def _sample(unet: UNetModel, control: AppliedControl | None) -> torch.Tensor:
    shape = (1, 4, 32, 32)
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    positive = Conditioning((CondEntry(cross_attn=text, control=control),))
    negative = Conditioning((CondEntry(cross_attn=text * 0.5, control=control),))
    with torch.inference_mode():
        return sample_latent(apply_model=unet, sampling=SAMPLING, latent=torch.zeros(shape),
                             noise=initial_noise(shape, 2), sigmas=sampler_sigmas(SAMPLING, "normal", 3,
                                                                                  sampler_name="euler"),
                             positive=positive, negative=negative, cfg=3.0, sampler_name="euler", seed=2,
                             extra_conds=lambda entry, latent: {})


def test_an_adapter_file_loads_and_its_features_reach_the_input_blocks(adapter_file, unet, caplog):
    loaded = load_control_file(adapter_file)
    assert isinstance(loaded, LoadedT2IAdapter) and loaded.config.hint_channels == 1
    adapter = T2IAdapter(model=loaded.model, name=adapter_file.name)
    calls: list[tuple[int, ...]] = []
    hook = loaded.model.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    hint = torch.zeros(1, 3, 256, 256)
    hint[..., 64:192, 120:136] = 1.0  # an RGB hint is averaged to grey for a one-channel adapter
    try:
        with caplog.at_level(logging.WARNING, logger="diffusion.unet"):
            plain = _sample(unet, None)
            controlled = _sample(unet, AppliedControl(net=adapter, hint=hint))
        assert not [r for r in caplog.records if "does not fit" in r.getMessage()]  # every feature fitted
        assert calls == [(1, 1, 256, 256)]  # once per run (3 steps, positive and negative batched); one hint
        assert (controlled - plain).abs().max() > 1e-2
        assert torch.equal(_sample(unet, AppliedControl(net=adapter, hint=hint, strength=0.0)), plain)
    finally:
        hook.remove()


def test_a_file_that_is_neither_says_what_was_looked_for(tmp_path):
    save_atomic(tmp_path / "x.safetensors", {"foo.weight": torch.zeros(2)})
    with pytest.raises(UnknownCheckpoint, match="nor a T2I-adapter"):
        load_control_file(tmp_path / "x.safetensors")
