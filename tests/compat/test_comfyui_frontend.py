"""Compatibility oracle: ComfyUI's own frontend (comfyui-frontend-package 1.58.1, unchanged) against Chisel's server.

It boots, loads our workflows/txt2img.json (UI format), queues it, follows the websocket progress to the image shown
in SaveImage and the /history record, and reopens the saved PNG by dropping it on the canvas. Every request the page
makes to our server must succeed, except the 404s ComfyUI itself answers (listed below with the reason).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.compat.conftest import ARTIFACTS, Traffic, api
from tests.e2e.conftest import TINY_CHECKPOINT

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STEPS = 2
SIZE = 64

# Requests that ComfyUI answers with 404 too (the frontend expects and ignores them).
COMFYUI_404S = (
    "GET /user.css",  # the wheel ships no user.css; ComfyUI's static route answers 404 as well
    "GET /api/userdata/user.css",  # no user stylesheet saved
    "GET /api/userdata/comfy.templates.json",  # no saved node templates
    "GET /api/userdata?dir=subgraphs",  # ComfyUI: 404 "Directory not found" until a subgraph is saved
)

# The page's own record of the websocket events ComfyApi dispatches, installed before queueing.
LISTEN = """() => {
  window.__chiselEvents = [];
  for (const type of ['execution_start', 'executing', 'progress', 'executed', 'execution_success',
                      'execution_error', 'execution_interrupted'])
    app.api.addEventListener(type, (e) => window.__chiselEvents.push({ type, detail: e.detail }));
}"""

# Zoom the canvas so every node is on screen (for the screenshots; the canvas draws only what is visible).
FIT = """() => {
  const nodes = app.graph.nodes;
  const x0 = Math.min(...nodes.map((n) => n.pos[0])), y0 = Math.min(...nodes.map((n) => n.pos[1])) - 40;
  const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
  const y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
  app.canvas.ds.fitToBounds([x0, y0, x1 - x0, y1 - y0], { zoom: 0.9 });
  app.canvas.setDirty(true, true);
}"""

SET_WIDGET = """([type, name, value]) => {
  const node = app.graph.nodes.find((n) => n.type === type);
  const widget = node.widgets.find((w) => w.name === name);
  widget.value = value;
  widget.callback?.(value);
}"""

DROP = """([b64, name]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const dt = new DataTransfer();
  dt.items.add(new File([bytes], name, { type: 'image/png' }));
  const canvas = document.querySelector('#graph-canvas');
  for (const type of ['dragover', 'drop'])
    canvas.dispatchEvent(new DragEvent(type, { dataTransfer: dt, clientX: 700, clientY: 400, bubbles: true,
                                                cancelable: true }));
}"""

GRAPH_SUMMARY = """() => app.graph.nodes.map((n) => ({ id: String(n.id), type: n.type,
  widgets: Object.fromEntries((n.widgets || []).map((w) => [w.name, w.value])) }))"""


def unexpected_failures(traffic: Traffic) -> list[str]:
    return [f for f in traffic.failed if not any(f.split(" ", 1)[1].startswith(ok) for ok in COMFYUI_404S)]


def txt2img_workflow() -> dict[str, Any]:
    """workflows/txt2img.json with the tiny test checkpoint in place of the built-in model (speed; it always
    exists here, and the built-in model may not be trained yet)."""
    workflow = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    loader = next(n for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple")
    loader["widgets_values"] = [TINY_CHECKPOINT]
    return workflow


def wait(page: Any, predicate: str, what: str, timeout_ms: float = 30_000, arg: Any = None) -> Any:
    """Waits for a JS predicate; fails saying what did not happen, with the page's event record."""
    try:
        return page.wait_for_function(predicate, arg=arg, timeout=timeout_ms).json_value()
    except Exception as exc:
        events = page.evaluate("() => JSON.stringify(window.__chiselEvents ?? null)")[:2000]
        raise AssertionError(f"timed out waiting for {what}; websocket events seen: {events}") from exc


def screenshot(page: Any, name: str) -> None:
    page.evaluate(FIT)
    page.wait_for_timeout(300)  # let the canvas draw one frame after the zoom
    page.screenshot(path=str(ARTIFACTS / name))


def test_comfyui_frontend_boots_against_chisel_without_unexpected_errors(frontend) -> None:
    page, traffic = frontend
    defs = page.evaluate("() => Object.keys(LiteGraph.registered_node_types)")
    for node_type in ("CheckpointLoaderSimple", "KSampler", "SaveImage", "VAEDecode"):
        assert node_type in defs, f"{node_type} is not registered: /object_info did not reach the frontend"
    client_id = page.evaluate("() => app.api.clientId")
    assert client_id, "the websocket's status message gave the frontend no clientId (sid)"
    assert not traffic.page_errors, f"uncaught errors in the frontend: {traffic.page_errors}"
    assert not unexpected_failures(traffic), f"requests our server failed: {unexpected_failures(traffic)}"
    screenshot(page, "boot.png")


