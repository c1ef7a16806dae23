"""The model-patch and guidance-tweak nodes run as graphs through the real executor on a tiny random SD1-layout
checkpoint: each changes KSampler's latent when active and leaves it as it was at its neutral setting, patches
compose in order, the base MODEL samples exactly as before afterwards, and the cache keys every patch value."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.memory import ModelManager
from nodes.context import RunContext
from nodes.inputs import Link
from nodes.registry import Node, Result
from server.compose import build_registry, build_services
from server.config import ServerConfig
from server.engine.cache import OutputCache, walk_sizeof
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from server.messages import EventRecorder
from server.paths import ServerFolders
from tests.diffusion.test_hypernetwork import write_hypernetwork_safetensors
from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint


class KeepLatent(Node):
    """Test-only output node: the latent's values, for comparing runs."""

    output_node = True
    samples = Link("LATENT")

    @classmethod
    def run(cls, ctx, samples):
        return Result(ui={"latent": samples.samples.flatten().tolist()})


class KeepConditioning(Node):
    """Test-only output node: the first conditioning entry's embedding."""

    output_node = True
    conditioning = Link("CONDITIONING")

    @classmethod
    def run(cls, ctx, conditioning):
        return Result(ui={"embedding": conditioning.entries[0].cross_attn.flatten().tolist()})


def _tensor_bytes(value):
    if isinstance(value, torch.Tensor):
        return value.nelement() * value.element_size(), 0
    return None


@dataclass
class Engine:
    registry: object
    executor: Executor

    def run(self, prompt: dict):
        outcome = self.executor.execute(validate_prompt(prompt, self.registry), prompt_id="p", events=EventRecorder())
        assert outcome.status == "success", outcome.error
        return outcome


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    base = tmp_path_factory.mktemp("chisel")
    config = ServerConfig(base_dir=base, load_custom_nodes=False)
    (config.models_dir / "checkpoints").mkdir(parents=True)
    write_tiny_sd1_checkpoint(config.models_dir / "checkpoints" / "tiny.safetensors")
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    gradient = np.zeros((64, 64, 4), dtype=np.uint8)
    gradient[..., 3] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]  # alpha ramp: a soft inpainting mask
    Image.fromarray(gradient, "RGBA").save(config.input_dir / "ramp.png")
    (config.models_dir / "hypernetworks").mkdir(parents=True, exist_ok=True)
    # width 32: the tiny UNet's context width and level-0 width
    write_hypernetwork_safetensors(config.models_dir / "hypernetworks" / "tiny.safetensors", width=32)
    registry, _ = build_registry(config, folders)
    registry.add(KeepLatent, source="tests")
    registry.add(KeepConditioning, source="tests")
    services = build_services(config, folders, models=ModelManager(torch.device("cpu")))
    cache = OutputCache(cpu_budget=1 << 30, gpu_budget=0, sizeof=walk_sizeof(_tensor_bytes))
    return Engine(registry, Executor(registry, cache, functools.partial(RunContext, services=services)))


def graph(*patches: tuple[str, dict], seed: int = 1, cfg: float = 2.5, steps: int = 3, mask: bool = False) -> dict:
    """txt2img (or a soft-mask inpaint) on the tiny checkpoint with patch nodes chained between the loader and
    KSampler, in order; node "20" keeps the sampled latent."""
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    latent = ["5", 0]
    if mask:
        prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "ramp.png"}}
        prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        prompt["12"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["11", 0], "mask": ["10", 1]}}
        latent = ["12", 0]
    model = ["4", 0]
    for index, (class_type, inputs) in enumerate(patches):
        node_id = str(100 + index)
        prompt[node_id] = {"class_type": class_type, "inputs": {"model": model, **inputs}}
        model = [node_id, 0]
    prompt["3"] = {"class_type": "KSampler", "inputs": {
        "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": model, "positive": ["6", 0], "negative": ["7", 0], "latent_image": latent}}
    prompt["20"] = {"class_type": "KeepLatent", "inputs": {"samples": ["3", 0]}}
    return prompt


def latent_of(engine: Engine, prompt: dict) -> np.ndarray:
    return np.asarray(engine.run(prompt).outputs["20"]["latent"], dtype=np.float64)


