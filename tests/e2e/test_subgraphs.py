"""Subgraphs in the editor, in Chromium against a real server: txt2img's text encoders and sampler become a subgraph
(Ctrl+Shift+E), it runs with the progress shown on the instance, the subgraph opens (breadcrumb back out), a widget
inside is promoted and set on the instance, the next run uses it, the saved workflow reloads, and the instance
unpacks back into its nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, TINY_CHECKPOINT
from tests.e2e.editor import js, nodes, open_editor, open_workflow, screen, set_number, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def small_txt2img() -> dict:
    workflow = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    for node in workflow["nodes"]:
        if node["type"] == "CheckpointLoaderSimple":
            node["widgets_values"] = [TINY_CHECKPOINT]
        elif node["type"] == "EmptyLatentImage":
            node["widgets_values"] = [64, 64, 1]
        elif node["type"] == "KSampler":
            node["widgets_values"][1:3] = ["fixed", 2]  # control_after_generate, steps
    return workflow


def run_and_wait(page, save_id: int) -> dict:
    """Queues with Ctrl+Enter; waits for the SaveImage result; returns the prompt the server ran (its history)."""
    js(page, "() => { const e = window.chisel.workspace.active.exec; e.outputs.clear(); e.errors.clear(); }")
    page.keyboard.press("Control+Enter")
    wait_for(page, "(id) => window.chisel.workspace.active.exec.outputs.has(id) "
                   "|| window.chisel.workspace.active.exec.errors.size", 120, save_id)
    assert js(page, "window.chisel.workspace.active.exec.errors.size") == 0, \
        js(page, "JSON.stringify([...window.chisel.workspace.active.exec.errors])")
    history = js(page, "async () => (await fetch('/api/history?max_items=1')).json()")
    return next(iter(history.values()))["prompt"][2]


def test_a_subgraph_is_made_run_opened_promoted_saved_reloaded_and_unpacked(server, page) -> None:
    open_editor(page, server.url)
    open_workflow(page, small_txt2img(), "subgraphs")
    by_type = {n["type"]: n["id"] for n in nodes(page)}
    encoders = [n["id"] for n in nodes(page) if n["type"] == "CLIPTextEncode"]
    save = by_type["SaveImage"]

    # select the two encoders and the sampler, Ctrl+Shift+E
    js(page, "(ids) => { window.chisel.workspace.active.selection = new Set(ids); }", [*encoders, by_type["KSampler"]])
    page.mouse.move(700, 400)
    page.keyboard.press("Control+Shift+E")
    types = sorted(n["type"] for n in nodes(page))
    assert len(types) == 5 and "KSampler" not in types and "CLIPTextEncode" not in types, types
    instance = next(n["id"] for n in nodes(page) if len(n["type"]) == 36)

    # it runs; while it does, the running node shown at the top level is the instance
    js(page, """() => { window.__shown = new Set();
      const scene = () => window.chisel.editor.scene();
      window.__watch = setInterval(() => window.__shown.add(String(scene().exec.running)), 2); }""")
    prompt = run_and_wait(page, save)
    shown = js(page, "() => { clearInterval(window.__watch); return [...window.__shown]; }")
    assert str(instance) in shown, shown
    sampler = f"{instance}:{by_type['KSampler']}"
    assert prompt[sampler]["class_type"] == "KSampler" and prompt[sampler]["inputs"]["steps"] == 2
    assert prompt[str(save)]["inputs"]["images"] == [str(by_type["VAEDecode"]), 0]

    # open it: the breadcrumb shows the way out, the sampler is inside; promote its seed
    body = js(page, """(id) => { const c = window.chisel; const doc = c.workspace.active;
      const n = doc.graph.getNode(id); const r = c.editor.canvas.getBoundingClientRect();
      const p = [n.pos[0] + n.size[0] / 2, n.pos[1] + n.size[1] - 6];
      return [(p[0] + doc.vp.offset[0]) * doc.vp.scale + r.left, (p[1] + doc.vp.offset[1]) * doc.vp.scale + r.top]; }""",
              instance)
    page.mouse.dblclick(*body)  # a double-click on an instance opens it
    page.wait_for_selector(".subgraph-breadcrumb:not([hidden])")
    inner = {n["type"] for n in nodes(page)}
    assert {"KSampler", "CLIPTextEncode", "Chisel.SubgraphInputs", "Chisel.SubgraphOutputs"} <= inner, inner
    js(page, """(id) => {
      const c = window.chisel.controller;
      const node = window.chisel.workspace.active.graph.getNode(id);
      const promote = c.subgraphs.nodeItems(node).find((i) => i.label === 'Promote widget');
      promote.submenu.find((i) => i.label === 'seed').action();
    }""", by_type["KSampler"])
    # rename the new input from the Inputs node's menu: the instance's widget follows
    page.mouse.click(*screen(page, "title", -10), button="right")
    page.locator(".menu .menu-item", has_text="Input “seed”").hover()
    page.locator(".menu .menu-item", has_text="Rename…").click()
    page.wait_for_selector(".modal-input")
    page.keyboard.press("Control+a")
    page.keyboard.type("noise seed")
    page.keyboard.press("Enter")
    assert js(page, "() => window.chisel.workspace.active.graph.getNode(-10).outputs.map((o) => o.name)")[-1] == \
        "noise seed"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "subgraph-open.png"))
    page.click(".subgraph-breadcrumb .step")  # back to the workflow
    page.wait_for_selector(".subgraph-breadcrumb", state="hidden")
    assert js(page, "(id) => window.chisel.defs.get(window.chisel.workspace.active.graph.getNode(id).type)"
                    ".widgets.map((w) => w.name)", instance) == ["noise seed"]

    # the promoted seed, set on the instance by its widget, reaches the inner sampler
    set_number(page, instance, "noise seed", 1234)
    page.screenshot(path=str(ARTIFACTS / "subgraph-instance.png"))
    prompt = run_and_wait(page, save)
    assert prompt[sampler]["inputs"]["seed"] == 1234, prompt[sampler]

    # saved and reopened: the instance keeps its value and its subgraph
    saved = js(page, "() => window.chisel.workspace.active.toWorkflow()")
    assert saved["definitions"]["subgraphs"][0]["inputs"][-1]["name"] == "noise seed"
    open_workflow(page, saved, "subgraphs reloaded")
    [reloaded] = [n for n in nodes(page) if len(n["type"]) == 36]
    assert reloaded["widgets_values"] == [1234]

    # unpacked: the nodes are back, the sampler with the instance's seed, wired as before
    js(page, "(id) => window.chisel.controller.subgraphs.unpack(id)", reloaded["id"])
    types = sorted(n["type"] for n in nodes(page))
    assert types == sorted(["CheckpointLoaderSimple", "EmptyLatentImage", "CLIPTextEncode", "CLIPTextEncode",
                            "KSampler", "VAEDecode", "SaveImage"]), types
    ksampler = next(n for n in nodes(page) if n["type"] == "KSampler")
    assert ksampler["widgets_values"][0] == 1234
    wired = js(page, """(id) => window.chisel.workspace.active.graph.getNode(id).inputs.filter((i) => i.link !== null)
        .map((i) => i.name).sort()""", ksampler["id"])
    assert wired == ["latent_image", "model", "negative", "positive"], wired
    prompt = run_and_wait(page, save)
    assert any(v["class_type"] == "KSampler" and v["inputs"]["seed"] == 1234 for v in prompt.values())

    # the workflow's subgraphs stay in its library (the canvas menu) to drop new instances from
    js(page, """() => { const items = window.chisel.controller.subgraphs.canvasItems([900, 700]);
      items.find((i) => i.label === 'Add subgraph').submenu[0].action(); }""")
    [added] = [n for n in nodes(page) if len(n["type"]) == 36]
    converted = js(page, """async () => (await (await fetch('/api/workflow/convert', { method: 'POST',
      body: JSON.stringify({ workflow: window.chisel.workspace.active.toWorkflow() }) })).json()).prompt""")
    assert converted[f"{added['id']}:{by_type['KSampler']}"]["class_type"] == "KSampler"
