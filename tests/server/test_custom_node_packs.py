"""Custom node packs written for ComfyUI (tests/fixtures/comfy_packs, each in the style of real packs) load through
comfy_compat and run end to end through a real aiohttp server: ComfyUI's modules at import, routes and websocket
messages through PromptServer, ProgressBar progress, subclassed core nodes, and the loader's ComfyUI quirks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import torch
from PIL import Image

from server.app import create_app
from server.cli import _parser as build_parser, config_from_args
from tests.server.conftest import make_config, queue_prompt, wait_history

PACKS = Path(__file__).resolve().parent.parent / "fixtures" / "comfy_packs"


def pack_config(tmp_path: Path, **overrides: Any) -> Any:
    base = tmp_path / "base"
    shutil.copytree(PACKS, base / "custom_nodes", ignore=shutil.ignore_patterns("__pycache__"))
    return make_config(tmp_path, load_custom_nodes=True, **overrides).with_changes(bundled_models_dir=None)


@pytest.fixture
async def packs(aiohttp_client: Any, tmp_path: Path) -> Any:
    config = pack_config(tmp_path)
    luts = config.models_dir / "luts"
    luts.mkdir(parents=True)
    (luts / "warm.cube").write_text("LUT_3D_SIZE 2\n")
    (config.models_dir / "checkpoints").mkdir(parents=True)
    (config.models_dir / "checkpoints" / "a.safetensors").write_bytes(b"")
    client = await aiohttp_client(create_app(config))
    client.config = config
    return client


async def run(client: Any, prompt: dict[str, Any], client_id: str = "t",
              frames: list[bytes] | None = None) -> tuple[dict[str, Any], list[Any]]:
    """Queue `prompt` with a websocket open; (history entry, every message seen until the prompt ended). Binary
    frames (previews) go to `frames` when given."""
    ws = await client.ws_connect(f"/ws?clientId={client_id}")
    await ws.receive_json(timeout=5)
    prompt_id = await queue_prompt(client, prompt, client_id=client_id)
    seen = []
    while True:
        frame = await ws.receive(timeout=60)
        if frame.type != aiohttp.WSMsgType.TEXT:
            if frames is not None and frame.type == aiohttp.WSMsgType.BINARY:
                frames.append(frame.data)
            continue
        message = json.loads(frame.data)
        seen.append(message)
        if message["type"] in ("execution_success", "execution_error", "execution_interrupted") and \
                message["data"].get("prompt_id") == prompt_id:
            break
    await ws.close()
    return await wait_history(client, prompt_id), seen


async def test_packs_load_their_nodes_with_comfyui_quirks_listed(packs):
    info = await (await packs.get("/object_info")).json()
    for name in ("ResizeWithProgress", "ImageStats", "ListFiles", "Unfinished", "Announce", "EmptyLatentForPack",
                 "InvertTwice", "SamplerChoice", "AlwaysFails"):
        assert name in info, name
    assert info["ResizeWithProgress"]["display_name"] == "Resize (with progress)"
    assert info["Unfinished"]["input"]["required"]["value"][1]["max"] == 16384  # nodes.MAX_RESOLUTION
    # A subclass of a core node keeps its inputs and takes its own category.
    assert info["EmptyLatentForPack"]["input"] == info["EmptyLatentImage"]["input"]
    assert info["EmptyLatentForPack"]["category"] == "subclass_pack"
    # comfy.samplers.KSampler.SAMPLERS / SCHEDULERS are the lists the core KSampler offers.
    assert info["SamplerChoice"]["input"]["required"]["sampler_name"][0] == \
        info["KSampler"]["input"]["required"]["sampler_name"][0]
    assert info["SamplerChoice"]["input"]["required"]["scheduler"][0][:3] == ["simple", "sgm_uniform", "karras"]


async def test_progress_bar_and_common_upscale_through_a_prompt(packs):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 16, "batch_size": 3, "color": 0x3366CC}},
        "2": {"class_type": "ResizeWithProgress", "inputs": {"image": ["1", 0], "width": 24, "height": 24,
                                                             "method": "bilinear"}},
        "3": {"class_type": "ImageStats", "inputs": {"image": ["2", 0]}},
    }
    entry, seen = await run(packs, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    progress = [(m["data"]["value"], m["data"]["max"]) for m in seen
                if m["type"] == "progress" and m["data"]["node"] == "2"]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    # ComfyUI's common_upscale with crop "center": crop 32x16 to the 1:1 aspect (16x16, centred), then resize.
    color = torch.tensor([0x33, 0x66, 0xCC], dtype=torch.float32) / 255.0
    image = color.expand(3, 16, 32, 3).movedim(-1, 1)[:, :, :, 8:24]
    expected = torch.nn.functional.interpolate(image, size=(24, 24), mode="bilinear", antialias=True)
    text = entry["outputs"]["3"]["text"][0]
    mean, shape = text.split()
    assert shape == "3x24x24x3"
    assert float(mean) == pytest.approx(float(expected.mean()), abs=1e-4)


async def test_folder_paths_hidden_inputs_and_fewer_return_values(packs):
    prompt = {"5": {"class_type": "ListFiles", "inputs": {"kind": "image_tools_luts"}},
              "6": {"class_type": "ListFiles", "inputs": {"kind": "checkpoints"}}}
    entry, _ = await run(packs, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    # An unknown hidden kind is not passed; one value returned for two outputs is fine (the rest is None).
    assert entry["outputs"]["5"]["text"] == ["warm.cube@5#warm.cube"]
    assert entry["outputs"]["6"]["text"] == ["a.safetensors@6#a.safetensors"]


async def test_a_class_without_function_is_listed_and_fails_when_run(packs):
    entry, seen = await run(packs, {"1": {"class_type": "Unfinished", "inputs": {"value": 3}}})
    assert entry["status"]["status_str"] == "error"
    error = next(m for m in seen if m["type"] == "execution_error")["data"]
    assert "FUNCTION None does not name a method" in error["exception_message"]


async def test_a_failing_pack_node_fails_its_prompt_and_the_server_goes_on(packs):
    entry, seen = await run(packs, {"1": {"class_type": "AlwaysFails", "inputs": {"value": 7}}})
    error = next(m for m in seen if m["type"] == "execution_error")["data"]
    assert entry["status"]["status_str"] == "error" and "failing_pack cannot handle 7" in error["exception_message"]
    entry, seen = await run(packs, {"1": {"class_type": "ExitsWhenRun", "inputs": {"value": 3}}})
    error = next(m for m in seen if m["type"] == "execution_error")["data"]
    assert "called exit(3)" in error["exception_message"]  # and the worker thread goes on:
    entry, _ = await run(packs, {"1": {"class_type": "SamplerChoice",
                                       "inputs": {"sampler_name": "euler", "scheduler": "karras"}},
                                 "2": {"class_type": "ImageStats", "inputs": {
                                     "image": ["3", 0]}},
                                 "3": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8,
                                                                              "batch_size": 1, "color": 0}}})
    assert entry["status"]["status_str"] == "success"


async def test_pack_routes_are_served_behind_our_checks_and_send_sync_reaches_the_websocket(packs):
    for path in ("/route_pack/greeting", "/api/route_pack/greeting"):
        response = await packs.get(path)
        assert response.status == 200 and (await response.json()) == {"greeting": "hello", "binary": 2}
    refused = await packs.post("/route_pack/greeting", json={"greeting": "evil"},
                               headers={"Origin": "https://evil.example"})
    assert refused.status == 403  # the same Origin guard as Chisel's own routes
    changed = await packs.post("/route_pack/greeting", json={"greeting": "bonjour"})
    assert changed.status == 200
    frames: list[bytes] = []
    entry, seen = await run(packs, {"9": {"class_type": "Announce", "inputs": {"text": "Chisel"}}}, client_id="w",
                            frames=frames)
    announced = [m["data"] for m in seen if m["type"] == "route_pack.announce"]
    # the pack's on_prompt handler saw the body first (it upper-cases Announce texts)
    assert announced == [{"node": "9", "message": "bonjour, CHISEL", "prompt_id": entry["prompt"][1]}]
    # A preview sent as ComfyUI's UNENCODED_PREVIEW_IMAGE arrives as a preview frame (PNG, max size applied).
    assert len(frames) == 1
    png = frames[0][frames[0].index(b"\x89PNG"):]
    assert Image.open(__import__("io").BytesIO(png)).size == (16, 8)


async def test_a_pack_web_directory_is_served_as_an_extension(packs):
    listed = await (await packs.get("/extensions")).json()
    assert "/extensions/route_pack/announce.js" in listed
    script = await packs.get("/extensions/route_pack/announce.js")
    assert script.status == 200 and "registerExtension" in await script.text()


async def test_core_nodes_called_and_subclassed_by_a_pack(packs):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x102030}},
        "2": {"class_type": "InvertTwice", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "twice"}},
    }
    entry, _ = await run(packs, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = entry["outputs"]["3"]["images"][0]
    pixels = np.asarray(Image.open(packs.config.output_dir / saved["subfolder"] / saved["filename"]))
    assert tuple(pixels[0, 0]) == (255 - 0x10, 255 - 0x20, 255 - 0x30)


async def test_disabled_packs_are_not_imported(aiohttp_client, tmp_path):
    config = pack_config(tmp_path, disabled_custom_nodes=("route_pack", "subclass_pack.py"))
    client = await aiohttp_client(create_app(config))
    info = await (await client.get("/object_info")).json()
    assert "Announce" not in info and "InvertTwice" not in info and "ListFiles" in info
    assert (await client.get("/route_pack/greeting")).status == 404


def test_the_cli_flags_for_packs():
    args = build_parser().parse_args(["serve", "--disable-custom-node", "route_pack", "--disable-custom-node",
                                      "x.py", "--allow-pickle-custom-nodes"])
    config = config_from_args(args)
    assert config.disabled_custom_nodes == ("route_pack", "x.py") and config.allow_pickle_custom_nodes
    assert config.load_custom_nodes
    assert not config_from_args(build_parser().parse_args(["serve", "--disable-all-custom-nodes"])).load_custom_nodes


# ---- packs that work on models (a tiny random SD1 checkpoint) ---------------------------------------------------
@pytest.fixture
async def model_packs(aiohttp_client: Any, tmp_path: Path) -> Any:
    from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint

    config = pack_config(tmp_path, device="cpu")
    (config.models_dir / "checkpoints").mkdir(parents=True)
    write_tiny_sd1_checkpoint(config.models_dir / "checkpoints" / "tiny.safetensors")
    client = await aiohttp_client(create_app(config))
    client.config = config
    return client


def txt2img(model: list[Any], prefix: str, **extra: dict[str, Any]) -> dict[str, Any]:
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 3, "cfg": 2.5, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": model,
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }
    prompt.update(extra)
    return prompt


def saved(client: Any, entry: dict[str, Any], node: str) -> np.ndarray:
    image = entry["outputs"][node]["images"][0]
    return np.asarray(Image.open(client.config.output_dir / image["subfolder"] / image["filename"]), dtype=np.int16)


async def test_a_pack_sampler_on_common_ksampler_and_comfy_sd_objects_matches_the_core_ksampler(model_packs):
    extra = {"20": {"class_type": "PackSampler", "inputs": {
                 "model": ["4", 0], "clip": ["4", 1], "vae": ["4", 2], "text": "a red circle", "seed": 1, "steps": 3,
                 "sampler_name": "euler", "scheduler": "normal"}},
             "21": {"class_type": "SaveImage", "inputs": {"images": ["20", 1], "filename_prefix": "pack"}},
             "22": {"class_type": "PreviewAny", "inputs": {"source": ["20", 2]}}}
    entry, seen = await run(model_packs, txt2img(["4", 0], "core", **extra))
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert np.array_equal(saved(model_packs, entry, "21"), saved(model_packs, entry, "9"))
    assert entry["outputs"]["22"]["text"] == ["(1, 64, 64, 3) (1, 4, 8, 8) 8"]
    assert [m["data"]["value"] for m in seen if m["type"] == "progress" and m["data"]["node"] == "20"] == [1, 2, 3]


async def test_model_patcher_patches_reach_the_sampler(model_packs):
    extra = {"30": {"class_type": "ScaleDenoised", "inputs": {"model": ["4", 0], "factor": 1.0}},
             "31": {"class_type": "ScaleDenoised", "inputs": {"model": ["4", 0], "factor": 0.5}},
             "32": {"class_type": "MergeWith", "inputs": {"model1": ["4", 0], "model2": ["4", 0], "ratio": 0.5}}}
    for node in ("30", "31", "32"):
        sampler = {**txt2img(["4", 0], "x")["3"]}
        sampler["inputs"] = {**sampler["inputs"], "model": [node, 0]}
        extra[f"3{node}"] = sampler
        extra[f"8{node}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"3{node}", 0], "vae": ["4", 2]}}
        extra[f"9{node}"] = {"class_type": "SaveImage", "inputs": {"images": [f"8{node}", 0],
                                                                   "filename_prefix": f"p{node}"}}
    entry, _ = await run(model_packs, txt2img(["4", 0], "plain", **extra))
    assert entry["status"]["status_str"] == "success", entry["status"]
    plain = saved(model_packs, entry, "9")
    assert np.array_equal(saved(model_packs, entry, "930"), plain)  # factor 1: the same prediction
    assert np.abs(saved(model_packs, entry, "931") - plain).mean() > 1  # factor 0.5 changes the image
    assert np.abs(saved(model_packs, entry, "932") - plain).max() <= 1  # 0.5·W + 0.5·W is W


async def test_the_editor_serves_the_comfyui_app_shim_extensions_import(aiohttp_client, tmp_path):
    repo_web = Path(__file__).resolve().parents[2] / "web"
    client = await aiohttp_client(create_app(pack_config(tmp_path).with_changes(web_root=repo_web)))
    for path in ("/scripts/app.js", "/scripts/api.js"):
        response = await client.get(path)
        assert response.status == 200 and "export * from '/extensions/" in await response.text()
    loader = await client.get("/extensions/loader.js")
    assert loader.status == 200 and "registerExtension" in await (await client.get("/extensions/app.js")).text()
    assert (await client.get("/scripts/other.js")).status == 404
    listed = await (await client.get("/extensions")).json()
    assert sorted(listed) == ["/extensions/route_pack/announce.js", "/extensions/ui_broken_pack/broken.js",
                              "/extensions/ui_broken_pack/litegraph.js"]


async def test_a_k_diffusion_style_sampler_from_a_pack_runs_like_the_core_euler(model_packs):
    def custom(sampler: list[Any], prefix: str) -> dict[str, Any]:
        return {"class_type": "SamplerCustom", "inputs": {
            "model": ["4", 0], "add_noise": True, "noise_seed": 1, "cfg": 2.5, "positive": ["6", 0],
            "negative": ["7", 0], "sampler": sampler, "sigmas": ["41", 0], "latent_image": ["5", 0]}}

    extra = {"40": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
             "41": {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": 3,
                                                               "denoise": 1.0}},
             "42": {"class_type": "MyEulerSampler", "inputs": {"which": "mine"}},
             "43": {"class_type": "MyEulerSampler", "inputs": {"which": "k_diffusion"}}}
    for node in ("40", "42", "43"):
        extra[f"5{node}"] = custom([node, 0], node)
        extra[f"6{node}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"5{node}", 0], "vae": ["4", 2]}}
        extra[f"7{node}"] = {"class_type": "SaveImage", "inputs": {"images": [f"6{node}", 0],
                                                                   "filename_prefix": f"s{node}"}}
    entry, seen = await run(model_packs, txt2img(["4", 0], "k", **extra))
    assert entry["status"]["status_str"] == "success", entry["status"]
    core = saved(model_packs, entry, "7" + "40")
    assert np.abs(saved(model_packs, entry, "742") - core).max() <= 1
    assert np.array_equal(saved(model_packs, entry, "743"), core)
    assert [m["data"]["value"] for m in seen if m["type"] == "progress" and m["data"]["node"] == "542"] == [1, 2, 3]
