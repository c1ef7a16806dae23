"""CLIP vision (HF and OpenCLIP layouts) against transformers' CLIPVisionModelWithProjection, the released key
layouts (manifests), and SD 2.1 unCLIP: detection, the noise-augmented image-embedding adm, and a sampling graph, on
tiny random models."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from diffusion.checkpoint import detect_unet_config
from diffusion.clip_vision import (
    ClipVisionError,
    ClipVisionModel,
    ClipVisionOutput,
    detect_config,
    preprocess,
)
from diffusion.memory import ModelManager
from diffusion.unclip import UnclipCond, noise_schedule, unclip_adm
from diffusion.unet import UNetModel
from nodes.context import RunContext
from server.compose import build_registry, build_services
from server.config import ServerConfig
from server.engine.cache import OutputCache
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from server.messages import EventRecorder
from server.paths import ServerFolders
from tests.diffusion.tiny_checkpoint import write_tiny_family_checkpoint

MANIFESTS = Path(__file__).resolve().parent.parent / "fixtures" / "manifests"
EMBED = 768  # unclip-l's image embedding width (adm 1536)


def tiny_hf_vision(seed: int = 0, projection: int = EMBED) -> CLIPVisionModelWithProjection:
    config = CLIPVisionConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=16, intermediate_size=64,
                              patch_size=8, image_size=32, projection_dim=projection, hidden_act="quick_gelu")
    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def to_open_clip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """transformers' vision names -> OpenCLIP's `visual.` layout (q/k/v fused, projection transposed)."""
    out = {}
    renames = {"vision_model.embeddings.class_embedding": "class_embedding",
               "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
               "vision_model.embeddings.position_embedding.weight": "positional_embedding",
               "vision_model.pre_layrnorm.weight": "ln_pre.weight", "vision_model.pre_layrnorm.bias": "ln_pre.bias",
               "vision_model.post_layernorm.weight": "ln_post.weight",
               "vision_model.post_layernorm.bias": "ln_post.bias"}
    for key, value in state.items():
        if key in renames:
            out[prefix + renames[key]] = value
        elif key == "visual_projection.weight":
            out[prefix + "proj"] = value.t().contiguous()
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("vision_model.encoder.layers."))
    for i in range(layers):
        hf, oc = f"vision_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{oc}attn.in_proj_{kind}"] = torch.cat([state[f"{hf}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[f"{oc}attn.out_proj.{kind}"] = state[f"{hf}self_attn.out_proj.{kind}"]
            out[f"{oc}ln_1.{kind}"] = state[f"{hf}layer_norm1.{kind}"]
            out[f"{oc}ln_2.{kind}"] = state[f"{hf}layer_norm2.{kind}"]
            out[f"{oc}mlp.c_fc.{kind}"] = state[f"{hf}mlp.fc1.{kind}"]
            out[f"{oc}mlp.c_proj.{kind}"] = state[f"{hf}mlp.fc2.{kind}"]
    return out


def write_unclip_checkpoint(path: Path, vision: CLIPVisionModelWithProjection) -> None:
    """A tiny SD2-layout file turned unCLIP-l: adm 1536 label_emb, the image tower under embedder.model.visual.,
    and noise_augmentor schedule buffers (as the released files carry them)."""
    base = write_tiny_family_checkpoint(path, "sd2")
    tensors = load_file(str(base))
    config = detect_unet_config({k: tuple(v.shape) for k, v in tensors.items()}, path=path)
    torch.manual_seed(1)
    unet = UNetModel(dataclasses.replace(config, adm_in_channels=2 * EMBED))
    tensors = {k: v for k, v in tensors.items() if not k.startswith("model.diffusion_model.")}
    tensors |= {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    tensors |= to_open_clip(vision.state_dict(), "embedder.model.visual.")
    sqrt_ac, sqrt_1m = noise_schedule()
    tensors |= {"noise_augmentor.sqrt_alphas_cumprod": sqrt_ac,
                "noise_augmentor.sqrt_one_minus_alphas_cumprod": sqrt_1m}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("vision")
    config = ServerConfig(base_dir=base, load_custom_nodes=False)
    for folder in ("checkpoints", "clip_vision"):
        (config.models_dir / folder).mkdir(parents=True)
    vision = tiny_hf_vision()
    save_file({k: v.contiguous() for k, v in vision.state_dict().items()},
              str(config.models_dir / "clip_vision" / "tiny_vision.safetensors"))
    save_file({"foo.weight": torch.zeros(2, 2)}, str(config.models_dir / "clip_vision" / "not_vision.safetensors"))
    write_unclip_checkpoint(config.models_dir / "checkpoints" / "unclip.safetensors", vision)
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(config.input_dir / "photo.png")
    registry, _ = build_registry(config, folders)
    services = build_services(config, folders, models=ModelManager(torch.device("cpu")))
    executor = Executor(registry, OutputCache(cpu_budget=1 << 30, gpu_budget=0, sizeof=lambda v: (0, 0)),
                        functools.partial(RunContext, services=services))
    return vision, registry, services, executor


def run(env, class_type: str, **inputs):
    _, registry, services, _ = env
    return registry.get(class_type).call(RunContext(node_id="n", prompt_id="p", services=services), inputs).values


def image(seed: int = 0, h: int = 48, w: int = 64) -> torch.Tensor:
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_released_layouts_detect_and_build_with_the_manifest_keys_and_shapes():
    for name, layers, width, act, proj in (("clip_vision_vit_h", 32, 1280, "gelu", 1024),
                                           ("clip_vision_vit_l", 24, 1024, "quick_gelu", 768)):
        tensors = {k: tuple(v) for k, v in json.loads((MANIFESTS / f"{name}.json").read_text())["tensors"].items()}
        config = detect_config(tensors)
        assert (config.layers, config.width, config.activation, config.projection_dim) == (layers, width, act, proj)
        assert (config.image_size, config.patch_size, config.heads) == (224, 14, 16)
        with torch.device("meta"):
            module = ClipVisionModel(config)
        assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == tensors


def test_encode_matches_transformers_and_comfyui_preprocessing(env):
    vision = env[0]
    (loaded,) = run(env, "CLIPVisionLoader", clip_name="tiny_vision.safetensors")
    pictures = image()
    (out,) = run(env, "CLIPVisionEncode", clip_vision=loaded, image=pictures, crop="center")
    assert isinstance(out, ClipVisionOutput)
    pixels = preprocess(pictures, size=32, crop=True)
    with torch.no_grad():
        ref = vision(pixel_values=pixels, output_hidden_states=True)
    torch.testing.assert_close(out.image_embeds, ref.image_embeds, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.penultimate_hidden_states, ref.hidden_states[-2], rtol=1e-4, atol=1e-5)
    assert out["image_embeds"] is out.image_embeds
    (squashed,) = run(env, "CLIPVisionEncode", clip_vision=loaded, image=pictures, crop="none")
    assert not torch.allclose(squashed.image_embeds, out.image_embeds)


def test_preprocess_crops_the_centre_and_quantizes_like_comfyui():
    pictures = torch.zeros(1, 32, 64, 3)
    pictures[:, :, 16:48] = 1.0  # a white centre square on black
    pixels = preprocess(pictures, size=16, crop=True)
    assert pixels.shape == (1, 3, 16, 16)
    white = (1.0 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor([0.26862954, 0.26130258,
                                                                                         0.27577711])
    torch.testing.assert_close(pixels[0, :, 8, 8], white)
    squashed = preprocess(pictures, size=16, crop=False)
    assert squashed[0, 0, 8, 0] < 0 < squashed[0, 0, 8, 8]  # black edges kept when squashing


def test_a_file_that_is_not_a_vision_tower_is_refused(env):
    with pytest.raises(ClipVisionError, match="not a CLIP vision tower"):
        run(env, "CLIPVisionLoader", clip_name="not_vision.safetensors")


def test_unclip_checkpoint_loads_its_model_and_its_open_clip_image_tower(env):
    vision = env[0]
    model, clip, vae, tower = run(env, "unCLIPCheckpointLoader", ckpt_name="unclip.safetensors")
    assert model.family.adm == "unclip" and model.family.prediction == "v"
    assert model.unet.config.adm_in_channels == 1536 and clip is not None and vae is not None
    (out,) = run(env, "CLIPVisionEncode", clip_vision=tower, image=image(), crop="center")
    with torch.no_grad():
        ref = vision(pixel_values=preprocess(image(), size=32, crop=True))
    torch.testing.assert_close(out.image_embeds, ref.image_embeds, rtol=1e-4, atol=1e-5)


def test_noise_schedule_is_comfyuis_squaredcos_cap_v2():
    betas = []
    for i in range(1000):
        t1, t2 = i / 1000, (i + 1) / 1000
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas.append(min(1 - f(t2) / f(t1), 0.999))
    alphas_cumprod = np.cumprod(1.0 - np.array(betas))
    sqrt_ac, sqrt_1m = noise_schedule()
    assert torch.equal(sqrt_ac, torch.tensor(np.sqrt(alphas_cumprod), dtype=torch.float32))
    assert torch.equal(sqrt_1m, torch.tensor(np.sqrt(1.0 - alphas_cumprod), dtype=torch.float32))


def test_unclip_adm_noises_scales_and_merges_the_embeddings():
    embeds = torch.randn(2, EMBED, generator=torch.Generator().manual_seed(0))
    out = ClipVisionOutput(torch.zeros(2, 5, 32), torch.zeros(2, 5, 32), embeds)
    one = ClipVisionOutput(out.last_hidden_state[:1], out.penultimate_hidden_states[:1], embeds[:1])
    assert torch.equal(unclip_adm(None, adm_channels=1536, seed=5), torch.zeros(1, 1536))
    clean = unclip_adm([UnclipCond(one, 1.0, 0.0)], adm_channels=1536, seed=5)
    assert clean.shape == (1, 1536)
    sqrt_ac, sqrt_1m = noise_schedule()
    noise = torch.randn((1, EMBED), generator=torch.Generator().manual_seed(5 - 10))
    torch.testing.assert_close(clean[:, :EMBED], sqrt_ac[0] * embeds[:1] + sqrt_1m[0] * noise)
    torch.testing.assert_close(clean[:, EMBED:EMBED + 1], torch.ones(1, 1))  # cos(0): level 0's embedding
    double = unclip_adm([UnclipCond(one, 2.0, 0.0)], adm_channels=1536, seed=5)
    torch.testing.assert_close(double, clean * 2)
    merged = unclip_adm([UnclipCond(out, 1.0, 0.3)], adm_channels=1536, seed=5)
    assert torch.equal(merged, unclip_adm([UnclipCond(out, 1.0, 0.3)], adm_channels=1536, seed=5))
    assert not torch.equal(merged, unclip_adm([UnclipCond(out, 1.0, 0.3)], adm_channels=1536, seed=6))
    with pytest.raises(ValueError, match="768"):
        unclip_adm([UnclipCond(one, 1.0, 0.0)], adm_channels=2048, seed=5)


def test_unclip_graph_samples_and_the_image_changes_the_result(env):
    _, registry, _, executor = env

    def graph(strength: float) -> dict:
        return {
            "1": {"class_type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": "unclip.safetensors"}},
            "2": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
            "3": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["1", 3], "image": ["2", 0],
                                                               "crop": "center"}},
            "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
            "5": {"class_type": "unCLIPConditioning", "inputs": {"conditioning": ["4", 0],
                                                                 "clip_vision_output": ["3", 0],
                                                                 "strength": strength, "noise_augmentation": 0.1}},
            "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "7": {"class_type": "KSampler", "inputs": {"seed": 3, "steps": 2, "cfg": 2.0, "sampler_name": "euler",
                                                       "scheduler": "normal", "denoise": 1.0, "model": ["1", 0],
                                                       "positive": ["5", 0], "negative": ["4", 0],
                                                       "latent_image": ["6", 0]}},
            "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": f"u{strength}"}},
        }

    outcome = executor.execute(validate_prompt(graph(1.0), registry), prompt_id="g", events=EventRecorder())
    assert outcome.status == "success", outcome.error

    model, clip, _, tower = run(env, "unCLIPCheckpointLoader", ckpt_name="unclip.safetensors")
    (seen,) = run(env, "CLIPVisionEncode", clip_vision=tower, image=image(), crop="center")
    (text,) = run(env, "CLIPTextEncode", text="a cat", clip=clip)
    (empty,) = run(env, "EmptyLatentImage", width=64, height=64, batch_size=1)

    def sample(strength: float, seed: int = 3) -> torch.Tensor:
        (cond,) = run(env, "unCLIPConditioning", conditioning=text, clip_vision_output=seen, strength=strength,
                      noise_augmentation=0.1)
        (latent,) = run(env, "KSampler", model=model, seed=seed, steps=2, cfg=2.0, sampler_name="euler",
                        scheduler="normal", positive=cond, negative=text, latent_image=empty, denoise=1.0)
        return latent.samples

    with_image, again, without = sample(1.0), sample(1.0), sample(0.0)
    assert torch.equal(with_image, again)
    assert not torch.allclose(with_image, without)
