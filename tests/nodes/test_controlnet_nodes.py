"""ControlNet, Canny and upscale-model nodes as graphs through the real executor: a tiny random ControlNet file
(lllyasviel layout) on the tiny SD1 checkpoint, a Canny hint from an input image, stacked and old-style apply
nodes, and a random ESRGAN file through UpscaleModelLoader / ImageUpscaleWithModel."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.memory import ModelManager
from diffusion.safetensors_io import save_atomic
from nodes.context import RunContext
from server.compose import build_registry, build_services
from server.config import ServerConfig
from server.engine.cache import OutputCache, walk_sizeof
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from server.paths import ServerFolders
from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint
from tests.diffusion.tiny_controlnet import random_controlnet, tiny_controlnet_config, write_controlnet
from tests.diffusion.tiny_esrgan import write_esrgan
from tests.nodes.test_diffusion_nodes import Engine, _tensor_bytes, pixels, txt2img


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    base = tmp_path_factory.mktemp("chisel_cn")
    config = ServerConfig(base_dir=base, load_custom_nodes=False)
    for folder in ("checkpoints", "controlnet", "upscale_models"):
        (config.models_dir / folder).mkdir(parents=True)
    tiny = write_tiny_sd1_checkpoint(config.models_dir / "checkpoints" / "tiny.safetensors")
    net_a = random_controlnet(tiny_controlnet_config(), seed=1)
    write_controlnet(config.models_dir / "controlnet" / "cn_a.safetensors", net_a)
    # The same net stored as a "diff" ControlNet: minus the base UNet's weights wherever the names agree.
    base = tiny.unet.state_dict()
    diff = {k: v - base[k] if k in base else v for k, v in net_a.state_dict().items()}
    save_atomic(config.models_dir / "controlnet" / "cn_a_diff.safetensors",
                {**{"control_model." + k: v.contiguous() for k, v in diff.items()}, "difference": torch.zeros(1)})
    write_controlnet(config.models_dir / "controlnet" / "cn_b.safetensors",
                     random_controlnet(tiny_controlnet_config(), seed=2), prefix="")
    write_esrgan(config.models_dir / "upscale_models" / "4x_tiny.safetensors", nf=16, nb=1)
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    shapes = np.zeros((128, 128, 3), dtype=np.uint8)
    shapes[16:64, 16:64] = 255  # a white square: Canny outlines it
    Image.fromarray(shapes).save(config.input_dir / "shapes.png")
    registry, _ = build_registry(config, folders)
    models = ModelManager(torch.device("cpu"))
    services = build_services(config, folders, models=models)
    cache = OutputCache(cpu_budget=1 << 30, gpu_budget=0, sizeof=walk_sizeof(_tensor_bytes))
    executor = Executor(registry, cache, functools.partial(RunContext, services=services))
    return Engine(config, registry, executor, models, {})


def _controlled(strength: float = 1.0, *, net: str = "cn_a.safetensors", end: float = 1.0) -> dict:
    prompt = txt2img(seed=3, steps=3, width=128, height=128)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "shapes.png"}}
    prompt["11"] = {"class_type": "Canny", "inputs": {"image": ["10", 0], "low_threshold": 0.4,
                                                      "high_threshold": 0.8}}
    prompt["12"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": net}}
    prompt["13"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "control_net": ["12", 0], "image": ["11", 0],
        "strength": strength, "start_percent": 0.0, "end_percent": end}}
    prompt["3"]["inputs"]["positive"] = ["13", 0]
    prompt["3"]["inputs"]["negative"] = ["13", 1]
    return prompt


def _image(engine: Engine, prompt: dict) -> np.ndarray:
    outcome, _ = engine.run(prompt)
    return pixels(engine.image(outcome))


def test_a_controlnet_changes_the_image_and_strength_zero_does_not(engine):
    plain = _image(engine, txt2img(seed=3, steps=3, width=128, height=128))
    controlled = _image(engine, _controlled())
    assert np.abs(controlled - plain).mean() > 1.0
    assert np.array_equal(_image(engine, _controlled(strength=0.0)), plain)


def test_canny_outlines_the_input_square(engine):
    prompt = {"10": {"class_type": "LoadImage", "inputs": {"image": "shapes.png"}},
              "11": {"class_type": "Canny", "inputs": {"image": ["10", 0], "low_threshold": 0.4,
                                                       "high_threshold": 0.8}},
              "9": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "canny"}}}
    edges = _image(engine, prompt)[..., 0] > 127
    assert edges[15:17, 20:60].any(axis=0).all() and edges[63:65, 20:60].any(axis=0).all()
    assert not edges[24:56, 24:56].any() and not edges[80:].any()


def test_stacked_and_old_style_apply_nodes_run_and_differ(engine):
    single = _image(engine, _controlled())
    stacked = _controlled()
    stacked["14"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "cn_b.safetensors"}}
    stacked["15"] = {"class_type": "SetUnionControlNetType", "inputs": {"control_net": ["14", 0], "type": "auto"}}
    stacked["16"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["13", 0], "negative": ["13", 1], "control_net": ["15", 0], "image": ["11", 0],
        "strength": 0.7, "start_percent": 0.0, "end_percent": 0.5}}
    stacked["3"]["inputs"]["positive"] = ["16", 0]
    stacked["3"]["inputs"]["negative"] = ["16", 1]
    two = _image(engine, stacked)
    assert np.abs(two - single).mean() > 0.5

    old = _controlled()
    old["13"] = {"class_type": "ControlNetApply", "inputs": {"conditioning": ["6", 0], "control_net": ["12", 0],
                                                             "image": ["11", 0], "strength": 1.0}}
    old["3"]["inputs"]["negative"] = ["7", 0]
    # The old node's control also reaches the negative (control_apply_to_uncond): the same image as the new node.
    assert np.array_equal(_image(engine, old), single)


def test_a_missing_controlnet_names_the_file(engine):
    prompt = _controlled(net="nope.safetensors")
    with pytest.raises(Exception) as err:
        validate_prompt(prompt, engine.registry)
    assert "nope.safetensors" in str(err.value) or "nope.safetensors" in str(err.value.__dict__)


def test_upscale_model_nodes_upscale_4x(engine):
    prompt = {"10": {"class_type": "LoadImage", "inputs": {"image": "shapes.png"}},
              "20": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x_tiny.safetensors"}},
              "21": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["20", 0],
                                                                       "image": ["10", 0]}},
              "9": {"class_type": "SaveImage", "inputs": {"images": ["21", 0], "filename_prefix": "up"}}}
    outcome, events = engine.run(prompt)
    assert engine.image(outcome).size == (512, 512)


def test_a_diff_controlnet_gets_the_model_weights_added_back(engine):
    full = _image(engine, _controlled())
    prompt = _controlled()
    prompt["12"] = {"class_type": "DiffControlNetLoader", "inputs": {"model": ["4", 0],
                                                                     "control_net_name": "cn_a_diff.safetensors"}}
    assert np.abs(_image(engine, prompt).astype(int) - full).max() <= 1  # equal up to float rounding
    plain = _controlled(net="cn_a_diff.safetensors")  # loaded without its base model: another (wrong) net
    assert np.abs(_image(engine, plain) - full).mean() > 0.5