ACTIVE = [
    ("FreeU", {"b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2}),
    ("FreeU_V2", {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}),
    ("PerturbedAttentionGuidance", {"scale": 3.0}),
    ("SelfAttentionGuidance", {"scale": 0.5, "blur_sigma": 2.0}),
    ("RescaleCFG", {"multiplier": 0.7}),
    ("CFGZeroStar", {}),
    ("APG", {"eta": 0.5, "norm_threshold": 5.0, "momentum": 0.5}),
    ("Mahiro", {}),
    ("TCFG", {}),
    ("CFGNorm", {"strength": 0.8}),
    ("FreSca", {"scale_low": 1.0, "scale_high": 1.25, "freq_cutoff": 1}),
    ("TemporalScoreRescaling", {"tsr_k": 0.95, "tsr_sigma": 1.0}),
    ("Epsilon Scaling", {"scaling_factor": 1.005}),
    ("PatchModelAddDownscale", {"block_number": 1, "downscale_factor": 2.0, "start_percent": 0.0,
                                "end_percent": 0.35, "downscale_after_skip": True, "downscale_method": "bicubic",
                                "upscale_method": "bicubic"}),
    ("TomePatchModel", {"ratio": 0.5}),
    ("HyperTile", {"tile_size": 32, "swap_size": 1, "max_depth": 0, "scale_depth": False}),
    ("UNetSelfAttentionMultiply", {"q": 2.0, "k": 1.0, "v": 1.0, "out": 1.0}),
    ("UNetCrossAttentionMultiply", {"q": 1.0, "k": 1.0, "v": 0.5, "out": 1.0}),
    ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": False}),
    ("ModelSamplingDiscrete", {"sampling": "eps", "zsnr": True}),
    ("ModelSamplingDiscrete", {"sampling": "lcm", "zsnr": False}),
    ("ModelSamplingDiscrete", {"sampling": "x0", "zsnr": False}),
    ("ModelComputeDtype", {"dtype": "bf16"}),
    ("HypernetworkLoader", {"hypernetwork_name": "tiny.safetensors", "strength": 1.0}),
]

NEUTRAL = [
    ("FreeU", {"b1": 1.0, "b2": 1.0, "s1": 1.0, "s2": 1.0}, 1e-5),
    ("PerturbedAttentionGuidance", {"scale": 0.0}, 0.0),
    ("RescaleCFG", {"multiplier": 0.0}, 1e-5),
    ("TemporalScoreRescaling", {"tsr_k": 1.0, "tsr_sigma": 1.0}, 0.0),
    ("UNetSelfAttentionMultiply", {"q": 1.0, "k": 1.0, "v": 1.0, "out": 1.0}, 0.0),
    ("ModelSamplingDiscrete", {"sampling": "eps", "zsnr": False}, 0.0),
    ("ModelComputeDtype", {"dtype": "default"}, 0.0),
    ("ModelComputeDtype", {"dtype": "fp32"}, 0.0),  # the tiny checkpoint's weights are fp32 already
    ("DifferentialDiffusion", {"strength": 1.0}, 0.0),  # no noise mask: nothing to shape
    ("HypernetworkLoader", {"hypernetwork_name": "tiny.safetensors", "strength": 0.0}, 0.0),
]


@pytest.mark.parametrize(("node", "inputs"), ACTIVE, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ACTIVE)])
def test_an_active_patch_changes_the_sampled_latent(engine, node, inputs):
    base = latent_of(engine, graph())
    patched = latent_of(engine, graph((node, inputs)))
    assert np.isfinite(patched).all()
    assert np.abs(patched - base).max() > 1e-6


@pytest.mark.parametrize(("node", "inputs", "tol"), NEUTRAL, ids=[n for n, _, _ in NEUTRAL])
def test_a_neutral_patch_leaves_the_sampled_latent(engine, node, inputs, tol):
    base = latent_of(engine, graph())
    patched = latent_of(engine, graph((node, inputs)))
    assert np.abs(patched - base).max() <= tol * np.abs(base).max()  # relative: the latents are ~100


def test_differential_diffusion_reshapes_a_soft_inpainting_mask(engine):
    plain = latent_of(engine, graph(mask=True))
    differential = latent_of(engine, graph(("DifferentialDiffusion", {"strength": 1.0}), mask=True))
    half = latent_of(engine, graph(("DifferentialDiffusion", {"strength": 0.5}), mask=True))
    assert np.abs(differential - plain).max() > 1e-4
    assert np.abs(half - differential).max() > 1e-6


def test_latent_operation_cfg_applies_the_operation_to_the_guidance(engine):
    prompt = graph()
    prompt["30"] = {"class_type": "LatentOperationTonemapReinhard", "inputs": {"multiplier": 0.5}}
    prompt["31"] = {"class_type": "LatentApplyOperationCFG", "inputs": {"model": ["4", 0], "operation": ["30", 0]}}
    prompt["3"]["inputs"]["model"] = ["31", 0]
    patched = np.asarray(engine.run(prompt).outputs["20"]["latent"])
    assert np.abs(patched - latent_of(engine, graph())).max() > 1e-6


