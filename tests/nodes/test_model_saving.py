"""Saving models in ComfyUI's layouts and loading them back, on tiny random checkpoints: CheckpointSave round trips
bit for bit, merged-and-saved equals merged-in-memory, UNet/VAE/CLIP files, LoraSave's extracted LoRA loads and
reconstructs the difference, and the deprecated CheckpointLoader."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from diffusion.memory import ModelManager
from diffusion.patches import LoraPatch, applied_to_model, lora_delta
from nodes.context import RunContext
from server.compose import build_registry, build_services
from server.config import ServerConfig
from server.paths import ModelNotFound, ServerFolders
from tests.diffusion.tiny_checkpoint import write_tiny_family_checkpoint, write_tiny_sd1_checkpoint

PROMPT = {"1": {"class_type": "CheckpointSave", "inputs": {}}}
EXTRA = {"workflow": {"nodes": [], "links": []}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("saving")
    config = ServerConfig(base_dir=base, load_custom_nodes=False)
    checkpoints = config.models_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    write_tiny_sd1_checkpoint(checkpoints / "a.safetensors", seed=0)
    write_tiny_sd1_checkpoint(checkpoints / "b.safetensors", seed=7)
    write_tiny_family_checkpoint(checkpoints / "xl.safetensors", "sdxl")
    (config.models_dir / "configs").mkdir(parents=True)
    (config.models_dir / "configs" / "v1-inference.yaml").write_text("model: {}\n")
    folders = ServerFolders.from_config(config)
    folders.create_directories()
    registry, _ = build_registry(config, folders)
    services = build_services(config, folders, models=ModelManager(torch.device("cpu")))
    return config, registry, services


def run(env, class_type: str, **inputs):
    _, registry, services = env
    ctx = RunContext(node_id="n", prompt_id="p", services=services,
                     hidden={"PROMPT": PROMPT, "EXTRA_PNGINFO": EXTRA})
    return registry.get(class_type).call(ctx, inputs).values


def reload(env, saved, name: str):
    """Put a saved file into models/checkpoints and load it with CheckpointLoaderSimple."""
    config = env[0]
    shutil.copy(saved, config.models_dir / "checkpoints" / name)
    return run(env, "CheckpointLoaderSimple", ckpt_name=name)


def newest(folder):
    return sorted(folder.glob("*.safetensors"))[-1]


def unet_out(model):
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, model.unet.config.context_dim, generator=g)
    y = None if model.unet.config.adm_in_channels is None else torch.randn(1, model.unet.config.adm_in_channels,
                                                                           generator=g)
    with torch.inference_mode(), applied_to_model(model) as unet:
        return unet(x, torch.tensor([300.0]), ctx, y)


def encoded(env, clip, text="a red fox"):
    return run(env, "CLIPTextEncode", text=text, clip=clip)[0].entries[0]


def test_checkpoint_save_round_trips_bit_for_bit_with_comfyui_metadata(env):
    config = env[0]
    model, clip, vae = run(env, "CheckpointLoaderSimple", ckpt_name="a.safetensors")
    run(env, "CheckpointSave", model=model, clip=clip, vae=vae, filename_prefix="checkpoints/ComfyUI")
    saved = config.output_dir / "checkpoints" / "ComfyUI_00001_.safetensors"
    with safe_open(str(saved), "pt") as f:
        metadata = f.metadata()
        keys = set(f.keys())
    assert json.loads(metadata["prompt"]) == PROMPT and json.loads(metadata["workflow"]) == EXTRA["workflow"]
    assert metadata["modelspec.predict_key"] == "epsilon"
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "first_stage_model.decoder.conv_out.weight" in keys
    assert "cond_stage_model.transformer.text_model.embeddings.position_ids" in keys
    model2, clip2, vae2 = reload(env, saved, "a_saved.safetensors")
    assert torch.equal(unet_out(model2), unet_out(model))
    assert torch.equal(encoded(env, clip2).cross_attn, encoded(env, clip).cross_attn)
    z = torch.randn(1, 4, 4, 4)
    assert torch.equal(vae2.module.decode(z), vae.module.decode(z))
    # a second save never replaces the first
    run(env, "CheckpointSave", model=model, clip=clip, vae=vae, filename_prefix="checkpoints/ComfyUI")
    assert (config.output_dir / "checkpoints" / "ComfyUI_00002_.safetensors").is_file()


def test_merged_and_saved_equals_merged_in_memory(env):
    config = env[0]
    a, clip_a, vae = run(env, "CheckpointLoaderSimple", ckpt_name="a.safetensors")
    b, clip_b, _ = run(env, "CheckpointLoaderSimple", ckpt_name="b.safetensors")
    (merged,) = run(env, "ModelMergeSimple", model1=a, model2=b, ratio=0.4)
    (merged_clip,) = run(env, "CLIPMergeSimple", clip1=clip_a, clip2=clip_b, ratio=0.7)
    run(env, "CheckpointSave", model=merged, clip=merged_clip, vae=vae, filename_prefix="merged/m")
    model2, clip2, _ = reload(env, newest(config.output_dir / "merged"), "merged.safetensors")
    assert model2.patches == () and torch.equal(unet_out(model2), unet_out(merged))
    in_memory = encoded(env, merged_clip).cross_attn  # CLIPTextEncode applies the merge patches itself
    assert not torch.equal(in_memory, encoded(env, clip_a).cross_attn)
    assert torch.equal(encoded(env, clip2).cross_attn, in_memory)


def test_sdxl_checkpoint_keeps_its_text_encoder_layouts_and_modelspec(env):
    config = env[0]
    model, clip, vae = run(env, "CheckpointLoaderSimple", ckpt_name="xl.safetensors")
    run(env, "CheckpointSave", model=model, clip=clip, vae=vae, filename_prefix="xl/x")
    saved = newest(config.output_dir / "xl")
    with safe_open(str(saved), "pt") as f:
        metadata, keys = f.metadata(), set(f.keys())
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    assert metadata["modelspec.title"] == "x 1" and metadata["modelspec.sai_model_spec"] == "1.0.0"
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in keys
    model2, clip2, _ = reload(env, saved, "xl_saved.safetensors")
    assert model2.family.name == "sdxl"
    assert torch.equal(unet_out(model2), unet_out(model))
    assert torch.equal(encoded(env, clip2).pooled, encoded(env, clip).pooled)


def test_model_vae_and_clip_files_load_back(env):
    config = env[0]
    model, clip, vae = run(env, "CheckpointLoaderSimple", ckpt_name="a.safetensors")
    run(env, "ModelSave", model=model, filename_prefix="diffusion_models/ComfyUI")
    unet_only, no_clip, no_vae = reload(env, newest(config.output_dir / "diffusion_models"), "unet.safetensors")
    assert no_clip is None and no_vae is None and torch.equal(unet_out(unet_only), unet_out(model))

    run(env, "VAESave", vae=vae, filename_prefix="vae/ComfyUI_vae")
    saved = newest(config.output_dir / "vae")
    (config.models_dir / "vae").mkdir(exist_ok=True)
    shutil.copy(saved, config.models_dir / "vae" / "v.safetensors")
    (vae2,) = run(env, "VAELoader", vae_name="v.safetensors")
    z = torch.randn(1, 4, 4, 4)
    assert torch.equal(vae2.module.decode(z), vae.module.decode(z))

    run(env, "CLIPSave", clip=clip, filename_prefix="clip/ComfyUI")
    saved = config.output_dir / "clip" / "ComfyUI_clip_l_00001_.safetensors"
    with safe_open(str(saved), "pt") as f:
        assert f.metadata()["format"] == "pt"
        state = {k: f.get_tensor(k) for k in f.keys()}
    assert state.keys() == clip.encoders[0].module.state_dict().keys()
    assert all(torch.equal(v, clip.encoders[0].module.state_dict()[k]) for k, v in state.items())


def test_lora_save_extracts_a_lora_that_lora_loader_applies(env):
    config = env[0]
    base, clip, _ = run(env, "CheckpointLoaderSimple", ckpt_name="a.safetensors")
    target = "input_blocks.1.1.transformer_blocks.0.attn1.to_q"
    layer = base.unet.get_submodule(target)
    g = torch.Generator().manual_seed(4)
    patch = LoraPatch(root="unet", target=target, down=torch.randn(2, layer.in_features, generator=g) * 0.3,
                      up=torch.randn(layer.out_features, 2, generator=g) * 0.3, mid=None, alpha=2.0, strength=1.0)
    tuned = base.with_patches(patch)
    (difference,) = run(env, "ModelMergeSubtract", model1=tuned, model2=base, multiplier=1.0)
    run(env, "LoraSave", filename_prefix="loras/extracted", rank=4, lora_type="standard", bias_diff=False,
        model_diff=difference)
    saved = newest(config.output_dir / "loras")
    with safe_open(str(saved), "pt") as f:
        assert f"diffusion_model.{target}.lora_up.weight" in f.keys() and f.metadata() is None
    (config.models_dir / "loras").mkdir(exist_ok=True)
    shutil.copy(saved, config.models_dir / "loras" / "extracted.safetensors")
    (rebuilt,) = run(env, "LoraLoaderModelOnly", model=base, lora_name="extracted.safetensors", strength_model=1.0)
    delta = lora_delta(patch, layer.weight.shape)
    before = layer.weight.detach().clone()
    with torch.inference_mode(), applied_to_model(rebuilt, mode="merged") as unet:
        got = unet.get_submodule(target).weight - before
    assert (got - delta).norm() / delta.norm() < 0.2  # rank 2 exactly, but for the fp16 file and the 0.99 clamp
    assert torch.equal(layer.weight, before)
    assert run(env, "LoraSave", filename_prefix="loras/none", rank=4, lora_type="standard", bias_diff=True) == ()


def test_checkpoint_loader_checks_the_config_and_loads_the_checkpoint(env):
    model, clip, vae = run(env, "CheckpointLoader", config_name="v1-inference.yaml", ckpt_name="a.safetensors")
    assert model.family.name == "sd1" and clip is not None and vae is not None
    with pytest.raises(ModelNotFound, match="missing.yaml"):
        run(env, "CheckpointLoader", config_name="missing.yaml", ckpt_name="a.safetensors")


def test_streamed_safetensors_read_back_with_every_dtype_and_metadata():
    from safetensors.torch import load

    from diffusion.checkpoint_save import safetensors_chunks

    tensors = {"b.bf16": torch.randn(3, 5).to(torch.bfloat16), "a.f16": torch.randn(7).half(),
               "ids": torch.arange(77).unsqueeze(0), "v_pred": torch.tensor([]), "scalar": torch.tensor(2.5),
               "view": torch.randn(4, 6).t(), "flag": torch.tensor([True, False])}
    data = b"".join(bytes(chunk) for chunk in safetensors_chunks(tensors, {"prompt": "{}"}))
    assert len(data[8:8 + int.from_bytes(data[:8], "little")]) % 8 == 0
    loaded = load(data)
    assert loaded.keys() == tensors.keys()
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key


def test_ksampler_on_a_zero_ratio_merge_samples_exactly_as_the_second_model(env):
    # ComfyUI's ModelMergeSimple: ratio is model1's share (ratio·W1 + (1 − ratio)·W2), so 0 is model2, 1 model1
    a, _, _ = run(env, "CheckpointLoaderSimple", ckpt_name="a.safetensors")
    b, clip, _ = run(env, "CheckpointLoaderSimple", ckpt_name="b.safetensors")
    (merged,) = run(env, "ModelMergeSimple", model1=a, model2=b, ratio=0.0)
    (kept,) = run(env, "ModelMergeSimple", model1=a, model2=b, ratio=1.0)
    (text,) = run(env, "CLIPTextEncode", text="a boat", clip=clip)
    (empty,) = run(env, "EmptyLatentImage", width=64, height=64, batch_size=1)

    def sample(model):
        return run(env, "KSampler", model=model, seed=2, steps=2, cfg=3.0, sampler_name="euler", scheduler="normal",
                   positive=text, negative=text, latent_image=empty, denoise=1.0)[0].samples

    assert torch.equal(sample(merged), sample(b))
    assert torch.equal(sample(kept), sample(a))
    assert not torch.equal(sample(a), sample(b))
