"""comfy_compat, piece by piece: the import finder, folder_paths over the server's folders, comfy.utils,
comfy.model_management's interrupt, the nodes/server names added to Chisel's packages, and the loader's reports."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

from nodes.catalog import core_nodes
from nodes.context import Interrupted, RunContext
from nodes.custom_nodes import PackEnvironment, load_custom_nodes
from nodes.registry import Registry
from nodes.services import RunSettings, Services
from server.paths import ServerFolders


@pytest.fixture
def bound(tmp_path: Path):
    """The surface bound to a server rooted at tmp_path (as the loader binds it)."""
    from comfy_compat.setup import setup

    folders = ServerFolders(models_dir=tmp_path / "models", input_dir=tmp_path / "input",
                            output_dir=tmp_path / "output", temp_dir=tmp_path / "temp", user_dir=tmp_path / "user")
    folders.create_directories()
    services = Services(folders=folders, settings=RunSettings())
    registry = Registry(list_files=folders.list_files)
    registry.add_all(core_nodes())
    import server

    setup(services=services, registry=registry, base_dir=str(tmp_path), custom_nodes_dir=str(tmp_path / "cn"),
          host_modules={"nodes": sys.modules["nodes"], "server": server})
    return folders, services, registry


def test_comfyui_names_are_the_surface_modules(bound):
    import comfy.utils
    import folder_paths

    from comfy_compat.surface import folder_paths as surface_folder_paths
    from comfy_compat.surface.comfy import utils as surface_utils

    assert folder_paths is surface_folder_paths and comfy.utils is surface_utils
    assert importlib.import_module("comfy.model_management").__name__ == "comfy_compat.surface.comfy.model_management"


def test_a_comfyui_internal_chisel_lacks_imports_and_fails_naming_itself_when_used(bound):
    from comfy_compat.surface.unavailable import NotInChisel

    attention = importlib.import_module("comfy.ldm.modules.attention")
    from comfy.ldm.modules.attention import optimized_attention  # an import at the top of a pack module works

    class Subclassed(attention.CrossAttention):  # so does subclassing at import
        pass

    with pytest.raises(NotInChisel, match="comfy.ldm.modules.attention.optimized_attention"):
        optimized_attention(None, None, None, 8)
    with pytest.raises(NotInChisel, match="CrossAttention"):
        Subclassed()
    import comfy.samplers

    assert hasattr(comfy.samplers, "sampling_function") and not hasattr(comfy.samplers, "no_such_name")
    with pytest.raises(ModuleNotFoundError, match="comfy.no_such_module"):
        importlib.import_module("comfy.no_such_module")


def test_folder_paths_follows_the_server_folders(bound, tmp_path):
    import folder_paths

    folders, _, _ = bound
    (tmp_path / "models" / "loras" / "style").mkdir(parents=True)
    (tmp_path / "models" / "loras" / "style" / "ink.safetensors").write_bytes(b"x")
    (tmp_path / "models" / "loras" / "notes.txt").write_text("not a model")
    assert folder_paths.get_filename_list("loras") == ["style/ink.safetensors"]
    assert folder_paths.get_full_path("loras", "style/ink.safetensors") == \
        str(tmp_path / "models" / "loras" / "style" / "ink.safetensors")
    assert folder_paths.get_full_path("loras", "../loras/style/ink.safetensors") is None  # no escaping the folder
    assert folder_paths.get_full_path("nonexistent_kind", "x") is None
    with pytest.raises(FileNotFoundError):
        folder_paths.get_full_path_or_raise("loras", "missing.safetensors")
    assert folder_paths.get_output_directory() == str(folders.directory("output"))
    assert folder_paths.get_folder_paths("clip") == [str(d) for d in folders.search_dirs("text_encoders")]
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    (extra / "far.safetensors").write_bytes(b"x")
    folder_paths.add_model_folder_path("loras", str(extra))
    assert folder_paths.get_filename_list("loras") == ["far.safetensors", "style/ink.safetensors"]
    with pytest.raises(KeyError):
        folder_paths.get_filename_list("no_such_kind")


def test_save_image_path_counts_up_and_refuses_escapes(bound, tmp_path):
    import folder_paths

    out = folder_paths.get_output_directory()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path("sub/pic", out, 8, 8)
    assert (name, counter, subfolder) == ("pic", 1, "sub")
    (Path(folder) / "pic_00004_.png").write_bytes(b"")
    assert folder_paths.get_save_image_path("sub/pic", out)[2] == 5
    with pytest.raises(Exception, match="outside the output folder"):
        folder_paths.get_save_image_path("../../etc/pic", out)


def test_load_torch_file_reads_safetensors_and_refuses_pickled_objects(bound, tmp_path):
    import safetensors.torch

    import comfy.utils

    safetensors.torch.save_file({"w": torch.ones(2)}, str(tmp_path / "a.safetensors"), metadata={"k": "v"})
    sd, meta = comfy.utils.load_torch_file(str(tmp_path / "a.safetensors"), return_metadata=True)
    assert torch.equal(sd["w"], torch.ones(2)) and meta == {"k": "v"}
    torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "plain.pt")
    assert torch.equal(comfy.utils.load_torch_file(str(tmp_path / "plain.pt"))["w"], torch.zeros(3))

    class Payload:
        def __reduce__(self):
            return (print, ("pickle ran code",))

    torch.save({"w": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(RuntimeError, match="allow-pickle-custom-nodes"):
        comfy.utils.load_torch_file(str(tmp_path / "evil.pt"))


def test_common_upscale_matches_the_core_nodes_and_bislerp(bound):
    import comfy.utils

    from nodes.latent import bislerp
    from nodes.tensor_ops import upscale

    x = torch.rand(2, 3, 10, 14, generator=torch.Generator().manual_seed(0))
    assert torch.equal(comfy.utils.common_upscale(x, 7, 5, "area", "disabled"), upscale(x, 7, 5, "area"))
    assert torch.equal(comfy.utils.common_upscale(x, 20, 20, "bislerp", "disabled"), bislerp(x, 20, 20))
    assert comfy.utils.common_upscale(x, 8, 8, "bicubic", "center").shape == (2, 3, 8, 8)
    assert comfy.utils.repeat_to_batch_size(torch.arange(3), 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert comfy.utils.resize_to_batch_size(torch.arange(4), 2).tolist() == [0, 3]


def test_devices_and_dtypes_as_comfyui_answers_on_a_cpu_server(bound):
    import comfy.model_management as mm

    assert mm.intermediate_device() == torch.device("cpu") and mm.intermediate_dtype() == torch.float32
    assert mm.is_device_cpu(mm.intermediate_device())


def test_progress_bar_and_interrupt_reach_the_run_in_progress(bound):
    import comfy.model_management
    import comfy.utils

    from comfy_compat import host

    _, services, _ = bound
    reported, stop = [], []
    ctx = RunContext(node_id="4", prompt_id="p", services=services,
                     report_progress=lambda v, t, preview: reported.append((v, t)), is_interrupted=lambda: bool(stop))
    with host.running(ctx):
        bar = comfy.utils.ProgressBar(4)
        bar.update(1)
        bar.update_absolute(9)  # clipped to the total
        comfy.model_management.throw_exception_if_processing_interrupted()
        stop.append(True)
        assert comfy.model_management.processing_interrupted()
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            comfy.model_management.throw_exception_if_processing_interrupted()
    assert reported == [(1, 4), (4, 4)]
    assert comfy.model_management.InterruptProcessingException is Interrupted


def test_chisel_packages_get_comfyui_names_but_keep_their_own(bound):
    import nodes
    import server
    from server import PromptServer

    assert nodes.MAX_RESOLUTION == 16384 and "KSampler" in nodes.NODE_CLASS_MAPPINGS
    assert nodes.image.__name__ == "nodes.image"  # our submodule is not replaced
    assert PromptServer.instance is server.PromptServer.instance
    assert nodes.KSampler.FUNCTION == "sample" and nodes.CLIPTextEncode.RETURN_TYPES == ("CONDITIONING",)
    assert nodes.ImageInvert().invert(torch.zeros(1, 2, 2, 3))[0].eq(1).all()


def test_comfy_types_io_any_matches_everything(bound):
    from comfy.comfy_types.node_typing import IO

    assert not (IO.ANY != "IMAGE") and not (IO.NUMBER != "INT") and (IO.IMAGE != "MASK")


def test_a_pack_that_swallows_its_import_error_is_reported_with_the_missing_module(bound, tmp_path):
    _, services, registry = bound
    packs = tmp_path / "cn"
    (packs / "quiet").mkdir(parents=True)
    (packs / "quiet" / "__init__.py").write_text(
        "try:\n    from .impl import NODE_CLASS_MAPPINGS\nexcept ImportError:\n    print('install requirements')\n")
    (packs / "quiet" / "impl.py").write_text("from comfy.ldm.wan.vae import RMS_norm\nimport chisel_absent_dep\n"
                                            "NODE_CLASS_MAPPINGS = {}\n")
    (packs / "off.py").write_text("raise SystemExit('never imported')\n")
    reports = {r.name: r for r in load_custom_nodes(packs, registry, environment=PackEnvironment(
        services=services, base_dir=tmp_path, disabled=frozenset({"off.py"})))}
    assert not reports["quiet"].loaded and "chisel_absent_dep" in reports["quiet"].error
    assert "comfy.ldm.wan.vae.RMS_norm" in reports["quiet"].comfy_placeholders
    assert reports["off"].disabled and not reports["off"].loaded


def test_a_pack_cannot_install_packages_while_it_is_imported(bound, tmp_path):
    _, services, registry = bound
    packs = tmp_path / "cn"
    packs.mkdir()
    (packs / "installer.py").write_text(
        "import subprocess, sys\n"
        "subprocess.check_call([sys.executable, '-m', 'pip', 'install', 'chisel-no-such-package'])\n"
        "NODE_CLASS_MAPPINGS = {}\n")
    (packs / "pip_importer.py").write_text("import pip\npip.main(['install', 'x'])\nNODE_CLASS_MAPPINGS = {}\n")
    reports = {r.name: r for r in load_custom_nodes(packs, registry, environment=PackEnvironment(
        services=services, base_dir=tmp_path))}
    assert "PermissionError" in reports["installer"].error and "install packages" in reports["installer"].error
    assert "tried to run pip" in reports["pip_importer"].error
    import subprocess

    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).returncode == 0  # only packs


def test_comfy_sd_objects_and_lora_loading_agree_with_the_core_nodes(bound, tmp_path):
    """load_checkpoint_guess_config, load_lora_for_models and VAE from a state dict give what the core
    CheckpointLoaderSimple / LoraLoader nodes give (on a tiny random SD1 checkpoint)."""
    import comfy.sd
    import comfy.utils
    import nodes
    import safetensors.torch

    from diffusion.patches import applied_to_model
    from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint

    (tmp_path / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    path = write_tiny_sd1_checkpoint(tmp_path / "models" / "checkpoints" / "tiny.safetensors").path
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path))
    core_model, core_clip, core_vae = nodes.CheckpointLoaderSimple().load_checkpoint("tiny.safetensors")
    assert model.handle.unet is core_model.handle.unet  # one shared copy of the weights

    layer = model.handle.unet.get_submodule("input_blocks.1.1.transformer_blocks.0.attn1.to_q")
    generator = torch.Generator().manual_seed(0)
    base = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    lora = {f"{base}.lora_down.weight": torch.randn(2, layer.in_features, generator=generator),
            f"{base}.lora_up.weight": torch.randn(layer.out_features, 2, generator=generator),
            f"{base}.alpha": torch.tensor(2.0)}
    (tmp_path / "models" / "loras").mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(lora, str(tmp_path / "models" / "loras" / "q.safetensors"))
    patched, _ = comfy.sd.load_lora_for_models(model, clip, comfy.utils.load_torch_file(
        str(tmp_path / "models" / "loras" / "q.safetensors")), 0.7, 1.0)
    core_patched, _ = nodes.LoraLoader().load_lora(core_model, core_clip, "q.safetensors", 0.7, 1.0)
    x = torch.randn(1, 4, 8, 8, generator=generator)
    t = torch.tensor([500.0])
    context = torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad(), applied_to_model(patched.to_handle()) as unet:
        ours = unet(x, t, context=context)
    with torch.no_grad(), applied_to_model(core_patched.to_handle()) as unet:
        core = unet(x, t, context=context)
    with torch.no_grad():
        plain = model.handle.unet(x, t, context=context)
    assert torch.equal(ours, core) and not torch.allclose(ours, plain)

    image = torch.rand(1, 16, 16, 3, generator=generator)
    from_state_dict = comfy.sd.VAE(sd=vae.get_sd())
    assert torch.allclose(from_state_dict.encode(image), vae.encode(image), atol=1e-5)
    assert vae.decode(vae.encode(image)).shape == (1, 16, 16, 3)


def test_model_patcher_patches_become_the_handle_s_model_options(bound, tmp_path):
    from comfy.model_patcher import ModelPatcher

    from diffusion.families import SD1
    from diffusion.handles import Model
    from diffusion.model_sampling import DiscreteSampling

    handle = Model(unet=torch.nn.Linear(2, 2), family=SD1, sampling=DiscreteSampling.linear())
    patcher = ModelPatcher(handle)
    assert patcher.to_handle() is handle  # nothing patched: the same value

    def attn(n, context, value, extra):
        return n, context, value

    def out_block(h, hsp, transformer_options):
        return h, hsp

    def replace(q, k, v, extra):
        return q

    def cfg(args):
        return args["cond"]

    clone = patcher.clone()
    clone.set_model_attn1_patch(attn)
    clone.set_model_output_block_patch(out_block)
    clone.set_model_attn2_replace(replace, "input", 4, 0)
    clone.set_model_sampler_cfg_function(cfg, disable_cfg1_optimization=True)
    clone.model_options["transformer_options"]["my_key"] = 3
    options = clone.to_handle().options
    assert options.patches["attn1_patch"] == (attn,) and options.patches["output_block_patch"] == (out_block,)
    assert options.patches_replace["attn2"][("input", 4, 0)] is replace
    assert options.sampler_cfg_function is cfg and options.disable_cfg1_optimization
    assert options.transformer_extra["my_key"] == 3
    assert patcher.model_options == handle.options.to_comfy()  # the clone's patches never reach the original
    assert patcher.get_model_object("model_sampling") is handle.sampling
    clone.add_object_patch("model_sampling", "other")
    assert clone.to_handle().sampling == "other"


def test_clip_weight_patches_from_a_pack_merge_two_clips(bound, tmp_path):
    """CLIPMergeSimple the way packs write it: clip2's key patches added to clip1 at (1 - r, r)."""
    import comfy.sd

    from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint

    (tmp_path / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    one = write_tiny_sd1_checkpoint(tmp_path / "models" / "checkpoints" / "a.safetensors", seed=1).path
    two = write_tiny_sd1_checkpoint(tmp_path / "models" / "checkpoints" / "b.safetensors", seed=2).path
    clip1 = comfy.sd.load_checkpoint_guess_config(str(one))[1]
    clip2 = comfy.sd.load_checkpoint_guess_config(str(two))[1]
    merged = clip1.clone()
    for key, patch in clip2.get_key_patches().items():
        merged.add_patches({key: patch}, 1.0, 0.0)  # all of clip2
    tokens = clip1.tokenize("a red circle")
    assert torch.allclose(merged.encode_from_tokens(tokens), clip2.encode_from_tokens(tokens), atol=1e-5)
    assert not torch.allclose(clip1.encode_from_tokens(tokens), clip2.encode_from_tokens(tokens), atol=1e-3)
    assert not clip1.patches  # the clone's patches never reach the original


def test_model_options_helpers_of_comfy_model_patcher(bound):
    from comfy.model_patcher import (
        create_model_options_clone, set_model_options_patch_replace, set_model_options_post_cfg_function)

    def patch(q, k, v, extra):
        return q

    original = {"transformer_options": {"patches_replace": {"attn1": {}}}}
    changed = set_model_options_patch_replace(create_model_options_clone(original), patch, "attn1", "middle", 0)
    assert changed["transformer_options"]["patches_replace"]["attn1"] == {("middle", 0): patch}
    assert original["transformer_options"]["patches_replace"]["attn1"] == {}
    assert set_model_options_post_cfg_function({}, patch, True) == {"sampler_post_cfg_function": [patch],
                                                                   "disable_cfg1_optimization": True}
