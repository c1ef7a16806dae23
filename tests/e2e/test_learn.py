"""See the denoising, in real headless Chromium against a real server: learn-timeline opened from the templates
panel runs, its DenoisingTimeline strip is scrubbed with the mouse and the three views (x_t, x̂₀, ε̂) change and
show exactly the frames the run produced (the canvas's pixels compared with each frame fetched from /view); the
guided tour opens with it and follows the steps; a KSampler draws its own sigma curve. A second test drives every
kind of inspection panel from the backend's payloads (web/test/fixtures/inspect_payloads.json) with real PNG frames in
the server's temp folder. Screenshots go to test-artifacts/e2e/."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.conftest import ARTIFACTS
from tests.e2e.editor import add_node_by_search, js, node_ids, open_editor, open_workflow, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PAYLOADS = json.loads((REPO / "web" / "test" / "fixtures" / "inspect_payloads.json").read_text())
VIEWS = ("x_t", "x0", "eps")

# The panel of node `id` as drawn now: its frame, the image each view shows, and screen rectangles (CSS pixels) of
# the views' cells and of the slider.
STRIP_JS = """(id) => {
  const c = window.chisel; const doc = c.workspace.active; const node = doc.graph.getNode(id);
  c.editor.drawNow();
  const f = c.editor.scene().frame; const a = f.infoOf(node).layout.images;
  if (!a) return null;
  const s = c.area.shown(doc, node, { x: node.pos[0] + a.x, y: node.pos[1] + a.y, w: a.w, h: a.h });
  if (!s) return null;
  const box = c.editor.canvas.getBoundingClientRect(); const vp = doc.vp;
  const scr = (r) => r && [(r[0] + vp.offset[0]) * vp.scale + box.left, (r[1] + vp.offset[1]) * vp.scale + box.top,
    r[2] * vp.scale, r[3] * vp.scale];
  const panel = doc.exec.panels.get(id);
  return { kind: s.kind, index: s.index, step: s.step, views: s.views, slider: scr(s.layout.slider),
    cells: Object.fromEntries([...s.layout.views, ...s.layout.row2].map((v) => [v.key, scr(v.cell)])),
    frames: (panel.frames ?? []).map((fr) => Object.fromEntries(Object.entries(fr)
      .filter(([, r]) => r && typeof r === 'object')
      .map(([k, r]) => [k, new URL(c.api.viewUrl(r), location.href).href]))),
    xs: panel.frames ? panel.frames.map((fr) => fr.step) : [], xMax: panel.xMax ?? null };
}"""

# Mean absolute difference (0..255) between what the canvas shows in view `key` of node `id` and each candidate
# image drawn the same way (same transform, same letterboxing) on a canvas of its own; the cell's border (where
# the tour's ring may glow) is left out.
DIFF_JS = """async ([id, key, urls]) => {
  const c = window.chisel; const doc = c.workspace.active; const node = doc.graph.getNode(id);
  const { containRect } = await import('./canvas/inspector.js');
  c.editor.drawNow();
  const f = c.editor.scene().frame; const a = f.infoOf(node).layout.images;
  const s = c.area.shown(doc, node, { x: node.pos[0] + a.x, y: node.pos[1] + a.y, w: a.w, h: a.h });
  const cell = [...s.layout.views, ...s.layout.row2].find((v) => v.key === key).cell;
  const main = c.editor.canvas; const dpr = window.devicePixelRatio || 1; const vp = doc.vp;
  const k = dpr * vp.scale;
  const load = async (u) => { const img = new Image(); img.src = u; await img.decode(); return img; };
  const shownImg = await load(s.views[key]);
  const r = containRect(shownImg.naturalWidth, shownImg.naturalHeight, cell);
  const inset = 0.12;
  const x0 = Math.ceil((r[0] + r[2] * inset + vp.offset[0]) * k);
  const y0 = Math.ceil((r[1] + r[3] * inset + vp.offset[1]) * k);
  const w = Math.floor(r[2] * (1 - 2 * inset) * k), h = Math.floor(r[3] * (1 - 2 * inset) * k);
  if (w < 8 || h < 8) throw new Error(`view ${key} is too small to compare: ${w}x${h}`);
  const shown = main.getContext('2d').getImageData(x0, y0, w, h).data;
  const out = [];
  for (const u of urls) {
    const img = await load(u);
    const off = document.createElement('canvas'); off.width = main.width; off.height = main.height;
    const ctx = off.getContext('2d');
    ctx.setTransform(k, 0, 0, k, k * vp.offset[0], k * vp.offset[1]);
    ctx.drawImage(img, ...containRect(img.naturalWidth, img.naturalHeight, cell));
    const ref = ctx.getImageData(x0, y0, w, h).data;
    let sum = 0;
    for (let i = 0; i < ref.length; i += 4) {
      sum += Math.abs(ref[i] - shown[i]) + Math.abs(ref[i + 1] - shown[i + 1]) + Math.abs(ref[i + 2] - shown[i + 2]);
    }
    out.push(sum / (3 * (ref.length / 4)));
  }
  return out;
}"""

FRAME_LOADED_JS = """(urls) => Promise.all(urls.map((u) => new Promise((ok) => {
  const img = new Image(); img.onload = () => ok(true); img.onerror = () => ok(false); img.src = u;
}))).then((r) => r.every(Boolean))"""


def strip(page, node_id: int) -> dict[str, Any]:
    return js(page, STRIP_JS, node_id)


def view_diffs(page, node_id: int, key: str, urls: list[str]) -> list[float]:
    return js(page, DIFF_JS, [node_id, key, urls])


def settle(page) -> None:
    """Two animation frames: the scrub's redraw and any image that finished loading."""
    js(page, "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


def slider_x(s: dict[str, Any], index: int) -> float:
    x, _, w, _ = s["slider"]
    return x + w * s["xs"][index] / s["xMax"]


def assert_shows_frame(page, node_id: int, index: int) -> dict[str, Any]:
    """The strip is at frame `index`; each of x_t, x̂₀, ε̂ shows that frame's image: by URL, and by pixels (the
    canvas matches the fetched frame, and matches it better than any other frame of the film)."""
    s = strip(page, node_id)
    assert s["index"] == index, (s["index"], index)
    for key in VIEWS:
        assert s["views"][key] == s["frames"][index][key], (key, s["views"][key], s["frames"][index][key])
        candidates = [fr[key] for fr in s["frames"]]
        diffs = view_diffs(page, node_id, key, candidates)
        best = min(range(len(diffs)), key=diffs.__getitem__)
        assert diffs[index] < 1.5, f"{key}: the canvas differs from frame {index}'s image by {diffs[index]:.2f}"
        assert best == index or diffs[best] == diffs[index], (key, index, diffs)
    return s


def drag_slider_through(page, node_id: int, targets: list[int], shot: str | None = None) -> list[dict[str, Any]]:
    """One mouse drag along the slider, pausing at each target frame to check what the strip shows (the pointer
    is still down: the images follow the drag). Returns the strip's state at each target."""
    s = strip(page, node_id)
    y = s["slider"][1] + 9 * (s["slider"][3] / 28)
    page.mouse.move(slider_x(s, s["index"]), y)
    page.mouse.down()
    seen = []
    try:
        for t in targets:
            page.mouse.move(slider_x(s, t), y, steps=6)
            settle(page)
            assert js(page, FRAME_LOADED_JS, [s["frames"][t][k] for k in VIEWS])
            settle(page)
            seen.append(assert_shows_frame(page, node_id, t))
            if shot and t == targets[len(targets) // 2]:
                page.screenshot(path=str(ARTIFACTS / f"{shot}-mid-drag.png"))
    finally:
        page.mouse.up()
    return seen


def write_frames(temp_dir: Path) -> None:
    """A PNG for every image the fixture payloads name: a red disc on blue under noise that fades with the step,
    each file with noise of its own (so that no two frames look alike)."""
    out = temp_dir / "inspect"
    out.mkdir(parents=True, exist_ok=True)
    names = {ref["filename"] for payload in PAYLOADS.values() for ref in _refs(payload)}
    for name in sorted(names):
        parts = name.split("_")
        step = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 3
        rnd = random.Random(name)
        im = Image.new("RGB", (48, 48))
        px = im.load()
        a = max(0.0, 1 - step / 5)
        for y in range(48):
            for x in range(48):
                clean = (210, 50, 50) if (x - 24) ** 2 + (y - 24) ** 2 < 180 else (40, 60, 190)
                px[x, y] = tuple(int(a * rnd.randint(0, 255) + (1 - a) * c) for c in clean)
        im.save(out / name)


def _refs(obj: Any):
    if isinstance(obj, dict):
        if "filename" in obj and obj.get("type") == "temp":
            yield obj
        for v in obj.values():
            yield from _refs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _refs(v)


def host_workflow(count: int) -> dict[str, Any]:
    """`count` unconnected PreviewImage nodes in a row: hosts for the injected results."""
    return {"last_node_id": count, "last_link_id": 0, "version": 0.4, "groups": [], "config": {}, "extra": {},
            "links": [], "nodes": [
                {"id": i, "type": "PreviewImage", "pos": [40 + (i - 1) * 640, 80], "size": [300, 80], "flags": {},
                 "order": i, "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": None}],
                 "properties": {}} for i in range(1, count + 1)]}


