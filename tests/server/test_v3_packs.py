"""Packs written against ComfyUI's V3 node API (comfy_entrypoint, io.ComfyNode) and async node functions
(tests/fixtures/comfy_v3_packs) load through comfy_compat and run through POST /prompt on a real aiohttp server."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.routes.state import STATE
from tests.server.conftest import make_config, queue_prompt, wait_history

PACKS = Path(__file__).resolve().parent.parent / "fixtures" / "comfy_v3_packs"
OBJECT_INFO = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui_object_info" / "object_info.json"


@pytest.fixture
async def packs(aiohttp_client: Any, tmp_path: Path) -> Any:
    base = tmp_path / "base"
    shutil.copytree(PACKS, base / "custom_nodes", ignore=shutil.ignore_patterns("__pycache__"))
    config = make_config(tmp_path, load_custom_nodes=True).with_changes(bundled_models_dir=None)
    return await aiohttp_client(create_app(config))


def image(color: int = 0xFFFFFF, node: str = "img") -> dict[str, Any]:
    return {node: {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}}}


async def run(client: Any, prompt: dict[str, Any], **body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Queue `prompt` with a websocket open; (history entry, the messages of the prompt)."""
    ws = await client.ws_connect("/ws?clientId=v3")
    await ws.receive_json(timeout=5)
    prompt_id = await queue_prompt(client, prompt, client_id="v3", **body)
    seen = []
    while True:
        message = await ws.receive_json(timeout=30)
        seen.append(message)
        if message["type"] in ("execution_success", "execution_error", "execution_interrupted") and \
                message["data"].get("prompt_id") == prompt_id:
            break
    await ws.close()
    return await wait_history(client, prompt_id), seen


def executed(client: Any) -> tuple[str, ...]:
    return client.server.app[STATE].engine.worker.last_outcome.executed


async def test_v3_nodes_are_served_in_comfyui_v3_object_info_shape(packs):
    info = await (await packs.get("/object_info")).json()
    gain = info["ImageGainV3"]
    reference = json.loads(OBJECT_INFO.read_text())["ImageStitch"]  # a V3 core node as ComfyUI serves it
    assert [key for key in gain if key != "is_input_list"] == list(reference)  # Chisel adds is_input_list
    assert gain["input"]["required"]["image"] == ["IMAGE", {}]
    assert gain["input"]["required"]["channel"] == ["COMBO", {"default": "all", "multiselect": False,
                                                              "options": ["all", "red", "green", "blue"]}]
    assert gain["input"]["required"]["gain"] == ["FLOAT", {"tooltip": "Factor.", "default": 1.0, "min": 0.0,
                                                           "max": 4.0, "step": 0.05}]
    assert gain["input"]["optional"] == {"mask": ["MASK", {}]}
    assert gain["input_order"] == {"required": ["image", "gain", "channel", "clamp"], "optional": ["mask"]}
    assert gain["output_tooltips"] == ["The adjusted image."] and gain["output_matchtypes"] is None
    assert (gain["display_name"], gain["category"], gain["python_module"]) == \
        ("Image Gain", "image/adjust", "custom_nodes.levels_v3")
    assert (gain["deprecated"], gain["experimental"], gain["api_node"]) == (False, False, False)
    caption = info["CaptionV3"]
    assert caption["display_name"] is None and caption["output_node"] is True
    assert caption["input"]["required"]["text"] == ["STRING", {"default": "hello", "multiline": True}]
    # an output node asks for the prompt and the workflow, as ComfyUI's Schema.finalize adds them
    assert caption["input"]["hidden"] == {"unique_id": ["UNIQUE_ID"], "prompt": ["PROMPT"],
                                          "extra_pnginfo": ["EXTRA_PNGINFO"]}
    assert caption["output_tooltips"] == [None]
    assert info["AsyncBlur"]["display_name"] == "Async Blur"


