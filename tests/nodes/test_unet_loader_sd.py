"""UNETLoader also takes an SD-family UNet alone (ldm names, bare or under model.diffusion_model.), as ComfyUI's:
the same tiny SD1 weights give the same image through UNETLoader + the checkpoint's CLIP/VAE as through
CheckpointLoaderSimple."""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusion.memory import ModelManager
from diffusion.model_files import load_diffusion_model
from nodes.context import RunContext
from server.compose import build_registry, build_services
from server.config import ServerConfig
from server.engine.cache import OutputCache, walk_sizeof
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from server.paths import ServerFolders
from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint


def _tensor_bytes(value):
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size(), 0
    return None


def test_sd1_unet_file_through_unet_loader(tmp_path):
    config = ServerConfig(base_dir=tmp_path, load_custom_nodes=False, bundled_models_dir=None)
    for folder in ("checkpoints", "diffusion_models"):
        (config.models_dir / folder).mkdir(parents=True)
    tiny = write_tiny_sd1_checkpoint(config.models_dir / "checkpoints" / "tiny.safetensors")
    save_file({k: v.contiguous() for k, v in tiny.unet.state_dict().items()},
              config.models_dir / "diffusion_models" / "tiny-unet.safetensors")
    loaded = load_diffusion_model(config.models_dir / "diffusion_models" / "tiny-unet.safetensors")
    assert loaded.family.name == "sd1" and loaded.config == tiny.unet.config and loaded.sampling.prediction == "eps"

    folders = ServerFolders.from_config(config)
    folders.create_directories()
    registry, _ = build_registry(config, folders)
    services = build_services(config, folders, models=ModelManager(torch.device("cpu")))
    executor = Executor(registry, OutputCache(cpu_budget=1 << 30, gpu_budget=0, sizeof=walk_sizeof(_tensor_bytes)),
                        functools.partial(RunContext, services=services))

    def run(model: list) -> np.ndarray:
        prompt = {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
            "2": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny-unet.safetensors",
                                                         "weight_dtype": "default"}},
            "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a boat", "clip": ["1", 1]}},
            "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
            "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "7": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
                                                       "scheduler": "normal", "denoise": 1.0, "model": model,
                                                       "positive": ["4", 0], "negative": ["5", 0],
                                                       "latent_image": ["6", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "unet"}},
        }
        outcome = executor.execute(validate_prompt(prompt, registry), prompt_id="p")
        assert outcome.status == "success", outcome.error
        image = outcome.outputs["9"]["images"][0]
        return np.asarray(Image.open(config.output_dir / image["subfolder"] / image["filename"]))

    assert np.array_equal(run(["1", 0]), run(["2", 0]))
