"""Shared fixtures of the server tests: a config in tmp_path, an in-process client, and a real server subprocess."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.config import ServerConfig

REPO = Path(__file__).resolve().parents[2]
URL_LINE = re.compile(r"Chisel is running at (http://\S+)")

# EmptyImage -> ImageInvert -> SaveImage: needs no model (ComfyUI packs `color` as 0xRRGGBB: white inverts to black).
MODEL_FREE = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 16777215}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "probe"}},
}

# A custom node pack for tests that need a prompt to take a while: sleeps in small slices, honouring interrupts.
SLEEP_PACK = '''
import time
from nodes.inputs import Float, Link
from nodes.registry import Node, Output

class TestSleep(Node):
    """Passes its image through after sleeping (test helper)."""
    category = "testing"
    image = Link("IMAGE")
    seconds = Float(0.5, min=0.0, max=60.0)
    outputs = (Output("IMAGE"),)

    @classmethod
    def run(cls, ctx, image, seconds):
        end = time.monotonic() + seconds
        step = 0
        while time.monotonic() < end:
            time.sleep(0.02)
            step += 1
            ctx.check_interrupted()
        return (image,)

NODES = (TestSleep,)
'''


_SLEEP_NAMESPACE: dict[str, Any] = {}
exec(compile(SLEEP_PACK, "<test sleep pack>", "exec"), _SLEEP_NAMESPACE)  # the same source the subprocess loads
TestSleep = _SLEEP_NAMESPACE["TestSleep"]


def model_free_prompt(prefix: str = "probe", **empty_image: Any) -> dict[str, Any]:
    prompt = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in MODEL_FREE.items()}
    prompt["1"]["inputs"].update(empty_image)
    prompt["3"]["inputs"]["filename_prefix"] = prefix
    return prompt


def sleep_prompt(prefix: str, seconds: float = 0.5) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
        "2": {"class_type": "TestSleep", "inputs": {"image": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def png_bytes(size: tuple[int, int] = (8, 8), color: tuple[int, ...] = (255, 0, 0, 255), mode: str = "RGBA",
              text: dict[str, str] | None = None) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new(mode, size, color[: len(mode)]).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def make_config(base: Path, **overrides: Any) -> ServerConfig:
    web = base / "web"
    web.mkdir(parents=True, exist_ok=True)
    (web / "index.html").write_text("<!doctype html><title>Chisel test editor</title>")
    (web / "main.js").write_text("export const editor = 1;\n")
    workflows = base / "workflows"
    workflows.mkdir(exist_ok=True)
    (workflows / "invert.json").write_text('{"1": {"class_type": "EmptyImage", "inputs": {}}}')
    settings = {"web_root": web, "workflows_dir": workflows, "load_custom_nodes": False, **overrides}
    return ServerConfig.create(base / "base", **settings)


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return make_config(tmp_path)


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], config: ServerConfig) -> Any:
    return await aiohttp_client(create_app(config))


@pytest.fixture
async def sleepy_client(aiohttp_client: Callable[..., Any], config: ServerConfig) -> Any:
    """A client whose server also has the TestSleep node (prompts that run as long as asked)."""
    from nodes.catalog import core_nodes

    return await aiohttp_client(create_app(config, nodes=[*core_nodes(), TestSleep]))


async def wait_history(client: Any, prompt_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll /history/{id} until the prompt is in the history; its entry."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.get(f"/history/{prompt_id}")
        body = await response.json()
        if prompt_id in body:
            return body[prompt_id]
        await asyncio.sleep(0.02)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")


async def queue_prompt(client: Any, prompt: dict[str, Any], **body: Any) -> str:
    response = await client.post("/prompt", json={"prompt": prompt, **body})
    data = await response.json()
    assert response.status == 200, data
    return data["prompt_id"]


# ---- a real server in a subprocess ------------------------------------------------------------------------------
@dataclass
class LiveServer:
    process: subprocess.Popen
    url: str
    base_dir: Path
    log: list[str]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL: no cleanup runs (the crash case)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_server(base_dir: Path, *extra: str, port: int = 0, timeout: float = 60.0) -> LiveServer:
    """`python -m server serve --port PORT --base-dir BASE_DIR`, waiting for its URL line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CHISEL_AUTH_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", str(port), "--base-dir", str(base_dir), *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                raise AssertionError("the server exited early:\n" + "".join(lines))
            continue
        lines.append(line)
        match = URL_LINE.search(line)
        if match:
            _drain(process, lines)
            return LiveServer(process, match.group(1), base_dir, lines)
    process.kill()
    raise AssertionError("the server printed no URL in time:\n" + "".join(lines))


def _drain(process: subprocess.Popen, lines: list[str]) -> None:
    """Keep reading the server's output in the background so its pipe never fills up."""
    import threading

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()


@pytest.fixture
def live_server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def factory(base_dir: Path | None = None, *extra: str, port: int = 0) -> LiveServer:
        server = start_server(base_dir or tmp_path / "live", *extra, port=port)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
