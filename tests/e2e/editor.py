"""Driving the editor in a page: open it, find slots and widgets on screen, add nodes by search, drag links."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

SCREEN_POS = """([kind, id, arg]) => {
  const c = window.chisel; const doc = c.workspace.active; const f = c.editor.scene().frame;
  const n = doc.graph.getNode(id);
  if (!n) throw new Error(`no node ${id}`);
  let p;
  if (kind === 'out') p = f.outputPos(n, arg);
  else if (kind === 'in') p = f.inputPos(n, arg);
  else if (kind === 'title') p = [n.pos[0] + 70, n.pos[1] - 15];
  else if (kind === 'image') {
    const a = f.infoOf(n).layout.images;
    p = [n.pos[0] + a.x + a.w / 2, n.pos[1] + a.y + a.h / 2];
  }
  else if (kind === 'widget') {
    const r = f.infoOf(n).layout.widgets.find((w) => w.widget.name === arg);
    if (!r) throw new Error(`node ${id} has no widget ${arg}`);
    p = [n.pos[0] + r.x + r.w / 2, n.pos[1] + r.y + Math.min(r.h, 20) / 2];
  }
  const rect = c.editor.canvas.getBoundingClientRect();
  return [(p[0] + doc.vp.offset[0]) * doc.vp.scale + rect.left, (p[1] + doc.vp.offset[1]) * doc.vp.scale + rect.top];
}"""


def open_editor(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body.ready", timeout=30_000)
    page.wait_for_function("window.chisel.api.connected", timeout=15_000)


def js(page, expr: str, arg: Any = None) -> Any:
    return page.evaluate(expr, arg)


def nodes(page) -> list[dict[str, Any]]:
    return js(page, """() => [...window.chisel.workspace.active.graph.nodes.values()].map((n) => ({
        id: n.id, type: n.type, mode: n.mode, widgets_values: n.widgets_values,
        inputs: n.inputs.map((i) => i.link)}))""")


def node_ids(page, type_: str) -> list[int]:
    return [n["id"] for n in nodes(page) if n["type"] == type_]


def screen(page, kind: str, node_id: int, arg: Any = None) -> tuple[float, float]:
    x, y = js(page, SCREEN_POS, [kind, node_id, arg])
    return x, y


def drag(page, a: tuple[float, float], b: tuple[float, float]) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, steps=4)
    page.mouse.move(*b, steps=4)
    page.mouse.up()


def add_node_by_search(page, at: tuple[float, float], query: str) -> int:
    """Double-click the canvas at `at`, type the query, pick the first result. Returns the new node's id."""
    before = {n["id"] for n in nodes(page)}
    page.mouse.dblclick(*at)
    page.wait_for_selector(".search-box:not([hidden]) .search-input")
    page.keyboard.type(query)
    page.wait_for_selector(".search-row.active")
    page.keyboard.press("Enter")
    new = [n["id"] for n in nodes(page) if n["id"] not in before]
    assert len(new) == 1, f"searching {query!r} added {new}"
    return new[0]


def connect(page, origin: int, out_slot: int, target: int, in_slot: int) -> None:
    drag(page, screen(page, "out", origin, out_slot), screen(page, "in", target, in_slot))


def set_number(page, node_id: int, widget: str, value: Any) -> None:
    """Click a number/text widget's value and type a new one."""
    page.mouse.click(*screen(page, "widget", node_id, widget))
    page.wait_for_selector("input.inline-editor")
    page.keyboard.press("Control+a")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")


def pick_combo(page, node_id: int, widget: str, choice: str) -> None:
    page.mouse.click(*screen(page, "widget", node_id, widget))
    page.locator(".menu .menu-item", has_text=choice).first.click()


def type_prompt(page, node_id: int, text: str) -> None:
    page.mouse.click(*screen(page, "widget", node_id, "text"))
    page.wait_for_selector("textarea.inline-editor")
    page.keyboard.press("Control+a")
    page.keyboard.type(text)
    page.keyboard.press("Escape")


def drop_file(page, data: bytes, name: str, mime: str, at: tuple[float, float] = (700, 400)) -> None:
    """Drops a file on the canvas the way a browser does (a DragEvent carrying a DataTransfer)."""
    js(page, """([b64, name, mime, x, y]) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], name, { type: mime }));
      const wrap = document.querySelector('#canvas-wrap');
      for (const type of ['dragover', 'drop']) {
        wrap.dispatchEvent(new DragEvent(type, { dataTransfer: dt, clientX: x, clientY: y, bubbles: true, cancelable: true }));
      }
    }""", [base64.b64encode(data).decode(), name, mime, at[0], at[1]])


def open_workflow(page, workflow: dict[str, Any], name: str) -> None:
    drop_file(page, json.dumps(workflow).encode(), f"{name}.json", "application/json")
    page.wait_for_function("(n) => window.chisel.workspace.active.name === n", arg=name)


def wait_for(page, predicate_js: str, timeout: float = 60.0, arg: Any = None) -> Any:
    """Polls a JS expression (a function of `arg`) until it returns something truthy; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(predicate_js, arg)
        if value:
            return value
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate_js}")
