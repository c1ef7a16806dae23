"""Running just the selected output nodes (ComfyUI's "Queue selected output nodes", partial_execution_targets): on
txt2img with a second output (a Preview Image beside the Save Image), selecting the preview and running it from its
node menu runs that output alone: the history has the preview's images and no saved file appears."""

from __future__ import annotations

import json

import pytest

from server.config import REPO_ROOT
from tests.e2e.editor import drop_file, js, node_ids, open_editor, screen, wait_for

pytestmark = pytest.mark.e2e


def _txt2img_with_a_preview() -> dict:
    workflow = json.loads((REPO_ROOT / "workflows" / "txt2img.json").read_text())
    decode = next(n for n in workflow["nodes"] if n["type"] == "VAEDecode")
    node_id, link_id = workflow["last_node_id"] + 1, workflow["last_link_id"] + 1
    workflow["nodes"].append({"id": node_id, "type": "PreviewImage", "pos": [decode["pos"][0], decode["pos"][1] + 160],
                              "size": [300, 260], "flags": {}, "order": len(workflow["nodes"]), "mode": 0,
                              "inputs": [{"name": "images", "type": "IMAGE", "link": link_id}], "outputs": [],
                              "properties": {"Node name for S&R": "PreviewImage"}, "widgets_values": []})
    decode["outputs"][0]["links"].append(link_id)
    workflow["links"].append([link_id, decode["id"], 0, node_id, 0, "IMAGE"])
    workflow["last_node_id"], workflow["last_link_id"] = node_id, link_id
    return workflow


def test_queue_selected_output_nodes_runs_only_that_output(server, page) -> None:
    open_editor(page, server.url)
    count = js(page, "() => window.chisel.workspace.docs.length")
    drop_file(page, json.dumps(_txt2img_with_a_preview()).encode(), "two-outputs.json", "application/json")
    page.wait_for_function("(n) => window.chisel.workspace.docs.length > n", arg=count)
    [preview] = node_ids(page, "PreviewImage")
    [save] = node_ids(page, "SaveImage")
    saved_before = sorted(p.name for p in (server.base_dir / "output").glob("*.png"))

    page.mouse.click(*screen(page, "title", preview), button="right")
    page.get_by_text("Queue selected output nodes").click()
    prompt_id = wait_for(page, "() => [...window.chisel.workspace.active.exec.promptIds].at(-1)", 30)
    history = wait_for(page, """async (p) => { const h = await window.chisel.api.getHistoryItem(p).catch(() => null);
      return h?.[p]?.status?.completed ? h[p] : null; }""", 240, prompt_id)

    assert set(history["outputs"]) == {str(preview)}, history["outputs"].keys()
    assert history["outputs"][str(preview)]["images"][0]["type"] == "temp"
    assert str(save) not in history["outputs"]
    assert sorted(p.name for p in (server.base_dir / "output").glob("*.png")) == saved_before
