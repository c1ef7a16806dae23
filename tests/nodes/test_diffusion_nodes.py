"""The core diffusion nodes run as graphs through the real executor on a tiny random SD1-layout checkpoint:
txt2img, img2img, inpaint, hires-fix, area composition, clip skip, and the cache's partial re-runs."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.context import RunContext
from diffusion.memory import ModelManager
from nodes.inputs import Link
from nodes.registry import Node, Result
from server.compose import build_registry, build_services
from server.engine.cache import OutputCache, walk_sizeof
from server.config import ServerConfig
from server.messages import EventRecorder
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from server.paths import ServerFolders
from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint


def _tensor_bytes(value):
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size(), 0
    return None


@dataclass
class Engine:
    config: ServerConfig
    registry: object
    executor: Executor
    models: ModelManager
    calls: dict

    def run(self, prompt: dict, prompt_id: str = "p"):
        events = EventRecorder()
        outcome = self.executor.execute(validate_prompt(prompt, self.registry), prompt_id=prompt_id, events=events)
        assert outcome.status == "success", outcome.error
        return outcome, events

    def image(self, outcome, node: str = "9", index: int = 0) -> Image.Image:
        entry = outcome.outputs[node]["images"][index]
        return Image.open(self.config.output_dir / entry["subfolder"] / entry["filename"])


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    base = tmp_path_factory.mktemp("chisel")
    config = ServerConfig(base_dir=base, load_custom_nodes=False)
    (config.models_dir / "checkpoints").mkdir(parents=True)
    write_tiny_sd1_checkpoint(config.models_dir / "checkpoints" / "tiny.safetensors")
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(config.input_dir / "photo.png")
    mask = np.zeros((64, 64, 4), dtype=np.uint8)
    mask[..., 3] = 255
    mask[16:48, 16:48, 3] = 0  # transparent centre = the region to repaint
    Image.fromarray(mask, "RGBA").save(config.input_dir / "mask.png")
    registry, _ = build_registry(config, folders)
    registry.add(LatentDifference, source="tests")
    models = ModelManager(torch.device("cpu"))
    services = build_services(config, folders, models=models)
    cache = OutputCache(cpu_budget=1 << 30, gpu_budget=0, sizeof=walk_sizeof(_tensor_bytes))
    executor = Executor(registry, cache, functools.partial(RunContext, services=services))
    return Engine(config, registry, executor, models, {})


def txt2img(seed: int = 1, *, text: str = "a red circle", width: int = 64, height: int = 64, batch: int = 1,
            sampler: str = "euler", steps: int = 3) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 2.5, "sampler_name": sampler,
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "t"}},
    }


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_txt2img_writes_images_of_the_latent_size_with_progress_and_previews(engine):
    outcome, events = engine.run(txt2img(width=96, height=64, batch=2))
    images = outcome.outputs["9"]["images"]
    assert len(images) == 2
    assert engine.image(outcome).size == (96, 64)
    progress = [i.data for i in events.items if i.event == "progress"]
    assert [p["value"] for p in progress if p["node"] == "3"] == [1, 2, 3]
    assert all(p["max"] == 3 for p in progress if p["node"] == "3")
    previews = [i for i in events.items if i.kind == "preview"]
    assert previews and previews[-1].data["node_id"] == "3"
    assert Image.open(__import__("io").BytesIO(previews[-1].preview.data)).format == "JPEG"


def test_same_seed_gives_identical_images_and_another_seed_differs(engine):
    first, _ = engine.run(txt2img(seed=7))
    second, _ = engine.run(txt2img(seed=7, text="a red circle "))  # new text key: re-encodes and re-samples
    other, _ = engine.run(txt2img(seed=8))
    assert np.array_equal(pixels(engine.image(first)), pixels(engine.image(second)))
    assert not np.array_equal(pixels(engine.image(first)), pixels(engine.image(other)))


def test_requeueing_runs_nothing_and_a_new_seed_reruns_only_the_sampler_and_below(engine):
    engine.run(txt2img(seed=11))
    again, _ = engine.run(txt2img(seed=11))
    assert again.executed == ()
    changed, _ = engine.run(txt2img(seed=12))
    assert set(changed.executed) == {"3", "8", "9"}
    assert engine.models.loads == 1  # the checkpoint file was read once for the whole module


def test_every_sampler_runs_a_full_graph(engine):
    from diffusion.samplers import SAMPLER_NAMES

    for name in SAMPLER_NAMES:
        outcome, _ = engine.run(txt2img(seed=3, sampler=name, steps=2))
        image = pixels(engine.image(outcome))
        assert image.shape == (64, 64, 3), name


def test_img2img_with_low_denoise_stays_close_to_the_input(engine):
    prompt = txt2img(seed=5, steps=4)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["3"]["inputs"]["latent_image"] = ["11", 0]
    prompt["12"] = {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["4", 2]}}
    prompt["13"] = {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "roundtrip"}}
    prompt["3"]["inputs"]["denoise"] = 0.2
    low, _ = engine.run(prompt)
    prompt["3"]["inputs"]["denoise"] = 1.0
    full, _ = engine.run(prompt)
    reference = pixels(engine.image(low, "13"))
    near = np.abs(pixels(engine.image(low)) - reference).mean()
    far = np.abs(pixels(engine.image(full)) - reference).mean()
    assert near < far


class LatentDifference(Node):
    """Test-only output node: mean |a - b| of two latents inside and outside the 16..48 px square."""

    output_node = True
    a = Link("LATENT")
    b = Link("LATENT")

    @classmethod
    def run(cls, ctx, a, b):
        diff = (a.samples - b.samples).abs().mean(dim=(0, 1))  # (h, w) latent pixels
        inside = torch.zeros_like(diff, dtype=torch.bool)
        inside[2:6, 2:6] = True
        return Result(ui={"inside": [float(diff[inside].mean())], "outside": [float(diff[~inside].mean())]})


def test_inpaint_resamples_only_the_masked_latent(engine):
    prompt = txt2img(seed=9, steps=3)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}
    prompt["14"] = {"class_type": "LoadImage", "inputs": {"image": "mask.png"}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["15"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["11", 0], "mask": ["14", 1]}}
    prompt["3"]["inputs"]["latent_image"] = ["15", 0]
    prompt["16"] = {"class_type": "LatentDifference", "inputs": {"a": ["3", 0], "b": ["11", 0]}}
    outcome, _ = engine.run(prompt)
    stats = outcome.outputs["16"]
    assert stats["outside"][0] < 1e-6 < 0.05 < stats["inside"][0]
    assert engine.image(outcome).size == (64, 64)


def test_vae_encode_for_inpaint_marks_the_grown_mask_as_noise_mask(engine):
    prompt = txt2img(seed=9, steps=2)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}
    prompt["14"] = {"class_type": "LoadImage", "inputs": {"image": "mask.png"}}
    prompt["11"] = {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["10", 0], "vae": ["4", 2],
                                                                   "mask": ["14", 1], "grow_mask_by": 6}}
    prompt["3"]["inputs"]["latent_image"] = ["11", 0]
    outcome, _ = engine.run(prompt)
    assert engine.image(outcome).size == (64, 64)


def test_hires_fix_second_pass_doubles_the_size(engine):
    prompt = txt2img(seed=2, steps=2)
    prompt["10"] = {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["3", 0], "upscale_method": "bislerp",
                                                                "scale_by": 2.0}}
    prompt["11"] = {"class_type": "KSampler", "inputs": {**prompt["3"]["inputs"], "latent_image": ["10", 0],
                                                         "denoise": 0.5}}
    prompt["8"]["inputs"]["samples"] = ["11", 0]
    outcome, _ = engine.run(prompt)
    assert engine.image(outcome).size == (128, 128)


def test_area_composition_changes_only_its_region(engine):
    base = txt2img(seed=4, steps=3, width=128, height=64, text="a blue sky")
    plain, _ = engine.run(base)
    composed = txt2img(seed=4, steps=3, width=128, height=64, text="a blue sky")
    composed["20"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a green square", "clip": ["4", 1]}}
    composed["21"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["20", 0], "width": 64,
                                                                      "height": 64, "x": 64, "y": 0,
                                                                      "strength": 1.0}}
    composed["22"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["6", 0],
                                                                      "conditioning_2": ["21", 0]}}
    composed["3"]["inputs"]["positive"] = ["22", 0]
    area, _ = engine.run(composed)
    diff = np.abs(pixels(engine.image(area)) - pixels(engine.image(plain))).mean(axis=2)
    assert diff[:, 80:].mean() > diff[:, :48].mean()


def test_clip_set_last_layer_changes_the_conditioning(engine):
    prompt = txt2img(seed=6, steps=2)
    first, _ = engine.run(prompt)
    prompt["30"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["4", 1], "stop_at_clip_layer": -2}}
    prompt["6"]["inputs"]["clip"] = ["30", 0]
    second, _ = engine.run(prompt)
    assert not np.array_equal(pixels(engine.image(first)), pixels(engine.image(second)))


def test_a_missing_checkpoint_fails_the_prompt_naming_the_file_and_folder(engine):
    prompt = txt2img()
    prompt["4"]["inputs"]["ckpt_name"] = "nope.safetensors"
    with pytest.raises(Exception) as err:
        validate_prompt(prompt, engine.registry)
    assert "nope.safetensors" in str(err.value.__dict__) or "nope.safetensors" in str(err.value)


def test_lora_loader_changes_the_image_and_strength_zero_does_not(engine):
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for key, width in (("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q", 32),
                       ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 32)):
        tensors[f"{key}.lora_down.weight"] = torch.randn((4, width), generator=generator)
        tensors[f"{key}.lora_up.weight"] = torch.randn((width, 4), generator=generator)
        tensors[f"{key}.alpha"] = torch.tensor(4.0)
    loras = engine.config.models_dir / "loras"
    loras.mkdir(exist_ok=True)
    save_file(tensors, str(loras / "test_lora.safetensors"))

    def with_lora(strength: float) -> dict:
        prompt = txt2img(seed=21, steps=2)
        prompt["40"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                               "lora_name": "test_lora.safetensors",
                                                               "strength_model": strength, "strength_clip": strength}}
        prompt["3"]["inputs"]["model"] = ["40", 0]
        prompt["6"]["inputs"]["clip"] = ["40", 1]
        prompt["7"]["inputs"]["clip"] = ["40", 1]
        return prompt

    plain, _ = engine.run(txt2img(seed=21, steps=2))
    zero, _ = engine.run(with_lora(0.0))
    strong, _ = engine.run(with_lora(1.0))
    assert np.array_equal(pixels(engine.image(plain)), pixels(engine.image(zero)))
    assert not np.array_equal(pixels(engine.image(plain)), pixels(engine.image(strong)))
    # Re-run the base graph without the cache (a new text key, same tokens): the shared weights were restored.
    again, _ = engine.run(txt2img(seed=21, steps=2, text="a red circle  "))
    assert "3" in again.executed
    assert np.array_equal(pixels(engine.image(plain)), pixels(engine.image(again)))


def test_latent_from_batch_reproduces_one_image_of_a_seeded_batch_alone(engine):
    batch, _ = engine.run(txt2img(seed=31, batch=3))
    single = txt2img(seed=31, batch=3)
    single["50"] = {"class_type": "LatentFromBatch", "inputs": {"samples": ["5", 0], "batch_index": 2, "length": 1}}
    single["3"]["inputs"]["latent_image"] = ["50", 0]
    alone, _ = engine.run(single)
    assert len(alone.outputs["9"]["images"]) == 1
    assert np.array_equal(pixels(engine.image(alone)), pixels(engine.image(batch, index=2)))


def test_repeat_latent_batch_gives_each_copy_its_own_noise(engine):
    prompt = txt2img(seed=32)
    prompt["50"] = {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["5", 0], "amount": 2}}
    prompt["3"]["inputs"]["latent_image"] = ["50", 0]
    outcome, _ = engine.run(prompt)
    first, second = pixels(engine.image(outcome, index=0)), pixels(engine.image(outcome, index=1))
    assert not np.array_equal(first, second)
    alone, _ = engine.run(txt2img(seed=32))
    assert np.array_equal(first, pixels(engine.image(alone)))


def test_ksampler_advanced_in_two_halves_equals_one_full_run(engine):
    full = txt2img(seed=33, steps=4)
    full["3"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": ["4", 0], "add_noise": "enable", "noise_seed": 33, "steps": 4, "cfg": 2.5, "sampler_name": "euler",
        "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
        "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    whole, _ = engine.run(full)
    split = json_copy(full)
    split["3"]["inputs"].update(end_at_step=2, return_with_leftover_noise="enable")
    split["51"] = {"class_type": "KSamplerAdvanced", "inputs": {**split["3"]["inputs"], "add_noise": "disable",
                                                                "start_at_step": 2, "end_at_step": 10000,
                                                                "return_with_leftover_noise": "disable",
                                                                "latent_image": ["3", 0]}}
    split["8"]["inputs"]["samples"] = ["51", 0]
    halves, _ = engine.run(split)
    difference = np.abs(pixels(engine.image(whole)) - pixels(engine.image(halves)))
    assert difference.max() <= 1  # the same sigmas in two calls: equal up to float rounding


def test_vae_loader_reads_a_standalone_vae_file(engine):
    from safetensors.torch import save_file

    from diffusion.checkpoint import load_checkpoint

    loaded = load_checkpoint(engine.config.models_dir / "checkpoints" / "tiny.safetensors")
    (engine.config.models_dir / "vae").mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in loaded.vae.state_dict().items()},
              str(engine.config.models_dir / "vae" / "tiny_vae.safetensors"))
    prompt = txt2img(seed=34)
    plain, _ = engine.run(prompt)
    prompt["52"] = {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_vae.safetensors"}}
    prompt["8"]["inputs"]["vae"] = ["52", 0]
    separate, _ = engine.run(prompt)
    assert np.array_equal(pixels(engine.image(plain)), pixels(engine.image(separate)))


def test_conditioning_nodes_zero_out_average_mask_and_timestep_range(engine):
    base = txt2img(seed=35)
    plain, _ = engine.run(base)
    variants = {
        "zero": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}},
        "average": {"class_type": "ConditioningAverage", "inputs": {"conditioning_to": ["6", 0],
                                                                    "conditioning_from": ["7", 0],
                                                                    "conditioning_to_strength": 0.5}},
        "range": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["6", 0],
                                                                           "start": 0.5, "end": 1.0}},
        "area%": {"class_type": "ConditioningSetAreaPercentage", "inputs": {"conditioning": ["6", 0], "width": 0.5,
                                                                            "height": 1.0, "x": 0.5, "y": 0.0,
                                                                            "strength": 1.0}},
    }
    for name, node in variants.items():
        prompt = json_copy(base)
        prompt["60"] = node
        prompt["3"]["inputs"]["positive"] = ["60", 0]
        outcome, _ = engine.run(prompt)
        assert not np.array_equal(pixels(engine.image(outcome)), pixels(engine.image(plain))), name
    full = json_copy(base)
    full["60"] = {"class_type": "ConditioningAverage", "inputs": {"conditioning_to": ["6", 0],
                                                                  "conditioning_from": ["7", 0],
                                                                  "conditioning_to_strength": 1.0}}
    full["3"]["inputs"]["positive"] = ["60", 0]
    same, _ = engine.run(full)
    assert np.array_equal(pixels(engine.image(same)), pixels(engine.image(plain)))


def test_latent_upscale_to_a_size_and_with_zero_keeping_the_aspect(engine):
    prompt = txt2img(seed=36, width=128, height=64)
    prompt["10"] = {"class_type": "LatentUpscale", "inputs": {"samples": ["3", 0], "upscale_method": "bilinear",
                                                              "width": 0, "height": 128, "crop": "disabled"}}
    prompt["8"]["inputs"]["samples"] = ["10", 0]
    outcome, _ = engine.run(prompt)
    assert engine.image(outcome).size == (256, 128)


def json_copy(prompt: dict) -> dict:
    import json

    return json.loads(json.dumps(prompt))
