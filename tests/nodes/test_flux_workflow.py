"""Flux.1 in parts, end to end on the CPU: tiny random files in the released layouts (tests/diffusion/
tiny_flow_models.py) load through UNETLoader, DualCLIPLoader (flux) and VAELoader and run txt2img through the real
registry and executor (KSampler; and SamplerCustomAdvanced with ModelSamplingFlux, fp8 weights); the sampled latent
equals a hand-written rectified-flow Euler loop over the same modules."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.flow_sampling import FluxSampling
from diffusion.flow_text import encode_flow_prompt
from diffusion.families import FLUX
from diffusion.memory import ModelManager
from diffusion.noise import initial_noise
from diffusion.schedules import scheduler_sigmas
from diffusion.t5 import T5Tokenizer
from diffusion.tokenizer import ClipTokenizer
from nodes.context import RunContext
from nodes.ksampler import SamplingRequest, sample
from nodes.model_parts import DualCLIPLoader, FluxGuidance, ModelMergeFlux1, UNETLoader
from server.compose import build_registry, build_services
from server.config import ServerConfig
from server.engine.cache import OutputCache, walk_sizeof
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from server.paths import ServerFolders
from tests.diffusion.tiny_flow_models import write_tiny_flux_checkpoint, write_tiny_flux_parts
from nodes.types import Latent


def _tensor_bytes(value):
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size(), 0
    return None


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    config = ServerConfig(base_dir=tmp_path_factory.mktemp("flux"), load_custom_nodes=False, bundled_models_dir=None)
    staging = tmp_path_factory.mktemp("parts")
    parts = write_tiny_flux_parts(staging)
    for folder, path in (("diffusion_models", parts.flux_path), ("unet", parts.schnell_path),
                         ("vae", parts.vae_path), ("text_encoders", parts.clip_l_path),
                         ("clip", parts.t5_path)):  # the legacy folder names ComfyUI keeps work too
        target = config.models_dir / folder
        target.mkdir(parents=True, exist_ok=True)
        (target / path.name).write_bytes(path.read_bytes())
    other = write_tiny_flux_parts(tmp_path_factory.mktemp("other"), seed=1)
    (config.models_dir / "diffusion_models" / "tiny-flux1-dev-b.safetensors").write_bytes(
        other.flux_path.read_bytes())
    (config.models_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_tiny_flux_checkpoint(config.models_dir / "checkpoints" / "tiny-flux1-dev-all-in-one.safetensors", parts)
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    registry, _ = build_registry(config, folders)
    services = build_services(config, folders, models=ModelManager(torch.device("cpu")))
    executor = Executor(registry, OutputCache(cpu_budget=1 << 30, gpu_budget=0, sizeof=walk_sizeof(_tensor_bytes)),
                        functools.partial(RunContext, services=services))

    def run(prompt: dict) -> list[np.ndarray]:
        outcome = executor.execute(validate_prompt(prompt, registry), prompt_id="p")
        assert outcome.status == "success", outcome.error
        return [np.asarray(Image.open(config.output_dir / i["subfolder"] / i["filename"]).convert("RGB"))
                for i in outcome.outputs["9"]["images"]]

    return {"run": run, "parts": parts, "services": services}


def _loaders(unet: str = "tiny-flux1-dev.safetensors", weight_dtype: str = "default") -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": weight_dtype}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "tiny-clip_l.safetensors",
                                                         "clip_name2": "tiny-t5xxl_fp16.safetensors",
                                                         "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-ae.safetensors"}},
    }


def ksampler_txt2img(guidance: float = 3.5, **loaders: str) -> dict:
    return {
        **_loaders(**loaders),
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in (snow:1.2)", "clip": ["2", 0]}},
        "5": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": guidance}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 2}},
        "8": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 3, "cfg": 1.0, "sampler_name": "euler",
                                                   "scheduler": "simple", "denoise": 1.0, "model": ["1", 0],
                                                   "positive": ["5", 0], "negative": ["6", 0],
                                                   "latent_image": ["7", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "flux"}},
    }


def test_ksampler_txt2img_runs_and_guidance_matters(env):
    images = env["run"](ksampler_txt2img())
    assert len(images) == 2 and images[0].shape == (48, 64, 3)
    assert not np.array_equal(images[0], images[1])  # two different noises
    again = env["run"](ksampler_txt2img())
    assert all(np.array_equal(a, b) for a, b in zip(images, again))
    other = env["run"](ksampler_txt2img(guidance=8.0))
    assert not np.array_equal(images[0], other[0])  # the guidance embedding reaches the model


def test_single_file_checkpoint_equals_the_parts(env):
    parts = env["run"](ksampler_txt2img())
    prompt = ksampler_txt2img()
    for node in ("1", "2", "3"):
        del prompt[node]
    prompt["0"] = {"class_type": "CheckpointLoaderSimple",
                   "inputs": {"ckpt_name": "tiny-flux1-dev-all-in-one.safetensors"}}
    prompt["4"]["inputs"]["clip"] = prompt["6"]["inputs"]["clip"] = ["0", 1]
    prompt["8"]["inputs"]["model"] = ["0", 0]
    prompt["10"]["inputs"]["vae"] = ["0", 2]
    single = env["run"](prompt)
    assert all(np.array_equal(a, b) for a, b in zip(parts, single))


def test_custom_sampling_with_model_sampling_flux_fp8_and_clip_text_encode_flux(env):
    prompt = {
        **_loaders(weight_dtype="fp8_e4m3fn"),
        "11": {"class_type": "ModelSamplingFlux", "inputs": {"model": ["1", 0], "max_shift": 1.15, "base_shift": 0.5,
                                                              "width": 64, "height": 48}},
        "4": {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip": ["2", 0], "clip_l": "a fox",
                                                              "t5xxl": "a red fox in the snow", "guidance": 3.5}},
        "12": {"class_type": "BasicGuider", "inputs": {"model": ["11", 0], "conditioning": ["4", 0]}},
        "13": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "14": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        "15": {"class_type": "BasicScheduler", "inputs": {"model": ["11", 0], "scheduler": "beta", "steps": 3,
                                                           "denoise": 1.0}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "8": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["13", 0], "guider": ["12", 0],
                                                                 "sampler": ["14", 0], "sigmas": ["15", 0],
                                                                 "latent_image": ["7", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["3", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "flux-custom"}},
    }
    images = env["run"](prompt)
    assert images[0].shape == (48, 64, 3) and images[0].std() > 0


def test_schnell_from_the_unet_folder(env):
    images = env["run"](ksampler_txt2img(unet="tiny-flux1-schnell.safetensors"))
    assert images[0].shape == (48, 64, 3)


def test_sampled_latent_equals_a_hand_written_euler_loop(env):
    """KSampler on a Flux model = σ0·noise, then x += v·(σ_next − σ) with v the model's velocity, then back to
    the raw VAE space with latent / 0.3611 + 0.1159 (checks the flow sampling, guidance, pooled y and latent format)."""
    parts, services = env["parts"], env["services"]
    ctx = RunContext(node_id="n", prompt_id="p", services=services)
    (model,) = UNETLoader.run(ctx, unet_name="tiny-flux1-dev.safetensors", weight_dtype="default")
    (clip,) = DualCLIPLoader.run(ctx, clip_name1="tiny-clip_l.safetensors",
                                 clip_name2="tiny-t5xxl_fp16.safetensors", type="flux")
    from nodes.model_parts import encode_flow

    (positive,) = FluxGuidance.run(ctx, conditioning=encode_flow(ctx, clip, {"clip_l": "a fox", "t5xxl": "a fox"}),
                                   guidance=4.0)
    latent = Latent(samples=torch.zeros(1, 16, 6, 8))
    sigmas = scheduler_sigmas(model.sampling, "simple", 3)
    out = sample(models=services.models, model=model, latent=latent, positive=positive, negative=positive,
                 request=SamplingRequest(seed=11, cfg=1.0, sampler_name="euler", sigmas=sigmas),
                 progress=lambda *a: None).samples

    encoded = encode_flow_prompt(FLUX, {"clip_l": "a fox", "t5xxl": "a fox"},
                                 encoders=[(FLUX.text_encoders[0], parts.clip_l), (FLUX.text_encoders[1], parts.t5)],
                                 clip_tokenizer=ClipTokenizer(), t5_tokenizer=T5Tokenizer())
    assert encoded.cond.shape == (1, 256, 32) and encoded.pooled.shape == (1, 32)
    torch.testing.assert_close(positive.entries[0].cross_attn, encoded.cond)
    x = initial_noise((1, 16, 6, 8), 11) * sigmas[0]
    with torch.no_grad():
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            v = parts.flux(x, s.reshape(1), encoded.cond, y=encoded.pooled, guidance=torch.tensor([4.0]))
            x = x + v * (s_next - s)
    torch.testing.assert_close(out, x / 0.3611 + 0.1159, rtol=1e-4, atol=1e-4)
    assert isinstance(model.sampling, FluxSampling) and model.sampling.shift == 1.15


def test_skip_layer_guidance(env):
    def with_slg(scale: float) -> dict:
        prompt = ksampler_txt2img()
        prompt["8"]["inputs"]["cfg"] = 2.0
        prompt["11"] = {"class_type": "SkipLayerGuidanceDiT", "inputs": {
            "model": ["1", 0], "double_layers": "0", "single_layers": "1", "scale": scale, "start_percent": 0.0,
            "end_percent": 1.0, "rescaling_scale": 0.0}}
        prompt["8"]["inputs"]["model"] = ["11", 0]
        return prompt

    plain = ksampler_txt2img()
    plain["8"]["inputs"]["cfg"] = 2.0
    base = env["run"](plain)
    assert all(np.array_equal(a, b) for a, b in zip(base, env["run"](with_slg(0.0))))
    guided = env["run"](with_slg(3.0))
    assert not np.array_equal(base[0], guided[0])
    simple = plain | {"11": {"class_type": "SkipLayerGuidanceDiTSimple", "inputs": {
        "model": ["1", 0], "double_layers": "0", "single_layers": "", "start_percent": 0.0, "end_percent": 1.0}}}
    simple["8"] = {**plain["8"], "inputs": {**plain["8"]["inputs"], "model": ["11", 0]}}
    assert not np.array_equal(base[0], env["run"](simple)[0])


def test_model_merge_flux1_takes_each_part_from_the_ratio(env):
    def merged(ratio: float, final_ratio: float) -> dict:
        prompt = ksampler_txt2img()
        prompt["12"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny-flux1-dev-b.safetensors",
                                                               "weight_dtype": "default"}}
        ratios = {i.name: ratio for i in ModelMergeFlux1.declared_inputs if i.name not in ("model1", "model2")}
        ratios["final_layer."] = final_ratio
        prompt["11"] = {"class_type": "ModelMergeFlux1", "inputs": {"model1": ["1", 0], "model2": ["12", 0], **ratios}}
        prompt["8"]["inputs"]["model"] = ["11", 0]
        return prompt

    first = env["run"](ksampler_txt2img())
    second = env["run"](ksampler_txt2img(unet="tiny-flux1-dev-b.safetensors"))
    ones, zeros = env["run"](merged(1.0, 1.0))[0].astype(int), env["run"](merged(0.0, 0.0))[0].astype(int)
    # A ratio is model1's share (ComfyUI's ModelMergeBlocks: add_patches(kp, 1 - ratio, ratio)): all ratios 1 is
    # model1, all 0 is model2; mixing per part gives a third model.
    pairs = [(ones, first[0]), (zeros, second[0])]
    assert all(np.abs(got - want).max() <= 1 for got, want in pairs)
    mixed = env["run"](merged(0.0, 1.0))[0].astype(int)
    assert np.abs(mixed - second[0]).max() > 1 and np.abs(mixed - first[0]).max() > 1


def test_disabled_guidance_and_t5_tokenizer_options_reach_the_model(env):
    base = env["run"](ksampler_txt2img())[0]
    disabled = ksampler_txt2img()
    disabled["5"] = {"class_type": "FluxDisableGuidance", "inputs": {"conditioning": ["4", 0]}}
    assert not np.array_equal(base, env["run"](disabled)[0])
    longer = ksampler_txt2img()
    longer["13"] = {"class_type": "T5TokenizerOptions", "inputs": {"clip": ["2", 0], "min_padding": 0,
                                                                  "min_length": 300}}
    longer["4"]["inputs"]["clip"] = ["13", 0]
    assert not np.array_equal(base, env["run"](longer)[0])  # 300 tokens instead of Flux's 256


def test_clip_loader_device_cpu_keeps_the_encoders_on_the_cpu(env):
    ctx = RunContext(node_id="n", prompt_id="p", services=env["services"])
    (clip,) = DualCLIPLoader.run(ctx, clip_name1="tiny-clip_l.safetensors", clip_name2="tiny-t5xxl_fp16.safetensors",
                                 type="flux", device="cpu")
    assert clip.cpu_only and all(next(m.parameters()).device.type == "cpu" for m in clip.modules)
    assert all(next(m.parameters()).dtype == torch.float32 for m in clip.modules)
    prompt = ksampler_txt2img()
    prompt["2"]["inputs"]["device"] = "cpu"
    assert all(np.array_equal(a, b) for a, b in zip(env["run"](ksampler_txt2img()), env["run"](prompt)))


def test_every_sampler_and_scheduler_runs_on_a_flow_model(env):
    """Each of ComfyUI's samplers and schedulers gives a finite latent on Flux (velocity prediction, σ in (0, 1])."""
    from diffusion.samplers import SAMPLER_NAMES
    from diffusion.schedules import SCHEDULER_NAMES, sampler_sigmas

    services = env["services"]
    ctx = RunContext(node_id="n", prompt_id="p", services=services)
    (model,) = UNETLoader.run(ctx, unet_name="tiny-flux1-dev.safetensors", weight_dtype="default")
    (clip,) = DualCLIPLoader.run(ctx, clip_name1="tiny-clip_l.safetensors",
                                 clip_name2="tiny-t5xxl_fp16.safetensors", type="flux")
    from nodes.model_parts import encode_flow

    cond = encode_flow(ctx, clip, {"clip_l": "a", "t5xxl": "a"})
    latent = Latent(samples=torch.zeros(1, 16, 4, 4))
    runs = [(s, "simple") for s in SAMPLER_NAMES] + [("euler", s) for s in SCHEDULER_NAMES]
    for sampler_name, scheduler in runs:
        sigmas = sampler_sigmas(model.sampling, scheduler, 3, sampler_name=sampler_name)
        out = sample(models=services.models, model=model, latent=latent, positive=cond, negative=cond,
                     request=SamplingRequest(seed=1, cfg=2.0, sampler_name=sampler_name, sigmas=sigmas),
                     progress=lambda *a: None, previews=False).samples
        assert torch.isfinite(out).all(), (sampler_name, scheduler)
