"""Issue 15 in real headless Chromium against a real server: every shipped workflow opened through the UI runs to
its images (inpaint's Load Mask included), live previews inside the KSampler, values and images drawn at the zoom
fit-view picks, canvas tooltips, the minimap, API prompts laid out, the node and model libraries (a model's
suggested defaults), the mask editor, a v3 DynamicCombo node, the light palette, the keybinding editor and the
lightbox's compare slider."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.editor import drop_file, js, node_ids, nodes, open_editor, pick_combo, screen, set_number, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))

ON_SCREEN = """() => {
  const c = window.chisel; const doc = c.workspace.active; const [w, h] = c.editor.size;
  const r = doc.graph.boundsOf([...doc.graph.nodes.values()]);
  const x0 = (r[0] + doc.vp.offset[0]) * doc.vp.scale, y0 = (r[1] + doc.vp.offset[1]) * doc.vp.scale;
  return x0 >= -1 && y0 >= -1 && x0 + r[2] * doc.vp.scale <= w + 1 && y0 + r[3] * doc.vp.scale <= h + 1;
}"""

# Pixels of the editor canvas in a node's widget (or image area) rectangle: how many differ clearly from the most
# common colour (the widget's or the area's background) -- drawn text or an image, not an empty box.
INK = """([id, part]) => {
  const c = window.chisel; const doc = c.workspace.active; c.editor.drawNow();
  const n = doc.graph.getNode(id); const info = c.editor.scene().frame.infoOf(n);
  const r = part === 'image' ? info.layout.images : info.layout.widgets.find((w) => w.widget.name === part);
  const s = doc.vp.scale, dpr = window.devicePixelRatio || 1;
  const x = Math.round((n.pos[0] + r.x + doc.vp.offset[0]) * s * dpr), y = Math.round((n.pos[1] + r.y + doc.vp.offset[1]) * s * dpr);
  const w = Math.max(1, Math.round(r.w * s * dpr)), h = Math.max(1, Math.round(Math.min(r.h, 400) * s * dpr));
  const px = c.editor.canvas.getContext('2d').getImageData(x, y, w, h).data;
  const counts = new Map();
  for (let i = 0; i < px.length; i += 4) { const k = (px[i] >> 4) << 8 | (px[i + 1] >> 4) << 4 | px[i + 2] >> 4; counts.set(k, (counts.get(k) ?? 0) + 1); }
  const bg = [...counts.entries()].sort((a, b) => b[1] - a[1])[0][0];
  let ink = 0, colours = 0;
  for (let i = 0; i < px.length; i += 4) {
    const k = (px[i] >> 4) << 8 | (px[i + 1] >> 4) << 4 | px[i + 2] >> 4;
    if (k !== bg) ink++;
    if (Math.max(px[i], px[i + 1], px[i + 2]) - Math.min(px[i], px[i + 1], px[i + 2]) > 60) colours++;
  }
  return { ink: ink / (px.length / 4), colours: colours / (px.length / 4), scale: s, detail: c.editor.stats.detail };
}"""


def open_shipped(page, name: str) -> None:
    """Drops workflows/NAME.json on the canvas and waits for its tab (a new one: the first start opens txt2img)."""
    count = js(page, "() => window.chisel.workspace.docs.length")
    drop_file(page, (REPO / "workflows" / f"{name}.json").read_bytes(), f"{name}.json", "application/json")
    page.wait_for_function("(n) => window.chisel.workspace.docs.length > n", arg=count)
    page.wait_for_timeout(100)


def run_and_wait(page, timeout: float = 240) -> None:
    """Queues the open workflow (Ctrl+Enter) and waits until its prompt is in the history (a run the server's cache
    answers ends before a poll could see it running)."""
    before = js(page, "() => [...window.chisel.workspace.active.exec.promptIds]")
    page.keyboard.press("Control+Enter")
    prompt_id = wait_for(page, """(b) => [...window.chisel.workspace.active.exec.promptIds].find((p) => !b.includes(p))
      || (window.chisel.workspace.active.exec.errors.size && 'errors')""", 30, before)
    if prompt_id != "errors":
        wait_for(page, """async (p) => { const h = await window.chisel.api.getHistoryItem(p).catch(() => null);
          return Boolean(h?.[p]) && !window.chisel.tracker.running; }""", timeout, prompt_id)
    errors = js(page, "[...window.chisel.workspace.active.exec.errors.values()].map((e) => JSON.stringify(e))")
    assert not errors and page.locator(".error-panel:not([hidden])").count() == 0, errors


@pytest.mark.parametrize("name", WORKFLOWS)
def test_every_shipped_workflow_opened_through_the_ui_shows_all_its_nodes_and_runs_to_its_images(server, page,
                                                                                                 name) -> None:
    open_editor(page, server.url)
    open_shipped(page, name)
    assert js(page, ON_SCREEN), "the workflow opened with nodes off screen"
    if name == "inpaint":  # Load Mask's values are read as the file and the server lay them out
        [mask] = node_ids(page, "LoadImageMask")
        values = [n for n in nodes(page) if n["id"] == mask][0]["widgets_values"]
        assert values[:2] == ["chisel-example-mask.png", "red"]
    run_and_wait(page)
    saves = node_ids(page, "SaveImage")
    assert saves and all(js(page, "(id) => window.chisel.workspace.active.exec.outputs.get(id)?.length > 0", s)
                         for s in saves)
    page.wait_for_timeout(300)  # the result images load before the screenshot


def test_a_30_step_run_shows_at_least_5_distinct_preview_frames_inside_the_ksampler(server, page) -> None:
    open_editor(page, server.url)
    open_shipped(page, "txt2img")
    [ks] = node_ids(page, "KSampler")
    set_number(page, ks, "steps", 30)
    js(page, """(id) => {
      window.__frames = new Set();
      const c = window.chisel;
      const sample = () => {
        const doc = c.workspace.active; const n = doc.graph.getNode(id);
        const a = c.editor.scene().frame.infoOf(n).layout.images;
        if (c.tracker.running && a && a.h > 8 && doc.exec.previews.has(id)) {
          const s = doc.vp.scale, dpr = window.devicePixelRatio || 1;
          const px = c.editor.canvas.getContext('2d').getImageData(Math.round((n.pos[0] + a.x + doc.vp.offset[0]) * s * dpr),
            Math.round((n.pos[1] + a.y + doc.vp.offset[1]) * s * dpr), Math.round(a.w * s * dpr), Math.round(a.h * s * dpr)).data;
          let hsh = 0; for (let i = 0; i < px.length; i += 16) hsh = (hsh * 31 + px[i]) | 0;
          window.__frames.add(hsh);
        }
        window.__sampler = requestAnimationFrame(sample);
      };
      sample();
    }""", ks)
    run_and_wait(page)
    frames = js(page, "() => { cancelAnimationFrame(window.__sampler); return window.__frames.size; }")
    assert frames >= 5, f"{frames} distinct preview frames drawn inside the KSampler"


def test_at_the_zoom_fit_view_picks_the_prompt_text_and_the_result_image_are_drawn(server, page) -> None:
    open_editor(page, server.url)
    open_shipped(page, "txt2img")
    [ks] = node_ids(page, "KSampler")
    set_number(page, ks, "seed", 4242)  # not the shipped run the server may have cached
    run_and_wait(page)
    [save] = node_ids(page, "SaveImage")
    wait_for(page, "(id) => window.chisel.workspace.active.exec.outputs.has(id)", 30, save)
    js(page, "() => window.chisel.workspace.active.selection.clear()")
    page.keyboard.press(".")  # fit view (to all nodes: none selected)
    page.wait_for_timeout(400)
    [pos] = [n["id"] for n in nodes(page) if n["type"] == "CLIPTextEncode"][:1]
    text = js(page, INK, [pos, "text"])
    image = js(page, INK, [save, "image"])
    assert text["scale"] < 0.62 and text["detail"] == "full", text
    assert text["ink"] > 0.02, f"no prompt text drawn at {text['scale']:.2f}: {text}"
    assert image["colours"] > 0.05, f"no result image drawn at {image['scale']:.2f}: {image}"


def test_hovering_an_input_or_widget_shows_its_tooltip_from_object_info(server, page) -> None:
    open_editor(page, server.url)
    open_shipped(page, "txt2img")
    [ks] = node_ids(page, "KSampler")
    page.mouse.move(*screen(page, "in", ks, 0))
    page.wait_for_selector(".canvas-tooltip:not([hidden])", timeout=3000)
    assert "model: MODEL" in page.inner_text(".canvas-tooltip")
    page.mouse.move(*screen(page, "widget", ks, "cfg"))
    tip_says = "(t) => document.querySelector('.canvas-tooltip:not([hidden])')?.textContent.includes(t)"
    page.wait_for_function(tip_says, arg="Classifier-Free", timeout=3000)
    page.mouse.move(*screen(page, "title", ks))
    page.wait_for_function(tip_says, arg="denoise", timeout=3000)
    page.mouse.down()
    assert page.locator(".canvas-tooltip:not([hidden])").count() == 0
    page.mouse.up()
    # the rail's icons are labelled
    labels = page.locator(".rail-btn .rail-label").all_inner_texts()
    assert {"Nodes", "Models", "Queue", "Workflows"} <= set(labels), labels


def test_a_click_on_the_minimap_centres_the_view_there(server, page) -> None:
    open_editor(page, server.url)
    open_shipped(page, "txt2img")
    box = page.locator("canvas.minimap").bounding_box()
    assert box and box["width"] > 100
    before = js(page, "() => [...window.chisel.workspace.active.vp.offset]")
    page.mouse.click(box["x"] + 12, box["y"] + 12)  # the top-left corner of the map
    after = js(page, "() => [...window.chisel.workspace.active.vp.offset]")
    assert after[0] > before[0] + 50 and after[1] > before[1] + 20, (before, after)
    # dragging across the map moves the view with it
    page.mouse.move(box["x"] + 12, box["y"] + 12)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 12, box["y"] + box["height"] - 12, steps=5)
    page.mouse.up()
    end = js(page, "() => [...window.chisel.workspace.active.vp.offset]")
    assert end[0] < after[0] - 100 and end[1] < after[1] - 50, (after, end)
    page.keyboard.press("Shift+M")
    page.wait_for_selector("canvas.minimap", state="hidden")


def test_a_dropped_api_prompt_opens_laid_out_without_overlaps(server, page) -> None:
    open_editor(page, server.url)
    prompt = (REPO / "workflows" / "api" / "inpaint.json").read_bytes()
    drop_file(page, prompt, "inpaint_api.json", "application/json")
    page.wait_for_function("window.chisel.workspace.active.name === 'inpaint_api'")
    overlaps = js(page, """async () => {
      const { overlapping } = await import('./graph/auto_layout.js');
      return overlapping(window.chisel.workspace.active.graph);
    }""")
    assert overlaps == [], overlaps
    assert js(page, ON_SCREEN)
    xs = {n["type"]: js(page, "(id) => window.chisel.workspace.active.graph.getNode(id).pos[0]", n["id"])
          for n in nodes(page)}
    assert xs["CheckpointLoaderSimple"] < xs["CLIPTextEncode"] < xs["KSampler"] < xs["VAEDecode"] < xs["SaveImage"]


def test_a_model_dragged_from_the_model_library_creates_its_loader(server, page) -> None:
    open_editor(page, server.url)
    page.click(".tab-new")
    page.click(".rail-btn[data-panel='models']")
    row = page.locator(".model-row[data-folder='checkpoints'][data-name='chisel-shapes.safetensors']")
    row.wait_for()
    row.drag_to(page.locator("#graph-canvas"), target_position={"x": 500, "y": 300})
    wait_for(page, "() => window.chisel.workspace.active.graph.nodes.size === 1", 5)
    [node] = nodes(page)
    assert node["type"] == "CheckpointLoaderSimple" and node["widgets_values"] == ["chisel-shapes.safetensors"]
    wait_for(page, "() => window.chisel.workspace.active.modelDefaults?.width === 64", 10)
    # the node library: a category tree, a preview card, and a node dragged onto the canvas
    page.click(".rail-btn[data-panel='nodes']")
    page.fill(".panel-body[data-panel='nodes'] .lib-search", "ksampler")
    first = page.locator(".panel-body[data-panel='nodes'] .lib-row[data-type='KSampler']")
    first.hover()
    assert "denoise the latent" in page.inner_text(".panel-body[data-panel='nodes'] .lib-card")
    first.drag_to(page.locator("#graph-canvas"), target_position={"x": 800, "y": 300})
    wait_for(page, "() => window.chisel.workspace.active.graph.nodes.size === 2", 5)
    assert [n["type"] for n in nodes(page)] == ["CheckpointLoaderSimple", "KSampler"]
    # the new KSampler took the loaded model's recommended settings (its card), not ComfyUI's cfg 8
    assert nodes(page)[1]["widgets_values"][2:6] == [20, 2, "euler", "normal"]
    # the search box shows a preview card of the active result
    page.mouse.dblclick(700, 650)
    page.keyboard.type("vae decode")
    page.wait_for_selector(".search-preview .node-card[data-type='VAEDecode']")
    page.keyboard.press("Escape")


MEAN_DIFF = """async ([a, b]) => {
  const load = async (url) => { const img = new Image(); img.src = url; await img.decode(); return img; };
  const [ia, ib] = [await load(a), await load(b)];
  const w = ia.naturalWidth, h = ia.naturalHeight;
  const px = (img) => { const c = document.createElement('canvas'); c.width = w; c.height = h;
    const x = c.getContext('2d'); x.drawImage(img, 0, 0, w, h); return x.getImageData(0, 0, w, h).data; };
  const [pa, pb] = [px(ia), px(ib)];
  const region = (x0, x1) => { let s = 0, n = 0;
    for (let y = 0; y < h; y++) for (let x = Math.round(x0 * w); x < Math.round(x1 * w); x++) {
      const i = (y * w + x) * 4; s += Math.abs(pa[i] - pb[i]) + Math.abs(pa[i + 1] - pb[i + 1]) + Math.abs(pa[i + 2] - pb[i + 2]); n += 3; }
    return s / n; };
  return { inside: region(0, 0.35), outside: region(0.7, 1), size: [w, h, ib.naturalWidth, ib.naturalHeight] };
}"""


def test_a_mask_painted_in_the_mask_editor_inpaints_that_region_only(server, page) -> None:
    open_editor(page, server.url)
    open_shipped(page, "inpaint")
    # inpaint from LoadImage's own mask (its alpha) instead of the separate mask file
    js(page, """() => {
      const c = window.chisel; const doc = c.workspace.active; const g = doc.graph;
      const find = (t) => [...g.nodes.values()].find((n) => n.type === t);
      const load = find('LoadImage'), enc = find('VAEEncodeForInpaint');
      g.removeNode(find('LoadImageMask').id);
      g.connect(load.id, 1, enc.id, enc.inputs.findIndex((i) => i.name === 'mask'));
      // ask for something else than the picture shows, so that the repainted region differs from it
      [...g.nodes.values()].find((n) => n.title === 'Positive Prompt').widgets_values[0] =
        'a large white square on a green background';
      c.controller.changed(true);
    }""")
    [load] = node_ids(page, "LoadImage")
    page.mouse.click(*screen(page, "title", load), button="right")
    page.locator(".menu .menu-item", has_text="Edit mask").click()
    overlay = page.locator(".mask-editor canvas.mask-overlay")
    overlay.wait_for()
    page.locator(".mask-editor input[data-setting='size']").fill("60")
    box = overlay.bounding_box()
    y = box["y"] + 10
    while y < box["y"] + box["height"]:  # paint the left third, row by row
        page.mouse.move(box["x"] + 2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.3, y, steps=4)
        page.mouse.up()
        y += 25
    page.click(".mask-editor button[data-action='save']")
    value = wait_for(page, """(id) => { const v = window.chisel.workspace.active.graph.getNode(id).widgets_values[0];
      return v.startsWith('clipspace/') && v; }""", 15, load)
    alpha = js(page, """async (v) => {
      const img = new Image(); img.src = `/view?filename=${encodeURIComponent(v.split('/')[1])}&subfolder=clipspace&type=input`;
      await img.decode(); const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
      const x = c.getContext('2d'); x.drawImage(img, 0, 0); const d = x.getImageData(0, 0, c.width, c.height).data;
      let left = 0, right = 0; const w = c.width;
      for (let i = 0; i < d.length / 4; i++) { if (d[i * 4 + 3] < 128) { if (i % w < w * 0.3) left++; else if (i % w > w * 0.5) right++; } }
      return { left: left / (d.length / 4 * 0.3), right };
    }""", value)
    assert alpha["left"] > 0.9 and alpha["right"] == 0, alpha
    run_and_wait(page)
    [save] = node_ids(page, "SaveImage")
    out = js(page, """(id) => { const c = window.chisel; const doc = c.workspace.active;
      return c.controller.imageUrls(doc, doc.graph.getNode(id))[0]; }""", save)
    diff = js(page, MEAN_DIFF, ["/view?filename=chisel-example-shapes.png&type=input", out])
    assert diff["size"][:2] == diff["size"][2:], diff
    assert diff["inside"] > 3 * diff["outside"] and diff["inside"] > 15, diff


def test_light_palette_keybinding_editor_and_lightbox_compare(server, page) -> None:
    open_editor(page, server.url)
    open_shipped(page, "txt2img")
    # the light palette, chosen in the settings dialog, repaints the canvas and the panels
    page.keyboard.press("Control+Comma")
    page.select_option("select[data-setting='Comfy.ColorPalette']", "light")
    page.click(".modal .modal-buttons button.primary")  # Done
    page.wait_for_timeout(200)
    bg = js(page, """() => { const c = window.chisel.editor; c.drawNow();
      return [...c.canvas.getContext('2d').getImageData(5, 5, 1, 1).data].slice(0, 3); }""")
    assert min(bg) > 170, bg
    assert js(page, "document.body.classList.contains('light')")
    page.screenshot(path=str(REPO / "test-artifacts" / "e2e" / "light_palette.png"))
    # a command rebound in the keybinding editor runs from its new key
    js(page, "() => window.chisel.controller.run('keybindings')")
    page.click(".kb-row[data-command='togglePanelNodes'] .kb-set")
    page.keyboard.press("k")
    assert page.inner_text(".kb-row[data-command='togglePanelNodes'] .kb-keys") == "K"
    page.click(".modal .modal-buttons button.primary")
    page.keyboard.press("k")
    page.wait_for_selector(".panel-body[data-panel='nodes']:not([hidden])")
    # the lightbox zooms and compares two images with a slider
    js(page, """() => window.chisel.lightbox.open(['/view?filename=chisel-example-shapes.png&type=input',
      '/view?filename=chisel-example-mask.png&type=input'], 1)""")
    page.wait_for_selector(".lightbox:not([hidden]) img.lightbox-img")
    page.keyboard.press("+")
    assert js(page, "window.chisel.lightbox.zoom") > 1
    page.keyboard.press("c")
    stage = page.locator(".compare:not([hidden]) .cmp-stage")
    stage.wait_for()
    box = stage.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.2, box["y"] + box["height"] / 2)
    split = js(page, "Number(document.querySelector('.cmp-slider').value)")
    assert 10 < split < 30, split
    page.screenshot(path=str(REPO / "test-artifacts" / "e2e" / "lightbox_compare.png"))
    page.keyboard.press("Escape")


def test_a_dynamic_combo_node_runs_with_the_option_its_values_chose_and_after_switching(server, page) -> None:
    """ResizeImageMaskNode (a v3 DynamicCombo): its widgets_values are read in the chosen option's layout."""
    wf = {"last_node_id": 3, "last_link_id": 2, "version": 0.4, "groups": [], "config": {}, "extra": {}, "nodes": [
        {"id": 1, "type": "LoadImage", "pos": [0, 0], "size": [300, 300], "flags": {}, "order": 0, "mode": 0,
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}, {"name": "MASK", "type": "MASK", "links": []}],
         "properties": {}, "widgets_values": ["chisel-example-shapes.png", "image"]},
        {"id": 2, "type": "ResizeImageMaskNode", "pos": [360, 0], "size": [300, 200], "flags": {}, "order": 1,
         "mode": 0, "inputs": [{"name": "input", "type": "IMAGE,MASK", "link": 1}],
         "outputs": [{"name": "resized", "type": "IMAGE", "links": [2]}], "properties": {},
         "widgets_values": ["scale dimensions", 40, 24, "disabled", "nearest-exact"]},
        {"id": 3, "type": "SaveImage", "pos": [720, 0], "size": [300, 300], "flags": {}, "order": 2, "mode": 0,
         "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "properties": {}, "widgets_values": ["dyn"]}],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]}
    open_editor(page, server.url)
    count = js(page, "() => window.chisel.workspace.docs.length")
    drop_file(page, json.dumps(wf).encode(), "dynamic.json", "application/json")
    page.wait_for_function("(n) => window.chisel.workspace.docs.length > n", arg=count)
    names = js(page, """() => { const c = window.chisel; const doc = c.workspace.active;
      return c.editor.scene().frame.infoOf(doc.graph.getNode(2)).layout.widgets.map((r) => r.widget.name); }""")
    assert names == ["resize_type", "resize_type.width", "resize_type.height", "resize_type.crop", "scale_method"]
    size = """async () => { const c = window.chisel; const doc = c.workspace.active;
      const img = new Image(); img.src = c.controller.imageUrls(doc, doc.graph.getNode(3))[0]; await img.decode();
      return [img.naturalWidth, img.naturalHeight]; }"""
    run_and_wait(page, 60)
    assert js(page, size) == [40, 24]
    # switching the option on the canvas re-lays the widgets out; the run follows
    pick_combo(page, 2, "resize_type", "scale by multiplier")
    assert js(page, "() => window.chisel.workspace.active.graph.getNode(2).widgets_values") == [
        "scale by multiplier", 1.0, "nearest-exact"]
    js(page, """() => { const doc = window.chisel.workspace.active; doc.graph.getNode(2).widgets_values[1] = 0.5;
      window.chisel.controller.changed(true); }""")
    run_and_wait(page, 60)
    assert js(page, size) == [32, 32]
