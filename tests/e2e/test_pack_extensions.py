"""Custom node packs' frontend extensions in the editor (headless Chromium): an extension written for ComfyUI runs
its hooks and gets its pack's websocket messages; broken ones are reported and the editor keeps working."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import make_base_dir
from tests.e2e.editor import open_editor
from tests.server.conftest import LiveServer, start_server

PACKS = Path(__file__).resolve().parents[1] / "fixtures" / "comfy_packs"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = make_base_dir(tmp_path_factory.mktemp("e2e-packs"))
    for name in ("route_pack", "ui_broken_pack"):
        shutil.copytree(PACKS / name, base / "custom_nodes" / name)
    live = start_server(base)
    yield live
    live.stop()


def test_pack_extensions_run_in_the_editor_and_broken_ones_are_reported(page, pack_server):
    open_editor(page, pack_server.url)
    page.wait_for_function("window.routePack && window.routePack.setup", timeout=15_000)
    assert page.evaluate("window.routePack.nodes") == ["Announce"]
    prompt = {"1": {"class_type": "Announce", "inputs": {"text": "e2e"}}}
    request = urllib.request.Request(f"{pack_server.url}/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()
    page.wait_for_function("window.routePack.messages.length > 0", timeout=20_000)
    # the pack's on_prompt handler upper-cases Announce texts before the prompt is queued
    assert page.evaluate("window.routePack.messages") == ["hello, E2E"]
    toasts = page.locator("#toasts").inner_text()
    assert "broken.js failed to load" in toasts and "ui_broken.litegraph failed in setup" in toasts
    assert page.evaluate("document.body.classList.contains('ready')")
