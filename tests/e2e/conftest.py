"""End-to-end fixtures: a real Chisel server (subprocess, temporary base directory with a tiny SD1 checkpoint) and
Debian's headless Chromium driven by Playwright. Screenshots go to test-artifacts/e2e/ (git-ignored)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import LiveServer, start_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
TINY_CHECKPOINT = "tiny-sd1.safetensors"

pytestmark = pytest.mark.e2e


def make_base_dir(base: Path) -> Path:
    """models/checkpoints/tiny-sd1.safetensors: random weights in SD1 layout (a few MB, written in under a second)."""
    from tests.diffusion.tiny_checkpoint import write_tiny_sd1_checkpoint

    (base / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_tiny_sd1_checkpoint(base / "models" / "checkpoints" / TINY_CHECKPOINT)
    return base


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(make_base_dir(tmp_path_factory.mktemp("e2e-base")))
    yield live
    live.stop()


@pytest.fixture(scope="module")  # torn down with the module: Playwright's sync API keeps an event loop running
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed: `bash scripts/test.sh` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request) -> Iterator[object]:
    """A fresh browser context (empty localStorage) per test; a screenshot is saved when the test ends."""
    context = browser.new_context(viewport={"width": 1400, "height": 820})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.page_errors = errors
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server of its own (for tests that stop and restart it)."""
    live = start_server(make_base_dir(tmp_path / "base"))
    yield live
    live.stop()


def restart(live: LiveServer) -> LiveServer:
    """The same server again: same port and base directory (a crash and restart as the browser sees it)."""
    live.kill()
    return start_server(live.base_dir, port=live.port)


def copy_artifact(src: Path, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, ARTIFACTS / name)