def test_patches_compose_in_order_and_the_base_model_is_unchanged(engine):
    base = latent_of(engine, graph(seed=5))
    eps_then_norm = latent_of(engine, graph(("Epsilon Scaling", {"scaling_factor": 1.3}),
                                            ("CFGNorm", {"strength": 0.9}), seed=5))
    norm_then_eps = latent_of(engine, graph(("CFGNorm", {"strength": 0.9}),
                                            ("Epsilon Scaling", {"scaling_factor": 1.3}), seed=5))
    assert np.abs(eps_then_norm - norm_then_eps).max() > 1e-6
    stacked = latent_of(engine, graph(("FreeU", {"b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2}),
                                      ("PerturbedAttentionGuidance", {"scale": 2.0}),
                                      ("UNetSelfAttentionMultiply", {"q": 1.5, "k": 1.0, "v": 1.0, "out": 1.0}),
                                      seed=5))
    freeu_only = latent_of(engine, graph(("FreeU", {"b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2}), seed=5))
    assert np.abs(stacked - freeu_only).max() > 1e-6
    # the shared weights were never written: a fresh base run (new seed key, then the old one) is bit-identical
    engine.run(graph(seed=6))
    assert np.array_equal(latent_of(engine, graph(seed=5, cfg=2.5000001)), latent_of(engine, graph(seed=5,
                                                                                                   cfg=2.5000001)))
    assert np.array_equal(latent_of(engine, graph(seed=5)), base)


def test_the_cache_keys_every_patch_value(engine):
    first = engine.run(graph(("FreeU", {"b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2}), seed=8))
    again = engine.run(graph(("FreeU", {"b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2}), seed=8))
    assert again.executed == ()
    # (the tiny UNet's widths are 1 and 2 × model_channels: b2 / s2 act, b1 / s1 have no block to act on)
    other = engine.run(graph(("FreeU", {"b1": 1.1, "b2": 1.5, "s1": 0.9, "s2": 0.2}), seed=8))
    assert {"100", "3", "20"} <= set(other.executed)
    assert first.outputs["20"]["latent"] != other.outputs["20"]["latent"]
    unpatched = engine.run(graph(seed=8))
    assert "3" in unpatched.executed and unpatched.outputs["20"]["latent"] != first.outputs["20"]["latent"]


def test_clip_attention_multiply_changes_the_text_embedding_only_when_active(engine):
    def embedding(q: float, out: float) -> np.ndarray:
        prompt = {
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
            "8": {"class_type": "CLIPAttentionMultiply",
                  "inputs": {"clip": ["4", 1], "q": q, "k": 1.0, "v": 1.0, "out": out}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["8", 0]}},
            "21": {"class_type": "KeepConditioning", "inputs": {"conditioning": ["6", 0]}},
        }
        return np.asarray(engine.run(prompt).outputs["21"]["embedding"])

    neutral = embedding(1.0, 1.0)
    assert np.abs(embedding(1.0, 0.5) - neutral).max() > 1e-5
    assert np.abs(embedding(2.0, 1.0) - neutral).max() > 1e-6
    assert np.array_equal(embedding(1.0, 1.0), neutral)


def test_a_missing_hypernetwork_names_the_file_and_folder(engine):
    prompt = graph(("HypernetworkLoader", {"hypernetwork_name": "tiny.safetensors", "strength": 1.0}))
    prompt["100"]["inputs"]["hypernetwork_name"] = "absent.safetensors"
    with pytest.raises(Exception, match="absent.safetensors"):
        validate_prompt(prompt, engine.registry)  # not in the folder's list: rejected before anything runs


def test_custom_sampling_applies_the_patches_as_ksampler_does(engine):
    patches = (("FreeU", {"b1": 1.1, "b2": 1.3, "s1": 0.9, "s2": 0.3}),
               ("PerturbedAttentionGuidance", {"scale": 2.0}), ("RescaleCFG", {"multiplier": 0.5}))
    prompt = graph(*patches, seed=4)
    ksampler = np.asarray(engine.run(prompt).outputs["20"]["latent"])
    patched_model = ["102", 0]
    prompt["30"] = {"class_type": "CFGGuider", "inputs": {"model": patched_model, "positive": ["6", 0],
                                                          "negative": ["7", 0], "cfg": 2.5}}
    prompt["31"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 4}}
    prompt["32"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["33"] = {"class_type": "BasicScheduler", "inputs": {"model": patched_model, "scheduler": "normal",
                                                               "steps": 3, "denoise": 1.0}}
    prompt["34"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["31", 0], "guider": ["30", 0], "sampler": ["32", 0], "sigmas": ["33", 0],
        "latent_image": ["5", 0]}}
    prompt["20"] = {"class_type": "KeepLatent", "inputs": {"samples": ["34", 0]}}
    del prompt["3"]
    custom = np.asarray(engine.run(prompt).outputs["20"]["latent"])
    assert np.array_equal(custom, ksampler)
    assert np.abs(custom - latent_of(engine, graph(seed=4))).max() > 1e-4
