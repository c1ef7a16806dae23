"""SD3.5-medium-layout parts (tiny widths, the real key names, MMDiT-X blocks) end to end on the CPU: UNETLoader +
TripleCLIPLoader + CLIPTextEncodeSD3, and the single-file checkpoint with its VAE and three text encoders through
CheckpointLoaderSimple; both give the same image for the same weights."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.memory import ModelManager
from nodes.context import RunContext
from server.compose import build_registry, build_services
from server.config import ServerConfig
from server.engine.cache import OutputCache, walk_sizeof
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from server.paths import ServerFolders
from tests.diffusion.tiny_flow_models import write_tiny_flux_parts, write_tiny_sd3_parts


def _tensor_bytes(value):
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size(), 0
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = ServerConfig(base_dir=tmp_path_factory.mktemp("sd3"), load_custom_nodes=False, bundled_models_dir=None)
    staging = tmp_path_factory.mktemp("parts")
    flux = write_tiny_flux_parts(staging)
    sd3 = write_tiny_sd3_parts(staging, flux)
    for folder, path in (("diffusion_models", sd3.mmdit_path), ("vae", flux.vae_path),
                         ("text_encoders", flux.clip_l_path), ("text_encoders", sd3.clip_g_path),
                         ("text_encoders", sd3.t5_path), ("checkpoints", sd3.checkpoint_path)):
        target = config.models_dir / folder
        target.mkdir(parents=True, exist_ok=True)
        (target / path.name).write_bytes(path.read_bytes())
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    registry, _ = build_registry(config, folders)
    services = build_services(config, folders, models=ModelManager(torch.device("cpu")))
    executor = Executor(registry, OutputCache(cpu_budget=1 << 30, gpu_budget=0, sizeof=walk_sizeof(_tensor_bytes)),
                        functools.partial(RunContext, services=services))

    def go(prompt: dict) -> list[np.ndarray]:
        outcome = executor.execute(validate_prompt(prompt, registry), prompt_id="p")
        assert outcome.status == "success", (outcome.error.exception_message, outcome.error.traceback[-3:])
        return [np.asarray(Image.open(config.output_dir / i["subfolder"] / i["filename"]).convert("RGB"))
                for i in outcome.outputs["9"]["images"]]

    return go


def _sampling(model: list, clip: list, vae: list, encode: str = "CLIPTextEncodeSD3") -> dict:
    if encode == "CLIPTextEncodeSD3":
        positive = {"class_type": "CLIPTextEncodeSD3", "inputs": {
            "clip": clip, "clip_l": "a lighthouse", "clip_g": "a lighthouse", "t5xxl": "a lighthouse",
            "empty_padding": "empty_prompt"}}
    else:
        positive = {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": clip}}
    return {
        "4": positive,
        "6": {"class_type": "CLIPTextEncodeSD3", "inputs": {"clip": clip, "clip_l": "", "clip_g": "", "t5xxl": "",
                                                              "empty_padding": "none"}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"seed": 2, "steps": 3, "cfg": 4.5, "sampler_name": "dpmpp_2m",
                                                   "scheduler": "sgm_uniform", "denoise": 1.0, "model": model,
                                                   "positive": ["4", 0], "negative": ["6", 0],
                                                   "latent_image": ["7", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": vae}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "sd3"}},
    }


def parts_prompt(encode: str = "CLIPTextEncodeSD3") -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny-sd3.5_medium.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "TripleCLIPLoader", "inputs": {"clip_name1": "tiny-clip_l.safetensors",
                                                           "clip_name2": "tiny-clip_g.safetensors",
                                                           "clip_name3": "tiny-t5xxl-sd3.safetensors"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-ae.safetensors"}},
        **_sampling(["1", 0], ["2", 0], ["3", 0], encode),
    }


def test_parts_and_single_file_checkpoint_give_the_same_image(run):
    from_parts = run(parts_prompt())
    assert from_parts[0].shape == (64, 64, 3) and from_parts[0].std() > 0
    checkpoint = {"1": {"class_type": "CheckpointLoaderSimple",
                        "inputs": {"ckpt_name": "tiny-sd3.5_medium_incl_clips.safetensors"}},
                  **_sampling(["1", 0], ["1", 1], ["1", 2])}
    from_file = run(checkpoint)
    assert np.array_equal(from_parts[0], from_file[0])


def test_clip_text_encode_and_model_sampling_sd3(run):
    plain = run(parts_prompt(encode="CLIPTextEncode"))
    prompt = parts_prompt(encode="CLIPTextEncode")
    prompt["11"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 6.0}}
    prompt["8"]["inputs"]["model"] = ["11", 0]
    shifted = run(prompt)
    assert plain[0].shape == shifted[0].shape and not np.array_equal(plain[0], shifted[0])
