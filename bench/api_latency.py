"""API latency, measured from outside over HTTP and the websocket against a real `chisel serve` subprocess.

    python -m bench.api_latency [--repeat N]

Cases (the graphs are ComfyUI's A5 benchmark graphs, with core image nodes only, no models):
  GET /object_info                            median of the requests (the node count is printed: ComfyUI had 572)
  POST /prompt, 1,000-node graph              validate + enqueue, while the worker is held busy so nothing runs
  POST to done, 1,000 nodes (20 chains of 50: EmptyImage 8x8 -> ImageInvert x48 -> PreviewImage), first run
  the same graph queued again unchanged       (everything cached)
  POST to done, one chain 1,000 deep          first run and cached (ComfyUI refused it: recursion limit)
"Done" is the prompt's final `executing {node: null}` on the websocket, as a ComfyUI client sees it.

The baseline column is ComfyUI 0.8.0 on this kind of machine (2 cores, 24 GB, no GPU, CPU mode), measured the same
way from outside (reference/anchors-performance-security-demand.md, part A5, 2026-11); absolute times on a shared
2-core machine are noisy, so the ratio is the figure to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
URL_LINE = re.compile(r"Chisel is running at (http://\S+)")

# ComfyUI 0.8.0, A5 table: (low, high) milliseconds; None where ComfyUI could not run the case.
BASELINE_MS: dict[str, tuple[float, float] | None] = {
    "GET /object_info": (60.0, 100.0),
    "POST /prompt 1,000 nodes (validate + enqueue)": (6.0, 8.0),
    "1,000 nodes (20x50), POST to done, first run": (3200.0, 3500.0),
    "1,000 nodes (20x50), POST to done, cached": (270.0, 620.0),
    "chain 1,000 deep, POST to done, first run": None,
    "chain 1,000 deep, POST to done, cached": None,
}

# A node that keeps the worker busy (sleeping, no CPU) until interrupted, so enqueue can be timed alone.
HOLD_PACK = '''
import time
from nodes.inputs import Int
from nodes.registry import Node, Output, Result

class BenchHold(Node):
    """Sleeps until its prompt is interrupted (benchmark helper)."""
    output_node = True
    always_run = True
    seconds = Int(60, min=1, max=600)

    @classmethod
    def run(cls, ctx, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.005)
            ctx.check_interrupted()
        return Result(ui={})

NODES = (BenchHold,)
'''


def grid_graph(chains: int = 20, length: int = 50, color: int = 0) -> dict[str, Any]:
    """`chains` chains of `length` nodes: EmptyImage 8x8 -> ImageInvert x (length - 2) -> PreviewImage."""
    prompt: dict[str, Any] = {}
    for c in range(chains):
        base = c * length
        prompt[str(base + 1)] = {"class_type": "EmptyImage",
                                 "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color + c}}
        for i in range(2, length):
            prompt[str(base + i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(base + i - 1), 0]}}
        prompt[str(base + length)] = {"class_type": "PreviewImage", "inputs": {"images": [str(base + length - 1), 0]}}
    return prompt


def chain_graph(length: int = 1000, color: int = 0) -> dict[str, Any]:
    return grid_graph(chains=1, length=length, color=color)


@dataclass
class Server:
    process: subprocess.Popen
    url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_server(base_dir: Path, extra_args: Sequence[str] = ()) -> Server:
    custom = base_dir / "custom_nodes"
    custom.mkdir(parents=True, exist_ok=True)
    (custom / "bench_hold.py").write_text(HOLD_PACK)
    process = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", "0", "--base-dir", str(base_dir),
                                "--preview-method", "none", *extra_args], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        match = URL_LINE.search(line)
        if match:
            # keep draining the output so the server never blocks on a full pipe
            import threading

            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore
            return Server(process, match.group(1))
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("the server did not start")


class Client:
    """One HTTP session plus one websocket, with a per-prompt 'done' future."""

    def __init__(self, session: aiohttp.ClientSession, url: str):
        self.session, self.url = session, url
        self.client_id = uuid.uuid4().hex
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.executing: dict[str, asyncio.Future[None]] = {}

    async def connect(self) -> None:
        self.ws = await self.session.ws_connect(f"{self.url}/ws?clientId={self.client_id}", max_msg_size=0)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            msg = json.loads(message.data)
            data = msg.get("data") or {}
            prompt_id = data.get("prompt_id")
            if msg["type"] == "executing" and prompt_id:
                if data.get("node") is None:
                    future = self.waiters.pop(prompt_id, None)
                    if future is not None and not future.done():
                        future.set_result(time.perf_counter())
                else:
                    started = self.executing.pop(prompt_id, None)
                    if started is not None and not started.done():
                        started.set_result(None)

    async def post_prompt(self, prompt: dict[str, Any], prompt_id: str) -> None:
        response = await self.session.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": self.client_id,
                                                                       "prompt_id": prompt_id})
        if response.status != 200:
            raise RuntimeError(f"POST /prompt: {response.status} {await response.text()}")
        await response.read()

    async def run(self, prompt: dict[str, Any], timeout: float = 300) -> tuple[str, float]:
        """Queue the prompt and wait for its final executing message: (prompt_id, seconds from POST to done)."""
        prompt_id = uuid.uuid4().hex
        done = asyncio.get_running_loop().create_future()
        self.waiters[prompt_id] = done
        started = time.perf_counter()
        await self.post_prompt(prompt, prompt_id)
        finished = await asyncio.wait_for(done, timeout)
        return prompt_id, finished - started

    async def post_to_done(self, prompt: dict[str, Any]) -> float:
        """Milliseconds from POST to done."""
        return (await self.run(prompt))[1] * 1000


async def measure(url: str, repeat: int) -> tuple[dict[str, list[float]], int]:
    results: dict[str, list[float]] = {}
    async with aiohttp.ClientSession() as session:
        client = Client(session, url)
        await client.connect()

        await (await session.get(f"{url}/object_info")).read()  # warm-up
        times = []
        for _ in range(max(repeat * 3, 10)):
            started = time.perf_counter()
            info = await (await session.get(f"{url}/object_info")).json()
            times.append((time.perf_counter() - started) * 1000)
        results["GET /object_info"] = times
        node_count = len(info)

        # Enqueue alone: hold the worker on a sleeping node, queue the 1,000-node graph N times, then clear.
        hold_id = uuid.uuid4().hex
        client.executing[hold_id] = asyncio.get_running_loop().create_future()
        await client.post_prompt({"1": {"class_type": "BenchHold", "inputs": {"seconds": 300}}}, hold_id)
        await asyncio.wait_for(client.executing[hold_id] if hold_id in client.executing else asyncio.sleep(0), 60)
        graph = grid_graph(color=1)
        times = []
        for _ in range(max(repeat * 4, 20)):
            started = time.perf_counter()
            await client.post_prompt(graph, uuid.uuid4().hex)
            times.append((time.perf_counter() - started) * 1000)
        results["POST /prompt 1,000 nodes (validate + enqueue)"] = times
        await (await session.post(f"{url}/queue", json={"clear": True})).read()
        await (await session.post(f"{url}/interrupt", json={"prompt_id": hold_id})).read()
        await asyncio.sleep(0.2)

        for label, make in (("1,000 nodes (20x50)", grid_graph), ("chain 1,000 deep", chain_graph)):
            first, cached = [], []
            for r in range(repeat):
                graph = make(color=1000 * (r + 2) + (0 if make is grid_graph else 500))
                first.append(await client.post_to_done(graph))
                cached.append(await client.post_to_done(graph))
            results[f"{label}, POST to done, first run"] = first
            results[f"{label}, POST to done, cached"] = cached
        client.reader.cancel()
        await client.ws.close()
    return results, node_count


def report(results: dict[str, list[float]], node_count: int) -> str:
    lines = ["| case | Chisel (median ms) | min ms | ComfyUI 0.8.0 (A5) | ComfyUI / Chisel |",
             "|---|---|---|---|---|"]
    for case, times in results.items():
        median = statistics.median(times)
        baseline = BASELINE_MS.get(case)
        if baseline is None:
            base_text, ratio = "refused / not measured", "-"
        else:
            low, high = baseline
            base_text = f"{low:g}-{high:g} ms"
            ratio = f"{low / median:.1f}x-{high / median:.1f}x"
        lines.append(f"| {case} | {median:.1f} | {min(times):.1f} | {base_text} | {ratio} |")
    lines.append("")
    lines.append(f"/object_info served {node_count} node classes here (ComfyUI's figure is for 572).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--url", help="measure a server that is already running instead of starting one "
                                      "(it needs the BenchHold custom node for the enqueue case)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chisel-bench-") as tmp:
        server = None if args.url else start_server(Path(tmp))
        try:
            results, node_count = asyncio.run(measure(args.url or server.url, args.repeat))  # type: ignore[union-attr]
        finally:
            if server is not None:
                server.stop()
    print(report(results, node_count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