async def test_v3_node_runs_with_hidden_inputs_ui_and_fingerprint(packs):
    prompt = {"c": {"class_type": "CaptionV3", "inputs": {"text": "hi", "prefix": "#", "repeat": 2}}}
    entry, seen = await run(packs, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"]["c"] == {"text": ["#hi #hi @c"]}
    assert [m["data"]["output"] for m in seen if m["type"] == "executed"] == [{"text": ["#hi #hi @c"]}]
    entry, _ = await run(packs, prompt)  # same fingerprint: served from the cache
    assert executed(packs) == ()
    prompt["c"]["inputs"]["repeat"] = 1
    await run(packs, prompt)
    assert executed(packs) == ("c",)


async def test_v3_validate_inputs_rejects_the_prompt(packs):
    prompt = {"c": {"class_type": "CaptionV3", "inputs": {"text": "hi", "prefix": "", "repeat": 1}}}
    response = await packs.post("/prompt", json={"prompt": prompt})
    body = await response.json()
    assert response.status == 400
    assert body["node_errors"]["c"]["errors"][0]["type"] == "custom_validation_failed"
    assert "prefix must not be empty" in body["node_errors"]["c"]["errors"][0]["details"]


async def test_v3_image_nodes_lazy_inputs_and_expansion_run_end_to_end(packs):
    prompt = {**image(0x808080, "grey"), **image(0x000000, "black"),
              "g": {"class_type": "ImageGainV3", "inputs": {"image": ["grey", 0], "gain": 2.0, "channel": "red",
                                                            "clamp": True}},
              "pick": {"class_type": "PickLazyV3", "inputs": {"first": True, "a": ["g", 0], "b": ["black", 0]}},
              "chain": {"class_type": "GainChainV3", "inputs": {"image": ["pick", 0], "steps": 3, "gain": 0.5}},
              "save": {"class_type": "SaveImage", "inputs": {"images": ["chain", 0], "filename_prefix": "v3"}}}
    entry, seen = await run(packs, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    ran = executed(packs)
    assert "black" not in ran  # the lazy branch not picked never ran
    inner = [node for node in ran if node.startswith("chain.")]
    assert len(inner) == 3 and ran.index("chain") > max(ran.index(node) for node in inner)
    assert all(re.fullmatch(r"chain\.0\.\d+\.\d+", node) for node in inner)  # ComfyUI's GraphBuilder ids
    # the inner nodes' messages show the expanding node
    assert {m["data"]["display_node"] for m in seen if m["type"] == "executing" and
            m["data"]["node"] in inner} == {"chain"}
    from PIL import Image

    saved = entry["outputs"]["save"]["images"][0]
    pixels = Image.open(packs.server.app[STATE].config.output_dir / saved["filename"]).getpixel((0, 0))
    # red: 128 * 2 -> 1.0 (clamped), then / 8 by the chain (255 / 8 = 31.9, truncated); green and blue: 128 / 8
    assert pixels == (31, 16, 16)


async def test_async_nodes_run_report_progress_and_are_awaited_on_the_worker(packs):
    prompt = {**image(),
              "blur": {"class_type": "AsyncBlur", "inputs": {"image": ["img", 0], "seconds": 0.2, "steps": 4}},
              "inv": {"class_type": "SlowInvertV3", "inputs": {"image": ["blur", 0], "seconds": 0.1}},
              "save": {"class_type": "SaveImage", "inputs": {"images": ["inv", 0], "filename_prefix": "async"}}}
    entry, seen = await run(packs, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    progress = [(m["data"]["node"], m["data"]["value"], m["data"]["max"]) for m in seen if m["type"] == "progress"]
    assert [p for p in progress if p[0] == "blur"] == [("blur", n, 4) for n in (1, 2, 3, 4)]
    assert [p for p in progress if p[0] == "inv"] == [("inv", n, 4) for n in (1, 2, 3, 4)]
    # the server stays responsive while nodes await
    assert (await packs.get("/queue")).status == 200


async def test_an_awaiting_async_node_is_cancelled_by_interrupt(packs):
    prompt = {**image(),
              "blur": {"class_type": "AsyncBlur", "inputs": {"image": ["img", 0], "seconds": 30.0, "steps": 1}},
              "save": {"class_type": "SaveImage", "inputs": {"images": ["blur", 0], "filename_prefix": "never"}}}
    prompt_id = await queue_prompt(packs, prompt)
    worker = packs.server.app[STATE].engine.worker
    deadline = time.monotonic() + 10
    while (worker.running() is None or worker.running().node_id != "blur") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    started = time.monotonic()
    assert (await packs.post("/interrupt", json={})).status == 200
    entry = await wait_history(packs, prompt_id, timeout=10)
    assert time.monotonic() - started < 5
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"


async def test_v3_ui_previews_write_into_temp(packs):
    prompt = {**image(0x00FF00), "p": {"class_type": "PreviewMaskedV3", "inputs": {"image": ["img", 0]}}}
    entry, seen = await run(packs, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (preview,) = entry["outputs"]["p"]["images"]
    assert preview["type"] == "temp" and preview["filename"].startswith("ComfyUI_temp_")
    assert entry["outputs"]["p"]["animated"] == [False]
    response = await packs.get("/view", params={"filename": preview["filename"], "type": "temp"})
    assert response.status == 200 and (await response.read())[:4] == b"\x89PNG"


async def test_an_expanding_v3_node_is_cached_by_its_own_inputs(packs):
    prompt = {**image(0x808080),
              "chain": {"class_type": "GainChainV3", "inputs": {"image": ["img", 0], "steps": 2, "gain": 0.5}},
              "save": {"class_type": "PreviewImage", "inputs": {"images": ["chain", 0]}}}
    await run(packs, prompt)
    assert "chain" in executed(packs)
    await run(packs, prompt)  # its inner nodes got the image as a value (never cached), the node itself is
    assert "chain" not in executed(packs) and not [n for n in executed(packs) if n.startswith("chain.")]


# ---- MatchType, MultiType, Autogrow and DynamicCombo (tests/fixtures/comfy_v3_packs/dynamic_v3) ------------------
def show(source: list[Any], node: str) -> dict[str, Any]:
    return {node: {"class_type": "PreviewAny", "inputs": {"source": source}}}


def shown(entry: dict[str, Any], node: str) -> str:
    return entry["outputs"][node]["text"][0]


async def test_dynamic_v3_inputs_are_served_in_comfyui_compact_shape(packs):
    info = await (await packs.get("/object_info")).json()
    reference = json.loads(OBJECT_INFO.read_text())
    blend = info["BlendMatchV3"]
    template = {"template_id": "image_or_mask", "allowed_types": "IMAGE,MASK"}
    assert blend["input"]["required"]["a"] == ["COMFY_MATCHTYPE_V3", {"template": template}]
    assert blend["input"]["optional"]["b"] == ["IMAGE,MASK", {"tooltip": "Blended in."}]
    assert (blend["output"], blend["output_name"], blend["output_matchtypes"]) == \
        (["COMFY_MATCHTYPE_V3"], ["blended"], ["image_or_mask"])
    # as ComfyUI serves its own MatchType nodes
    resize = reference["ResizeImageMaskNode"]
    assert resize["input"]["required"]["input"][0] == blend["input"]["required"]["a"][0]
    assert [key for key in blend if key != "is_input_list"] == list(resize)
    stack = info["StackImagesV3"]
    assert stack["input"] == {"required": {"images": ["COMFY_AUTOGROW_V3", {"template": {
        "input": {"required": {"image": ["IMAGE", {}]}}, "prefix": "image", "min": 1, "max": 4}}]}}
    assert stack["input_order"] == {"required": ["images"]}
    core = reference["BatchImagesNode"]["input"]["required"]["images"]
    assert list(core[1]["template"]) == list(stack["input"]["required"]["images"][1]["template"])
    calc = info["CalculateV3"]["input"]["required"]
    assert calc["variables"] == ["COMFY_AUTOGROW_V3", {"template": {
        "input": {"required": {}, "optional": {"var": ["INT,FLOAT,BOOLEAN", {}]}},
        "names": ["a", "b", "c", "d"], "min": 2}}]
    assert calc["offset"] == ["FLOAT,INT", {"default": 0.5, "widgetType": "FLOAT", "min": -10.0, "max": 10.0}]
    shape = info["ShapeV3"]["input"]["required"]["shape"]
    assert shape[0] == "COMFY_DYNAMICCOMBO_V3" and shape[1]["tooltip"] == "The kind of shape."
    assert [option["key"] for option in shape[1]["options"]] == ["square", "rect", "dot", "none"]
    assert shape[1]["options"][1]["inputs"] == {
        "required": {"width": ["INT", {"default": 4, "min": 1, "max": 64}],
                     "height": ["INT", {"default": 2, "min": 1, "max": 64}]},
        "optional": {"rounded": ["BOOLEAN", {}]}}
    assert shape[1]["options"][3]["inputs"] == {"required": {}}
    assert info["ShapeV3"]["input_order"] == {"required": ["shape", "label"]}


async def test_matchtype_and_multitype_inputs_validate_and_run(packs):
    prompt = {**image(0xFFFFFF, "white"), **image(0x000000, "black"),
              "blend": {"class_type": "BlendMatchV3", "inputs": {"a": ["white", 0], "b": ["black", 0],
                                                                 "factor": 0.25}},
              "mask": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 8, "height": 8}},
              "masked": {"class_type": "BlendMatchV3", "inputs": {"a": ["mask", 0], "b": ["white", 0],
                                                                  "factor": 0.5}},
              "save": {"class_type": "SaveImage", "inputs": {"images": ["blend", 0], "filename_prefix": "match"}},
              **show(["masked", 0], "shown")}
    entry, _ = await run(packs, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    from PIL import Image

    saved = entry["outputs"]["save"]["images"][0]
    pixels = Image.open(packs.server.app[STATE].config.output_dir / saved["filename"]).getpixel((0, 0))
    assert pixels == (191, 191, 191)  # 255 * 0.75
    # a mask in, a mask out: [1, 8, 8] of 0.5 (the white image's mean blended into an empty mask)
    assert shown(entry, "shown").startswith("tensor([[[0.5000, 0.5000")
    # a LATENT fits neither the MatchType nor the MultiType socket
    latent = {"lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}
    for name in ("a", "b"):
        bad = {**image(), **latent, "blend": {"class_type": "BlendMatchV3", "inputs": {
            "a": ["img", 0], "b": ["img", 0], "factor": 0.5, name: ["lat", 0]}}, **show(["blend", 0], "shown")}
        response = await packs.post("/prompt", json={"prompt": bad})
        body = await response.json()
        assert response.status == 400, body
        assert body["node_errors"]["blend"]["errors"][0]["type"] == "return_type_mismatch"


async def test_autogrow_slots_are_grouped_for_execute(packs):
    prompt = {**image(0xFF0000, "red"), **image(0x00FF00, "green"),
              "stack": {"class_type": "StackImagesV3", "inputs": {"images.image0": ["red", 0],
                                                                  "images.image2": ["green", 0]}},
              "size": {"class_type": "GetImageSize", "inputs": {"image": ["stack", 0]}},
              **show(["stack", 1], "slots"), **show(["size", 2], "count"),
              "i": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
              "f": {"class_type": "PrimitiveFloat", "inputs": {"value": 0.25}},
              "calc": {"class_type": "CalculateV3", "inputs": {"variables.a": ["i", 0], "variables.c": ["f", 0],
                                                               "offset": 1.5}},
              **show(["calc", 0], "sum"), **show(["calc", 1], "names")}
    entry, _ = await run(packs, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert shown(entry, "slots") == "image0,image2"
    assert shown(entry, "count") == "2"
    assert (shown(entry, "sum"), shown(entry, "names")) == ("4.75", "a,c")
    # the offset widget also takes an INT link (MultiType), and the slots check their own types
    prompt["calc"]["inputs"]["offset"] = ["i", 0]
    entry, _ = await run(packs, prompt)
    assert shown(entry, "sum") == "6.25", entry["status"]
    prompt["calc"]["inputs"]["variables.b"] = ["red", 0]
    response = await packs.post("/prompt", json={"prompt": prompt})
    body = await response.json()
    assert response.status == 400 and body["node_errors"]["calc"]["errors"][0]["type"] == "return_type_mismatch"


async def test_dynamic_combo_reveals_the_chosen_options_inputs(packs):
    prompt = {"s": {"class_type": "ShapeV3", "inputs": {"shape": "rect", "shape.width": 5, "shape.height": 3,
                                                        "label": "box"}}, **show(["s", 0], "out")}
    entry, _ = await run(packs, prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert shown(entry, "out") == 'box: {"height": 3, "rounded": null, "shape": "rect", "width": 5}'
    # the values of options not chosen are not passed; each option checks its own ranges
    prompt["s"]["inputs"].update({"shape": "square", "shape.size": 40})
    entry, _ = await run(packs, prompt)
    assert shown(entry, "out") == 'box: {"shape": "square", "size": 40}'
    prompt["s"]["inputs"]["shape"] = "none"
    entry, _ = await run(packs, prompt)
    assert shown(entry, "out") == 'box: {"shape": "none"}'

    async def rejected(inputs: dict[str, Any]) -> dict[str, Any]:
        response = await packs.post("/prompt", json={"prompt": {
            "s": {"class_type": "ShapeV3", "inputs": {"label": "x", **inputs}}, **show(["s", 0], "out")}})
        body = await response.json()
        assert response.status == 400, body
        return body["node_errors"]["s"]["errors"][0]

    error = await rejected({"shape": "dot", "shape.size": 40})  # "dot" allows 1..4, "square" 1..64
    assert error["type"] == "custom_validation_failed" and "shape.size" in error["details"]
    error = await rejected({"shape": "rect", "shape.width": 5})
    assert "shape.height is required by shape 'rect'" in error["details"]
    error = await rejected({"shape": "rect", "shape.width": 500, "shape.height": 1})
    assert error["type"] == "value_bigger_than_max"
    error = await rejected({"shape": "square", "shape.size": 13})  # the node's own validate_inputs, nested
    assert error["type"] == "custom_validation_failed" and "13 is unlucky" in error["details"]
