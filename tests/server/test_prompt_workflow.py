"""POST /prompt with a UI workflow (converted on the server, so the editor queues in one request) and
POST /workflow/convert with a bare workflow body."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

from PIL import Image

from tests.server.conftest import REPO, wait_history


def ui_workflow(prefix: str = "uiwf", width: int = 32, height: int = 16) -> dict[str, Any]:
    """EmptyImage -> ImageInvert -> SaveImage as the editor saves it (no model needed), plus a muted node."""
    return {
        "id": "6f1c2a7e-0000-4000-8000-000000000001", "last_node_id": 4, "last_link_id": 2, "version": 0.4,
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": [width, height, 1, 0]},
            {"id": 2, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], "widgets_values": []},
            {"id": 3, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
             "outputs": [], "widgets_values": [prefix]},
            {"id": 4, "type": "EmptyImage", "mode": 2, "inputs": [],  # muted: not in the prompt
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}], "widgets_values": [8, 8, 1, 0]},
        ],
        "groups": [], "config": {}, "extra": {}}


async def converted(client: Any, workflow: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/workflow/convert", json={"workflow": workflow})
    body = await response.json()
    assert response.status == 200, body
    return body["prompt"]


async def saved_png(client: Any, entry: dict[str, Any]) -> Image.Image:
    image = entry["outputs"]["3"]["images"][0]
    response = await client.get("/view", params=image)
    assert response.status == 200
    return Image.open(io.BytesIO(await response.read()))


async def test_a_ui_workflow_posted_to_prompt_runs_like_its_converted_prompt(client):
    workflow = ui_workflow("uiwf")
    prompt = await converted(client, workflow)
    assert set(prompt) == {"1", "2", "3"}

    response = await client.post("/api/prompt", json={"workflow": workflow, "client_id": "ed1"})
    body = await response.json()
    assert response.status == 200, body
    assert set(body) == {"prompt_id", "number", "node_errors", "prompt"} and body["node_errors"] == {}
    assert body["prompt"] == prompt  # the answer says what was queued (the editor counts its nodes for progress)
    from_workflow = await wait_history(client, body["prompt_id"])

    reference = await client.post("/prompt", json={"prompt": prompt, "client_id": "ed1"})
    reference_body = await reference.json()
    assert reference.status == 200 and "prompt" not in reference_body  # the old path answers as before
    from_prompt = await wait_history(client, reference_body["prompt_id"])

    for entry in (from_workflow, from_prompt):
        assert entry["status"]["status_str"] == "success"
    assert from_workflow["prompt"][2] == from_prompt["prompt"][2] == prompt
    assert from_workflow["prompt"][4] == from_prompt["prompt"][4] == ["3"]
    assert from_workflow["prompt"][3]["client_id"] == "ed1"
    one, two = await saved_png(client, from_workflow), await saved_png(client, from_prompt)
    assert one.size == two.size == (32, 16)
    assert one.tobytes() == two.tobytes()


async def test_the_posted_workflow_becomes_extra_pnginfo_and_is_embedded_in_the_png(client):
    workflow = ui_workflow("embed")
    response = await client.post("/prompt", json={"workflow": workflow, "extra_data": {"keep": 1}})
    body = await response.json()
    assert response.status == 200, body
    entry = await wait_history(client, body["prompt_id"])
    extra = entry["prompt"][3]
    assert extra["keep"] == 1 and extra["extra_pnginfo"]["workflow"] == workflow
    picture = await saved_png(client, entry)
    assert json.loads(picture.info["workflow"]) == workflow
    assert json.loads(picture.info["prompt"]) == body["prompt"]
    jobs = await (await client.get("/jobs", params={"workflow_id": workflow["id"]})).json()
    assert [job["id"] for job in jobs["jobs"]] == [body["prompt_id"]]


async def test_a_client_chosen_extra_pnginfo_workflow_is_kept(client):
    workflow = ui_workflow("mine")
    extra_data = {"extra_pnginfo": {"workflow": {"probe": 2}, "other": "x"}}
    response = await client.post("/prompt", json={"workflow": workflow, "extra_data": extra_data})
    body = await response.json()
    assert response.status == 200, body
    entry = await wait_history(client, body["prompt_id"])
    assert entry["prompt"][3]["extra_pnginfo"] == {"workflow": {"probe": 2}, "other": "x"}
    assert json.loads((await saved_png(client, entry)).info["workflow"]) == {"probe": 2}

    other = await client.post("/prompt", json={"workflow": workflow, "extra_data": {"extra_pnginfo": {"a": 1}}})
    entry = await wait_history(client, (await other.json())["prompt_id"])
    assert entry["prompt"][3]["extra_pnginfo"] == {"a": 1, "workflow": workflow}


async def test_with_both_the_prompt_runs_and_the_workflow_is_only_metadata(client):
    workflow = ui_workflow("both", width=32, height=16)
    prompt = await converted(client, ui_workflow("both", width=24, height=8))
    response = await client.post("/prompt", json={"prompt": prompt, "workflow": workflow})
    body = await response.json()
    assert response.status == 200, body
    assert set(body) == {"prompt_id", "number", "node_errors"}
    entry = await wait_history(client, body["prompt_id"])
    assert entry["prompt"][2] == prompt and entry["prompt"][3]["extra_pnginfo"]["workflow"] == workflow
    assert (await saved_png(client, entry)).size == (24, 8)


async def test_a_broken_workflow_is_a_structured_400_and_the_server_keeps_serving(client):
    workflow = ui_workflow()
    workflow["nodes"][1]["type"] = None  # node 2 has no type
    workflow["nodes"][0]["widgets_values"] = 12  # node 1's widget values are not a list
    response = await client.post("/prompt", json={"workflow": workflow})
    body = await response.json()
    assert response.status == 400, body
    assert set(body) == {"error", "node_errors"}
    assert body["error"]["type"] == "invalid_workflow" and body["error"]["message"]
    assert "node 1" in body["error"]["details"] and "node 2" in body["error"]["details"]
    assert body["error"]["extra_info"] == {"field": "workflow"}
    assert set(body["node_errors"]) == {"1", "2"}
    assert body["node_errors"]["1"]["class_type"] == "EmptyImage"
    assert body["node_errors"]["1"]["errors"][0]["type"] == "invalid_widgets_values"

    cases = [
        ({"workflow": {"nodes": [], "links": [[1, 2]]}}, "invalid_workflow", "malformed link"),
        ({"workflow": {"1": {"class_type": "EmptyImage", "inputs": {}}}}, "api_format", "'prompt'"),
        ({"workflow": {"links": []}}, "unknown_format", ""),
        ({"workflow": "not a workflow"}, "invalid_field", "workflow"),
        ({"workflow": [1, 2]}, "invalid_field", "workflow"),
        ({"workflow": None}, "no_prompt", "prompt"),
        ({"workflow": ui_workflow(), "extra_data": 5}, "invalid_field", "extra_data"),
        ({"workflow": ui_workflow(), "client_id": "bad id!"}, "invalid_field", "client_id"),
    ]
    for request, kind, details in cases:
        response = await client.post("/prompt", json=request)
        body = await response.json()
        assert response.status == 400, (request, body)
        assert body["error"]["type"] == kind, (request, body)
        assert details in body["error"]["details"], (request, body)
        assert isinstance(body["node_errors"], dict)

    assert (await client.get("/prompt")).status == 200
    ok = await client.post("/prompt", json={"workflow": ui_workflow("after")})
    assert ok.status == 200
    entry = await wait_history(client, (await ok.json())["prompt_id"])
    assert entry["status"]["status_str"] == "success"


async def test_a_converted_workflow_that_fails_validation_gives_node_errors_on_that_node(client):
    workflow = ui_workflow()
    workflow["nodes"][0]["widgets_values"] = [0, 16, 1, 0]  # width 0 is below EmptyImage's minimum
    response = await client.post("/prompt", json={"workflow": workflow})
    body = await response.json()
    assert response.status == 400, body
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(body["node_errors"]) == {"1"}
    assert body["node_errors"]["1"]["errors"][0]["extra_info"]["input_name"] == "width"

    unknown = ui_workflow()
    unknown["nodes"][1]["type"] = "NoSuchNode"
    response = await client.post("/prompt", json={"workflow": unknown})
    body = await response.json()
    assert response.status == 400, body
    assert body["error"]["type"] == "missing_node_type"
    assert "NoSuchNode" in body["error"]["message"] + body["error"]["details"]


async def test_a_workflow_posted_to_prompt_is_not_modified_and_partial_targets_apply(client):
    workflow = ui_workflow("partial")
    sent = copy.deepcopy(workflow)
    response = await client.post("/prompt", json={"workflow": workflow, "partial_execution_targets": ["3"],
                                                  "prompt_id": "wf-run-1", "front": True})
    body = await response.json()
    assert response.status == 200 and body["prompt_id"] == "wf-run-1"
    entry = await wait_history(client, "wf-run-1")
    assert entry["prompt"][4] == ["3"] and entry["prompt"][3]["extra_pnginfo"]["workflow"] == sent


async def test_workflow_convert_accepts_a_bare_workflow_body(client):
    workflow = ui_workflow("bare")
    wrapped = await converted(client, workflow)
    response = await client.post("/api/workflow/convert", json=workflow)
    body = await response.json()
    assert response.status == 200, body
    assert body == {"prompt": wrapped}

    broken = ui_workflow()
    broken["nodes"][0]["widgets_values"] = 12
    response = await client.post("/workflow/convert", json=broken)
    body = await response.json()
    assert response.status == 400 and set(body["node_errors"]) == {"1"}

    for junk in ({}, {"nodes": "x"}, {"links": []}, {"foo": 1}):
        response = await client.post("/workflow/convert", json=junk)
        body = await response.json()
        assert response.status == 400, (junk, body)
        assert body["error"]["type"] == "no_workflow", (junk, body)


async def test_txt2img_posted_as_a_ui_workflow_makes_the_same_image_as_its_api_prompt(client):
    """The ready txt2img workflow (built-in model) queued as the editor now does: same prompt, same pixels."""
    workflow = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    for node in workflow["nodes"]:  # small and quick: one image, few steps
        if node["type"] == "EmptyLatentImage":
            node["widgets_values"] = [64, 64, 1]
        elif node["type"] == "KSampler":
            node["widgets_values"][2] = 4
    prompt = await converted(client, workflow)
    response = await client.post("/prompt", json={"workflow": workflow})
    body = await response.json()
    assert response.status == 200, body
    assert body["prompt"] == prompt
    reference = await client.post("/prompt", json={"prompt": prompt})
    assert reference.status == 200
    entries = [await wait_history(client, pid, timeout=120) for pid in
               (body["prompt_id"], (await reference.json())["prompt_id"])]
    pictures = []
    for entry in entries:
        assert entry["status"]["status_str"] == "success", entry["status"]
        [save_id] = entry["outputs"]
        image = entry["outputs"][save_id]["images"][0]
        pictures.append(Image.open(io.BytesIO(await (await client.get("/view", params=image)).read())))
    assert pictures[0].size == (64, 64) and pictures[0].tobytes() == pictures[1].tobytes()
    assert json.loads(pictures[0].info["workflow"]) == workflow


async def test_a_converter_crash_is_a_400_not_a_500(client, monkeypatch):
    import server.routes.prompt as prompt_routes

    def crash(*_args: Any, **_kwargs: Any) -> Any:
        raise TypeError("unexpected converter failure")

    monkeypatch.setattr(prompt_routes, "convert_workflow", crash)
    monkeypatch.setattr(prompt_routes, "to_api_prompt", crash)
    for path, body in (("/prompt", {"workflow": ui_workflow()}), ("/workflow/convert", ui_workflow())):
        response = await client.post(path, json=body)
        answer = await response.json()
        assert response.status == 400, answer
        assert answer["error"]["type"] == "invalid_workflow" and "TypeError" in answer["error"]["details"]
        assert answer["node_errors"] == {}
    assert (await client.get("/queue")).status == 200
