"""The editor in real headless Chromium against a real server: building and running txt2img, opening a PNG by drop,
undo/redo, validation errors on nodes, reloading a past run, image upload, and reconnecting after a server restart."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.e2e.conftest import restart
from tests.e2e.editor import (
    add_node_by_search, connect, drag, drop_file, js, node_ids, nodes, open_editor, open_workflow, pick_combo, screen,
    set_number, type_prompt, wait_for,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BUILTIN_CHECKPOINT = "chisel-shapes.safetensors"


def default_workflow() -> dict:
    return json.loads((REPO / "web" / "test" / "fixtures" / "default_workflow.json").read_text())


def model_free_workflow(prefix: str) -> dict:
    """EmptyImage (64x48 white) -> ImageInvert -> SaveImage, as a UI workflow."""
    return {
        "last_node_id": 3, "last_link_id": 2, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "EmptyImage", "pos": [100, 100], "size": [315, 130], "flags": {}, "order": 0, "mode": 0,
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1], "slot_index": 0}], "properties": {},
             "widgets_values": [64, 48, 1, 16777215]},
            {"id": 2, "type": "ImageInvert", "pos": [480, 100], "size": [200, 50], "flags": {}, "order": 1, "mode": 0,
             "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2], "slot_index": 0}], "properties": {}},
            {"id": 3, "type": "SaveImage", "pos": [760, 100], "size": [300, 300], "flags": {}, "order": 2, "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "properties": {}, "widgets_values": [prefix]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    }


def png(size=(32, 24), color=(200, 30, 30), text: dict[str, str] | None = None) -> bytes:
    info = PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def result_image_size(page, node_id: int) -> list[int]:
    """Loads the image the node shows (as the canvas does) and returns its natural size."""
    return js(page, """async (id) => {
      const c = window.chisel; const doc = c.workspace.active;
      const [url] = c.controller.imageUrls(doc, doc.graph.getNode(id));
      const img = new Image(); img.src = url; await img.decode();
      return [img.naturalWidth, img.naturalHeight];
    }""", node_id)


def result_colour_shares(page, node_id: int) -> dict[str, float]:
    """Shares of clearly red and clearly blue pixels in the image the node shows (read back from a canvas)."""
    return js(page, """async (id) => {
      const c = window.chisel; const doc = c.workspace.active;
      const [url] = c.controller.imageUrls(doc, doc.graph.getNode(id));
      const img = new Image(); img.src = url; await img.decode();
      const canvas = document.createElement('canvas');
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      const ctx = canvas.getContext('2d'); ctx.drawImage(img, 0, 0);
      const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      let red = 0, blue = 0;
      for (let i = 0; i < px.length; i += 4) {
        const [r, g, b] = [px[i], px[i + 1], px[i + 2]];
        if (r > g + 80 && r > b + 80) red++;
        if (b > r + 80 && b > g + 50) blue++;
      }
      const n = px.length / 4;
      return { red: red / n, blue: blue / n };
    }""", node_id)


def test_txt2img_built_from_empty_canvas_by_search_and_drag_runs_with_progress_and_result(server, page) -> None:
    open_editor(page, server.url)
    page.click(".tab-new")
    for _ in range(5):
        page.keyboard.press("Alt+Minus")
    ckpt = add_node_by_search(page, (80, 330), "load checkpoint")
    pos = add_node_by_search(page, (400, 110), "clip text encode")
    neg = add_node_by_search(page, (400, 320), "clip text encode")
    latent = add_node_by_search(page, (400, 560), "empty latent")
    ks = add_node_by_search(page, (760, 140), "ksampler")
    assert [n["type"] for n in nodes(page)] == ["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode",
                                                 "EmptyLatentImage", "KSampler"]
    connect(page, ckpt, 0, ks, 0)
    connect(page, ckpt, 1, pos, 0)
    connect(page, ckpt, 1, neg, 0)
    connect(page, pos, 0, ks, 1)
    connect(page, neg, 0, ks, 2)
    connect(page, latent, 0, ks, 3)
    # a link dropped on empty canvas opens the search filtered to nodes taking a LATENT
    drag(page, screen(page, "out", ks, 0), (1080, 190))
    page.wait_for_selector(".search-box:not([hidden])")
    assert "takes LATENT" in page.inner_text(".search-filter")
    page.keyboard.type("vae decode")
    page.keyboard.press("Enter")
    [decode] = node_ids(page, "VAEDecode")
    connect(page, ckpt, 2, decode, 1)
    drag(page, screen(page, "out", decode, 0), (1120, 420))
    page.keyboard.type("save image")
    page.keyboard.press("Enter")
    [save] = node_ids(page, "SaveImage")
    links = {tuple(n["inputs"]) != () and n["type"]: n["inputs"] for n in nodes(page)}
    assert all(link is not None for ins in links.values() for link in ins), links

    # The built-in model (the repository's models/, found after the base directory's own), as a user would pick it.
    pick_combo(page, ckpt, "ckpt_name", BUILTIN_CHECKPOINT)
    set_number(page, latent, "width", 64)
    set_number(page, latent, "height", 64)
    set_number(page, ks, "steps", 8)
    set_number(page, ks, "cfg", 2)
    pick_combo(page, ks, "control_after_generate", "fixed")
    type_prompt(page, pos, "a large red circle on a blue background")
    values = {n["type"]: n["widgets_values"] for n in nodes(page)}
    assert values["CheckpointLoaderSimple"] == [BUILTIN_CHECKPOINT]
    assert values["EmptyLatentImage"] == [64, 64, 1]
    assert values["KSampler"][1:4] == ["fixed", 8, 2]

    js(page, """() => {
      window.__progress = []; window.__labels = new Set();
      window.chisel.api.on('progress', (d) => window.__progress.push(d));
      new MutationObserver(() => window.__labels.add(document.querySelector('.progress-label').textContent))
        .observe(document.querySelector('.progress-label'), { childList: true, characterData: true, subtree: true });
    }""")
    page.keyboard.press("Control+Enter")
    wait_for(page, "(id) => window.chisel.workspace.active.exec.outputs.has(id) "
                   "|| window.chisel.workspace.active.exec.errors.size", 180, save)
    assert page.locator(".error-panel:not([hidden])").count() == 0, page.inner_text(".error-panel")
    progress = js(page, "window.__progress")
    assert [p["value"] for p in progress if str(p["node"]) == str(ks)] == list(range(1, 9))
    assert any(label.startswith("KSampler") for label in js(page, "[...window.__labels]")), "no progress in the top bar"
    assert js(page, "window.chisel.workspace.active.exec.running") is None
    assert result_image_size(page, save) == [64, 64]
    # The image follows the prompt: a blue background with a red shape on it (the model card's checker, simplified).
    shares = result_colour_shares(page, save)
    assert shares["blue"] > 0.4 and 0.05 < shares["red"] < 0.5, shares


def test_png_with_an_embedded_workflow_opens_when_dropped(server, page) -> None:
    open_editor(page, server.url)
    wf = default_workflow()
    wf["nodes"][0]["widgets_values"] = ["a lighthouse at dusk"]
    drop_file(page, png(text={"prompt": "{}", "workflow": json.dumps(wf)}), "from-png.png", "image/png")
    page.wait_for_function("window.chisel.workspace.active.name === 'from-png'")
    got = {n["id"]: n for n in nodes(page)}
    assert len(got) == 7
    assert got[7]["widgets_values"] == ["a lighthouse at dusk"]
    assert got[3]["widgets_values"] == [156680208700286, "randomize", 20, 8, "euler", "normal", 1]
    assert page.locator(".tab.active .tab-name").inner_text() == "from-png"


def test_undo_and_redo_step_through_edits_and_a_paste_is_one_step(server, page) -> None:
    open_editor(page, server.url)
    page.click(".tab-new")
    latent = add_node_by_search(page, (200, 300), "empty latent")
    ks = add_node_by_search(page, (700, 200), "ksampler")
    connect(page, latent, 0, ks, 3)
    count = "() => { const g = window.chisel.workspace.active.graph; return [g.nodes.size, g.links.size]; }"
    assert js(page, count) == [2, 1]
    page.keyboard.press("Control+z")
    assert js(page, count) == [2, 0]
    page.keyboard.press("Control+z")
    assert js(page, count) == [1, 0]
    page.keyboard.press("Control+y")
    page.keyboard.press("Control+y")
    assert js(page, count) == [2, 1]

    set_number(page, ks, "steps", 7)
    assert nodes(page)[1]["widgets_values"][2] == 7
    page.keyboard.press("Control+z")
    assert nodes(page)[1]["widgets_values"][2] == 20

    page.mouse.click(900, 700)
    page.keyboard.press("Control+a")
    page.keyboard.press("Control+c")
    page.mouse.move(300, 650)
    page.keyboard.press("Control+v")
    wait_for(page, "() => window.chisel.workspace.active.graph.nodes.size === 4")
    assert js(page, count) == [4, 2], "the pasted pair keeps its link"
    page.keyboard.press("Control+z")
    assert js(page, count) == [2, 1], "one undo takes back the whole paste"
    assert page.locator(".tab.active.modified").count() == 1


def test_a_validation_error_is_shown_on_the_offending_node_and_input(server, page) -> None:
    open_editor(page, server.url)
    wf = default_workflow()
    next(n for n in wf["nodes"] if n["id"] == 4)["widgets_values"] = ["missing.safetensors"]
    open_workflow(page, wf, "broken")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".error-panel:not([hidden])")
    panel = page.inner_text(".error-panel")
    assert "Load Checkpoint #4" in panel and "ckpt_name" in panel, panel
    errors = js(page, """() => [...window.chisel.workspace.active.exec.errors].map(([id, e]) => [id, [...e.inputs]])""")
    assert errors == [[4, ["ckpt_name"]]]
    page.click(".error-node")  # shows the node
    assert js(page, "[...window.chisel.workspace.active.selection]") == [4]


def test_a_past_run_is_reloaded_from_the_history_panel(server, page) -> None:
    open_editor(page, server.url)
    open_workflow(page, model_free_workflow("e2e_history"), "history-source")
    page.keyboard.press("Control+Enter")
    wait_for(page, "() => window.chisel.workspace.active.exec.outputs.has(3)", 60)
    assert result_image_size(page, 3) == [64, 48]
    page.mouse.dblclick(*screen(page, "image", 3))
    page.wait_for_selector(".lightbox:not([hidden]) img.lightbox-img")
    assert "/api/view?filename=e2e_history" in page.get_attribute(".lightbox-img", "src")
    page.keyboard.press("Escape")
    assert page.locator(".lightbox:not([hidden])").count() == 0
    prompt_id = js(page, "[...window.chisel.workspace.active.exec.promptIds][0]")
    page.keyboard.press("q")
    item = page.locator(f".h-item[data-prompt-id='{prompt_id}']")
    item.wait_for()
    assert item.locator(".h-thumb").count() == 1
    item.locator(".h-load").click()
    page.wait_for_function("window.chisel.workspace.active.name.startsWith('Run ')")
    reloaded = nodes(page)
    assert [n["type"] for n in reloaded] == ["EmptyImage", "ImageInvert", "SaveImage"]
    assert reloaded[2]["widgets_values"] == ["e2e_history"]
    assert js(page, "window.chisel.workspace.docs.length") == 3


def test_an_image_dropped_on_the_canvas_is_uploaded_into_a_load_image_node(server, page) -> None:
    open_editor(page, server.url)
    page.click(".tab-new")
    drop_file(page, png(size=(40, 30)), "photo.png", "image/png", at=(500, 300))
    wait_for(page, "() => window.chisel.workspace.active.graph.nodes.size === 1 && "
                   "[...window.chisel.workspace.active.graph.nodes.values()][0].widgets_values[0] === 'photo.png'")
    [node] = nodes(page)
    assert node["type"] == "LoadImage"
    assert node["widgets_values"][0] == "photo.png"
    assert (server.base_dir / "input" / "photo.png").is_file()
    assert result_image_size(page, node["id"]) == [40, 30]


def test_the_editor_reconnects_after_a_server_restart_and_runs_again(fresh_server, page) -> None:
    open_editor(page, fresh_server.url)
    open_workflow(page, model_free_workflow("e2e_reconnect"), "reconnect")
    live = restart(fresh_server)
    try:
        page.wait_for_selector(".conn-dot.ok", timeout=30_000)
        page.wait_for_function("window.chisel.api.connected", timeout=30_000)
        page.keyboard.press("Control+Enter")
        wait_for(page, "() => window.chisel.workspace.active.exec.outputs.has(3)", 60)
        assert result_image_size(page, 3) == [64, 48]
    finally:
        live.stop()
