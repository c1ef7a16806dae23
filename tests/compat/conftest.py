"""Compatibility oracle fixtures: the real ComfyUI frontend (PyPI `comfyui-frontend-package`, pinned in the test extra)
served by a real Chisel server (`chisel serve --front-end-root <the wheel's static/>`), in Debian's headless Chromium.

The server and the browser come from the e2e helpers (tests/e2e/conftest.py); screenshots go to
test-artifacts/compat/ (git-ignored).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import browser, make_base_dir  # noqa: F401  (browser: the fixture, re-exported)
from tests.server.conftest import LiveServer, start_server

FRONTEND_VERSION = "1.58.1"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "compat"
# Settings seeded through our /api/settings before the page opens: no first-run templates dialog over the canvas,
# no minimap over the nodes in screenshots.
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}


@pytest.fixture(scope="session")
def frontend_root() -> Path:
    """The web root of the pinned frontend wheel."""
    try:
        import comfyui_frontend_package
    except ImportError:
        pytest.fail(f"comfyui-frontend-package is not installed: "
                    f"`.venv/bin/pip install comfyui-frontend-package=={FRONTEND_VERSION}` (in the [test] extra)")
    version = getattr(comfyui_frontend_package, "__version__", None)
    assert version == FRONTEND_VERSION, f"the oracle is pinned to frontend {FRONTEND_VERSION}, found {version}"
    root = Path(comfyui_frontend_package.__file__).parent / "static"
    assert (root / "index.html").is_file(), f"no index.html in {root}"
    return root


def api(server: LiveServer, path: str, body: Any = None) -> Any:
    """GET (or POST `body` as JSON to) the server's API; the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


@pytest.fixture(scope="module")
def compat_server(tmp_path_factory: pytest.TempPathFactory, frontend_root: Path) -> Iterator[LiveServer]:
    """A Chisel server serving the real frontend, with a tiny SD1 checkpoint and the settings above."""
    live = start_server(make_base_dir(tmp_path_factory.mktemp("compat-base")), "--front-end-root", str(frontend_root))
    try:
        api(live, "/api/settings", SETTINGS)
        yield live
    finally:
        live.stop()


@dataclass
class Traffic:
    """What the page did that a test may assert on: uncaught errors, and our server's answers to it."""

    origin: str
    page_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "404 GET /path?query" for our server's 4xx/5xx answers
    ok_views: list[str] = field(default_factory=list)  # the full URLs of /api/view requests answered 200

    def on_response(self, response: Any) -> None:
        url = response.url
        if not url.startswith(self.origin):
            return  # the frontend's calls to api.comfy.org / huggingface.co fail offline, harmlessly
        path = url[len(self.origin):]
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.request.method} {path}")
        elif path.startswith("/api/view?"):
            self.ok_views.append(url)


@pytest.fixture
def frontend(browser, compat_server: LiveServer, request) -> Iterator[tuple[Any, Traffic]]:  # noqa: F811
    """A fresh browser context on the real frontend, booted (window.app.graph exists); a screenshot when it ends."""
    context = browser.new_context(viewport={"width": 1920, "height": 1000})
    page = context.new_page()
    traffic = Traffic(origin=compat_server.url)
    page.on("pageerror", lambda e: traffic.page_errors.append(str(e)))
    page.on("response", traffic.on_response)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        page.goto(compat_server.url)
        try:
            page.wait_for_function("() => window.app?.graph && window.app.api?.socket?.readyState === 1",
                                   timeout=45_000)
        except Exception as exc:
            raise AssertionError(f"the ComfyUI frontend did not boot against Chisel (no window.app.graph or no "
                                 f"websocket): failed requests {traffic.failed}, page errors {traffic.page_errors}"
                                 ) from exc
        yield page, traffic
    finally:
        try:
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
        finally:
            context.close()