def inject(page, node_id: int, output: dict[str, Any]) -> None:
    js(page, """([id, output]) => { const c = window.chisel; const doc = c.workspace.active;
      c.tracker.registerPrompt('injected', doc, []);
      c.tracker.handle({ type: 'executed', data: { prompt_id: 'injected', node: String(id), output } }); }""",
       [node_id, output])


def test_every_inspection_panel_is_drawn_from_its_payload_and_the_strip_scrubs(server, page) -> None:
    write_frames(server.base_dir / "temp")
    open_editor(page, server.url)
    open_workflow(page, host_workflow(5), "inspect-panels")
    kinds = ["DenoisingTimeline", "NoiseToTimestep", "DenoiseOnce", "SchedulePlot", "TrainingStep"]
    for i, kind in enumerate(kinds, start=1):
        inject(page, i, PAYLOADS[kind])
    sizes = js(page, "() => [...window.chisel.workspace.active.graph.nodes.values()].map((n) => n.size)")
    assert sizes[0][0] >= 540 and sizes[0][1] > 400, f"the timeline node grew for its strip: {sizes[0]}"
    assert js(page, "() => window.chisel.workspace.active.modified") is False, "growing for results is not an edit"
    js(page, "() => window.chisel.editor.fit()")
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "learn-panels-overview.png"))

    s = strip(page, 1)
    assert s["kind"] == "timeline" and s["index"] == 0
    # zoom to the strip at 1:1 so that the views are large, then scrub with the mouse
    js(page, """() => { const c = window.chisel; const doc = c.workspace.active; const n = doc.graph.getNode(1);
      doc.vp.scale = 1; doc.vp.offset = [40 - n.pos[0], 60 - n.pos[1]]; c.editor.drawNow(); }""")
    assert_shows_frame(page, 1, 0)
    seen = drag_slider_through(page, 1, [2, 5, 3], shot="learn-panels")
    assert len({st["views"]["x0"] for st in seen}) == 3, "x̂₀ changes with the step"
    # the cfg row's toggle switches x̂₀ <-> ε̂ predictions
    cells = strip(page, 1)["cells"]
    assert set(cells) >= {"cond", "uncond", "guided"}
    toggle = js(page, """() => {
      const c = window.chisel; const doc = c.workspace.active; const n = doc.graph.getNode(1);
      const f = c.editor.scene().frame; const a = f.infoOf(n).layout.images;
      const s = c.area.shown(doc, n, { x: n.pos[0] + a.x, y: n.pos[1] + a.y, w: a.w, h: a.h });
      const t = s.layout.toggle; const box = c.editor.canvas.getBoundingClientRect(); const vp = doc.vp;
      return [(t[0] + t[2] / 2 + vp.offset[0]) * vp.scale + box.left,
        (t[1] + t[3] / 2 + vp.offset[1]) * vp.scale + box.top]; }""")
    before = strip(page, 1)["views"]["cond"]
    page.mouse.click(*toggle)
    assert "x0_cond" in before, before
    wait_for(page, "(id) => { const c = window.chisel; c.editor.drawNow(); "
                   "return c.workspace.active.exec.panels.get(id).shown.cond.src.includes('eps_cond'); }", 10, 1)
    assert strip(page, 1)["index"] == 3, "the toggle is not a scrub"

    # NoiseToTimestep: its slider runs from clean to pure noise
    js(page, """() => { const c = window.chisel; const doc = c.workspace.active; const n = doc.graph.getNode(2);
      doc.vp.scale = 1; doc.vp.offset = [40 - n.pos[0], 60 - n.pos[1]]; c.editor.drawNow(); }""")
    noising = strip(page, 2)
    assert noising["kind"] == "noising" and noising["index"] == 2, "starts at the level the node passed on"
    y = noising["slider"][1] + 9
    page.mouse.move(slider_x(noising, 2), y)
    page.mouse.down()
    page.mouse.move(noising["slider"][0] - 30, y, steps=5)
    settle(page)
    assert strip(page, 2)["views"]["image"].endswith("noise_0.png&subfolder=inspect&type=temp")
    page.mouse.move(noising["slider"][0] + noising["slider"][2] + 30, y, steps=5)
    settle(page)
    assert "noise_4.png" in strip(page, 2)["views"]["image"]
    page.mouse.up()
    page.screenshot(path=str(ARTIFACTS / "learn-panels-noising.png"))
    assert strip(page, 3)["kind"] == "denoise_once"
    assert strip(page, 5)["views"]["error"].endswith("tr_err.png&subfolder=inspect&type=temp")