def test_comfyui_frontend_runs_txt2img_shows_progress_and_image_then_reopens_the_png(frontend, compat_server) -> None:
    page, traffic = frontend

    # 2. load our UI workflow; lower steps and size through the frontend's own widgets
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", txt2img_workflow())
    for node_type, name, value in (("KSampler", "steps", STEPS), ("EmptyLatentImage", "width", SIZE),
                                   ("EmptyLatentImage", "height", SIZE), ("EmptyLatentImage", "batch_size", 1)):
        page.evaluate(SET_WIDGET, [node_type, name, value])
    graph = page.evaluate(GRAPH_SUMMARY)
    assert sorted(n["type"] for n in graph) == sorted(
        ["CheckpointLoaderSimple", "EmptyLatentImage", "CLIPTextEncode", "CLIPTextEncode", "KSampler", "VAEDecode",
         "SaveImage"]), f"txt2img.json did not load as 7 nodes: {graph}"
    missing = page.evaluate("() => app.graph.nodes.filter((n) => n.has_errors).map((n) => n.type)")
    assert not missing, f"the frontend marks nodes as unknown to our /object_info: {missing}"
    save_id = next(n["id"] for n in graph if n["type"] == "SaveImage")
    sampler_id = next(n["id"] for n in graph if n["type"] == "KSampler")
    screenshot(page, "txt2img-loaded.png")

    # 3. queue it and follow the websocket to the end
    page.evaluate(LISTEN)
    queued = page.evaluate("async () => await app.queuePrompt(0, 1)")
    assert queued, f"app.queuePrompt refused the prompt; failed requests: {traffic.failed}"
    wait(page, "() => window.__chiselEvents.some((e) => ['execution_success', 'execution_error', "
               "'execution_interrupted'].includes(e.type))", "the prompt to finish", timeout_ms=45_000)
    events = page.evaluate("() => window.__chiselEvents")
    types = [e["type"] for e in events]
    assert "execution_error" not in types, f"the prompt failed: {[e for e in events if e['type'] != 'progress']}"
    prompt_id = next(e["detail"]["prompt_id"] for e in events if e["type"] == "execution_start")
    executing = [e["detail"] for e in events if e["type"] == "executing"]
    assert sampler_id in executing and save_id in executing, f"executing events named {executing}"
    progress = [(e["detail"]["value"], e["detail"]["max"]) for e in events
                if e["type"] == "progress" and str(e["detail"]["node"]) == sampler_id]
    assert progress and progress[-1] == (STEPS, STEPS), f"KSampler progress seen by the page: {progress}"
    executed = next(e["detail"] for e in events if e["type"] == "executed")
    image = executed["output"]["images"][0]
    assert str(executed["node"]) == save_id and image["type"] == "output", f"executed: {executed}"

    # the SaveImage node shows it: the frontend's node outputs hold it and the browser fetched it from /api/view
    wait(page, "([id, name]) => app.nodeOutputs[id]?.images?.[0]?.filename === name",
         f"SaveImage's outputs to name {image['filename']}", arg=[save_id, image["filename"]])
    page.evaluate(FIT)
    size = wait(page, """([id]) => { const img = app.graph.nodes.find((n) => String(n.id) === id)?.imgs?.[0];
                 return img?.complete && img.naturalWidth ? [img.naturalWidth, img.naturalHeight] : null; }""",
                "the SaveImage node to hold the loaded image", arg=[save_id])
    assert size == [SIZE, SIZE], f"the image SaveImage shows is {size}, expected {SIZE}x{SIZE}"
    assert any(f"filename={image['filename']}" in url for url in traffic.ok_views), \
        f"no successful /api/view for {image['filename']}: {traffic.ok_views}, failures {traffic.failed}"
    screenshot(page, "txt2img-result.png")

    # /api/history has the outputs, and the prompt the frontend built carries the widget edits and the workflow
    entry = api(compat_server, f"/api/history/{prompt_id}")[prompt_id]
    assert entry["outputs"][save_id]["images"][0]["filename"] == image["filename"], entry["outputs"]
    assert entry["status"]["status_str"] == "success", entry["status"]
    prompt = entry["prompt"][2]
    assert prompt[sampler_id]["inputs"]["steps"] == STEPS, prompt[sampler_id]
    assert entry["prompt"][3]["extra_pnginfo"]["workflow"]["nodes"], "extra_pnginfo.workflow was not kept"

    # 4. empty the canvas, drop the saved PNG on it: its embedded workflow comes back
    png = compat_server.base_dir / "output" / image["subfolder"] / image["filename"]
    page.evaluate("() => app.graph.clear()")
    page.evaluate(DROP, [base64.b64encode(png.read_bytes()).decode(), png.name])
    wait(page, "() => app.graph.nodes.length === 7", "the dropped PNG's workflow to load (7 nodes)")
    reopened = {n["type"]: n["widgets"] for n in page.evaluate(GRAPH_SUMMARY)}
    assert reopened["KSampler"]["steps"] == STEPS and reopened["CheckpointLoaderSimple"]["ckpt_name"] == \
        TINY_CHECKPOINT, f"the dropped PNG loaded another workflow: {reopened}"
    assert reopened["EmptyLatentImage"]["width"] == SIZE, reopened["EmptyLatentImage"]
    screenshot(page, "png-dropped.png")

    assert not traffic.page_errors, f"uncaught errors in the frontend: {traffic.page_errors}"
    assert not unexpected_failures(traffic), f"requests our server failed: {unexpected_failures(traffic)}"
