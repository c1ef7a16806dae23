"""Issue 15, editor part 2, in real headless Chromium against a real server: the assets panel (past runs as an
image grid with prompt text, duration and rerun; two picked images under the compare slider) and a node's two output
images under the compare slider."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ARTIFACTS
from tests.e2e.editor import js, open_editor, open_workflow, screen, wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PROMPT_TEXT = "a large red star in the center on a blue background"


def http(server, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())


def queue_txt2img(server, seed: int) -> str:
    """Queues the shipped txt2img (built-in model, 64x64, one image, 4 steps) by the API; returns its prompt id."""
    prompt = json.loads((REPO / "workflows" / "api" / "txt2img.json").read_text())
    prompt["5"]["inputs"]["batch_size"] = 1
    prompt["3"]["inputs"].update(seed=seed, steps=4)
    workflow = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    body = {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": workflow}}}
    return http(server, "/prompt", body)["prompt_id"]


def wait_history(server, prompt_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = http(server, f"/history/{prompt_id}").get(prompt_id)
        if entry and entry["status"].get("completed") is not None and entry["status"].get("status_str"):
            assert entry["status"]["status_str"] == "success", entry["status"]
            return entry
        time.sleep(0.2)
    raise AssertionError(f"{prompt_id} did not finish in {timeout}s")


def two_image_workflow() -> dict[str, Any]:
    """EmptyImage (batch of 2, 64x48) -> SaveImage: one node showing two images."""
    return {
        "last_node_id": 2, "last_link_id": 1, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "EmptyImage", "pos": [100, 100], "size": [315, 130], "flags": {}, "order": 0, "mode": 0,
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1], "slot_index": 0}], "properties": {},
             "widgets_values": [64, 48, 2, 3394611]},
            {"id": 2, "type": "SaveImage", "pos": [500, 100], "size": [300, 300], "flags": {}, "order": 1, "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "properties": {},
             "widgets_values": ["e2e_compare"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }


COMPARE = """() => { const root = document.querySelector('.lightbox .compare');
  const a = root.querySelector('.cmp-a'), b = root.querySelector('.cmp-b');
  return { shown: !root.hidden && !root.closest('.lightbox').hidden, a: a.getAttribute('src'), b: b.getAttribute('src'),
    loaded: a.complete && a.naturalWidth > 0 && b.complete && b.naturalWidth > 0,
    split: Number(root.querySelector('.cmp-slider').value), clip: b.style.clipPath }; }"""


def test_the_assets_panel_lists_runs_with_text_duration_and_images_compares_two_and_reruns(server, page) -> None:
    first, second = queue_txt2img(server, 1), queue_txt2img(server, 2)
    entries = [wait_history(server, first), wait_history(server, second)]
    files = [e["outputs"]["9"]["images"][0]["filename"] for e in entries]
    open_editor(page, server.url)
    page.click(".rail-btn[data-panel='assets']")
    cards = [page.locator(f".asset-run[data-prompt-id='{i}']") for i in (first, second)]
    for card in cards:
        card.wait_for()
        assert PROMPT_TEXT in card.locator(".asset-text").inner_text()
        assert card.locator(".asset-thumb img").count() == 1
        duration = card.locator(".asset-duration").inner_text()
        assert duration.endswith(" s") and float(duration.split()[0]) > 0, duration
    order = js(page, "() => [...document.querySelectorAll('.asset-run')].map((e) => e.dataset.promptId)")
    assert order.index(second) < order.index(first), "newest first"
    wait_for(page, "() => [...document.querySelectorAll('.asset-thumb img')].every((i) => i.complete && i.naturalWidth)",
             15)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "assets_panel.png"))

    # a click on a thumbnail opens that image in the lightbox
    cards[0].locator(".asset-thumb img").click()
    page.wait_for_selector(".lightbox:not([hidden]) img.lightbox-img")
    assert files[0] in page.get_attribute(".lightbox-img", "src")
    page.keyboard.press("Escape")

    # two picked images open under the compare slider: the first picked on the left, the second on the right
    assert page.locator(".assets-compare").is_disabled()
    for card in cards:
        card.locator(".asset-pick").click()
    assert page.locator(".asset-thumb.picked").count() == 2
    page.click(".assets-compare")
    wait_for(page, f"() => {{ const s = ({COMPARE})(); return s.shown && s.loaded; }}", 15)
    state = js(page, COMPARE)
    assert files[0] in state["a"] and files[1] in state["b"], (files, state)
    box = page.locator(".lightbox .cmp-stage").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    state = js(page, COMPARE)
    assert abs(state["split"] - 25) < 2 and "25" in state["clip"], state
    page.screenshot(path=str(ARTIFACTS / "assets_compare_slider.png"))
    page.keyboard.press("Escape")
    assert page.locator(".lightbox:not([hidden])").count() == 0

    # rerun queues the same prompt again: a new run at the top of the panel, with the same seed
    before = set(http(server, "/history"))
    cards[0].locator(".asset-rerun").click()
    new = wait_for(page, """(old) => {
      const ids = [...document.querySelectorAll('.asset-run')].map((e) => e.dataset.promptId);
      return ids.length && !old.includes(ids[0]) && ids[0]; }""", 120, sorted(before))
    assert http(server, f"/history/{new}")[new]["prompt"][2]["3"]["inputs"]["seed"] == 1
    assert PROMPT_TEXT in page.locator(f".asset-run[data-prompt-id='{new}'] .asset-text").inner_text()


def test_a_node_with_two_output_images_opens_them_under_the_compare_slider(server, page) -> None:
    open_editor(page, server.url)
    open_workflow(page, two_image_workflow(), "two-images")
    page.keyboard.press("Control+Enter")
    wait_for(page, "() => window.chisel.workspace.active.exec.outputs.get(2)?.length === 2", 60)
    page.mouse.click(*screen(page, "title", 2), button="right")
    page.locator(".menu .menu-item", has_text="Compare images").click()
    wait_for(page, f"() => {{ const s = ({COMPARE})(); return s.shown && s.loaded; }}", 15)
    state = js(page, COMPARE)
    assert "e2e_compare" in state["a"] and "e2e_compare" in state["b"] and state["a"] != state["b"], state
    page.keyboard.press("c")  # back to one image at a time, with previous / next
    assert not js(page, COMPARE)["shown"]
    assert page.locator(".lightbox-caption").inner_text() == "2 / 2"