CURVE_PIXELS_JS = """(id) => {
  const c = window.chisel; const doc = c.workspace.active; const node = doc.graph.getNode(id);
  c.editor.drawNow();
  const f = c.editor.scene().frame; const a = f.infoOf(node).layout.images;
  if (!a) return 0;
  const h = 64; const top = node.pos[1] + a.y + a.h - h + 15;  // canvas/inspector.js curveLayout
  const k = (window.devicePixelRatio || 1) * doc.vp.scale; const vp = doc.vp;
  const x0 = Math.round((node.pos[0] + a.x + 4 + vp.offset[0]) * k), y0 = Math.round((top + vp.offset[1]) * k);
  const w = Math.round((a.w - 8) * k), hh = Math.round((h - 19) * k);
  if (w < 4 || hh < 4) return 0;
  const px = c.editor.canvas.getContext('2d').getImageData(x0, y0, w, hh).data;
  let n = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (px[i + 1] > 150 && px[i + 1] - px[i] > 25 && px[i + 1] - px[i + 2] > 25) n++;  // the curve's pale green
  }
  return n;
}"""


def test_learn_timeline_runs_and_its_strip_shows_the_frames_it_made_as_the_slider_is_dragged(server, page) -> None:
    open_editor(page, server.url)
    page.click(".rail-btn[data-panel='workflows']")
    page.locator(".wf-item.template[data-template='learn-timeline'] .wf-name").click()
    page.wait_for_function("window.chisel.workspace.active.name === 'learn-timeline'")
    page.click(".rail-btn[data-panel='workflows']")  # close the sidebar again
    # the guided tour opens with a learn-* workflow, at its first step
    page.wait_for_selector(".tour:not([hidden])")
    assert page.get_attribute(".tour", "data-step") == "film"
    assert "Make the film" in page.inner_text(".tour")
    page.screenshot(path=str(ARTIFACTS / "learn-timeline-opened.png"))
    [tl] = node_ids(page, "DenoisingTimeline")

    page.click(".tour-run")
    wait_for(page, "(id) => { const d = window.chisel.workspace.active; "
                   "return d.exec.panels.has(id) || d.exec.errors.size > 0; }", 600, tl)
    assert page.locator(".error-panel:not([hidden])").count() == 0, page.inner_text(".error-panel")
    # the result arrived: the tour moved on by itself to "This is pure noise", ringing x_t at the first step
    page.wait_for_function("document.querySelector('.tour').dataset.step === 'noise'")
    settle(page)
    page.wait_for_timeout(200)
    page.screenshot(path=str(ARTIFACTS / "learn-timeline-tour-pure-noise.png"))  # as the tour shows it
    assert js(page, "(id) => window.chisel.area.highlightFor(window.chisel.workspace.active, "
                    "window.chisel.workspace.active.graph.getNode(id))", tl) == "x_t"
    s = strip(page, tl)
    n = len(s["frames"])
    assert s["kind"] == "timeline" and n >= 3 and s["index"] == 0, (s["kind"], n, s["index"])
    # look at the strip at 1:1 (the views large enough to compare their pixels)
    js(page, """(id) => { const c = window.chisel; const doc = c.workspace.active; const node = doc.graph.getNode(id);
      const a = c.editor.scene().frame.infoOf(node).layout.images;
      doc.vp.scale = 1; doc.vp.offset = [30 - node.pos[0] - a.x, 16 - node.pos[1] - a.y]; c.editor.drawNow(); }""", tl)
    assert js(page, FRAME_LOADED_JS, [s["frames"][0][k] for k in VIEWS])
    settle(page)
    assert_shows_frame(page, tl, 0)
    page.screenshot(path=str(ARTIFACTS / "learn-timeline-pure-noise.png"))

    targets = [n // 3, n - 1, n // 2]
    seen = drag_slider_through(page, tl, targets, shot="learn-timeline")
    for key in VIEWS:
        assert len({st["views"][key] for st in seen}) == 3, f"{key} changes as the slider moves"
    # and the picture really changes: the last x̂₀ is far from the first frame's
    first, last = s["frames"][0], s["frames"][n - 1]
    js(page, "(id) => window.chisel.area.setIndex(window.chisel.workspace.active, id, 'last')", tl)
    settle(page)
    d = view_diffs(page, tl, "x_t", [last["x_t"], first["x_t"]])
    assert d[0] < 1.5 < 5 < d[1], d
    page.screenshot(path=str(ARTIFACTS / "learn-timeline-last-step.png"))

    # the tour walks on: prediction, the film, the schedule, CFG
    for step in ("predict", "scrub", "schedule", "cfg"):
        page.click(".tour-next")
        page.wait_for_function("(s) => document.querySelector('.tour').dataset.step === s", arg=step)
    assert "This is CFG" in page.inner_text(".tour")
    page.screenshot(path=str(ARTIFACTS / "learn-timeline-tour-cfg.png"))
    page.click(".tour-close")
    assert page.locator(".tour:not([hidden])").count() == 0

    # a KSampler draws the sigma curve of its own settings
    ks_ids = node_ids(page, "KSampler")
    if not ks_ids:
        js(page, "() => window.chisel.editor.fit()")
        ks_ids = [add_node_by_search(page, (300, 700), "ksampler")]
    ks = ks_ids[0]
    js(page, "(id) => { const c = window.chisel; c.editor.fit([c.workspace.active.graph.getNode(id)]); }", ks)
    wait_for(page, CURVE_PIXELS_JS, 30, ks)
    assert js(page, CURVE_PIXELS_JS, ks) > 40
    page.screenshot(path=str(ARTIFACTS / "learn-timeline-ksampler-curve.png"))
