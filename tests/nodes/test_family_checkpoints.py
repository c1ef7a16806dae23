"""SD2.x- and SDXL-layout checkpoints (tiny widths, the real key names) load through CheckpointLoaderSimple and run a
whole txt2img graph on the CPU: SD2's OpenCLIP-H slot and linear transformer projections, SDXL's two text encoders,
pooled output and size embeddings. (SD1: test_diffusion_nodes.py.)"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.context import RunContext
from diffusion.checkpoint import detect_checkpoint
from diffusion.memory import ModelManager
from server.compose import build_registry, build_services
from server.engine.cache import OutputCache, walk_sizeof
from server.config import ServerConfig
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from server.paths import ServerFolders
from tests.diffusion.tiny_checkpoint import write_tiny_family_checkpoint


def _tensor_bytes(value):
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size(), 0
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Runs an API prompt through the real registry and executor; returns the SaveImage outputs as arrays."""
    config = ServerConfig(base_dir=tmp_path_factory.mktemp("families"), load_custom_nodes=False,
                          bundled_models_dir=None)
    checkpoints = config.models_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    for family in ("sd2", "sdxl"):
        write_tiny_family_checkpoint(checkpoints / f"tiny-{family}.safetensors", family)
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    registry, _ = build_registry(config, folders)
    services = build_services(config, folders, models=ModelManager(torch.device("cpu")))
    executor = Executor(registry, OutputCache(cpu_budget=1 << 30, gpu_budget=0, sizeof=walk_sizeof(_tensor_bytes)),
                        functools.partial(RunContext, services=services))

    def go(prompt: dict) -> list[np.ndarray]:
        outcome = executor.execute(validate_prompt(prompt, registry), prompt_id="p")
        assert outcome.status == "success", outcome.error
        return [np.asarray(Image.open(config.output_dir / i["subfolder"] / i["filename"]).convert("RGB"))
                for i in outcome.outputs["9"]["images"]]

    go.checkpoints = checkpoints
    return go


def txt2img(family: str, text: str, *, width: int = 64, height: int = 64) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": f"tiny-{family}.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 2}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 3, "steps": 2, "cfg": 4.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": family}},
    }


@pytest.mark.parametrize("family, encoders", [("sd2", {"clip_h"}), ("sdxl", {"clip_l", "clip_g"})])
def test_the_file_is_detected_as_its_family_from_shapes(run, family, encoders):
    layout = detect_checkpoint(run.checkpoints / f"tiny-{family}.safetensors")
    assert layout.family.name == family and {te.slot.name for te in layout.text_encoders} == encoders
    assert layout.unet_config.use_linear_in_transformer and layout.unet_config.num_head_channels == 64


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_txt2img_runs_end_to_end_and_the_prompt_reaches_the_unet(run, family):
    images = run(txt2img(family, "a red circle", width=96, height=64))
    assert len(images) == 2 and all(image.shape == (64, 96, 3) for image in images)
    assert not np.array_equal(images[0], images[1]), "the two batch items share their noise"
    again = run(txt2img(family, "a red circle", width=96, height=64))
    assert all(np.array_equal(a, b) for a, b in zip(images, again))
    other = run(txt2img(family, "a blue square", width=96, height=64))
    assert not np.array_equal(images[0], other[0]), "the prompt does not change the image"
