"""The real server as a subprocess (`python -m server serve`), driven over HTTP and the websocket like an outside
client: the black-box API probe's checks (ComfyUI 0.8.0 passed 15 of its 17)."""

from __future__ import annotations

import asyncio
import io
import json
import uuid

import aiohttp
from PIL import Image

from tests.server.conftest import MODEL_FREE

BAD_PROMPTS = {
    "unknown node": {"1": {"class_type": "NoSuchNode", "inputs": {}}},
    "wrong type link": {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                                     "color": 0}},
                        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 5], "filename_prefix": "x"}}},
    "out of range": {"1": {"class_type": "EmptyImage", "inputs": {"width": -5, "height": 8, "batch_size": 1,
                                                                  "color": 0}},
                     "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}},
    "cycle": {"1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}},
}


async def probe(base: str) -> dict[str, bool]:
    """The API probe's checks; {check: passed}."""
    results: dict[str, bool] = {}
    async with aiohttp.ClientSession() as s:
        info = await (await s.get(f"{base}/object_info")).json()
        results["object_info lists the model-free nodes"] = all(
            k in info for k in ("EmptyImage", "ImageInvert", "SaveImage", "LoadImage"))
        results["SaveImage schema has ComfyUI fields"] = all(
            k in info.get("SaveImage", {}) for k in ("input", "output", "name", "display_name", "category",
                                                      "output_node"))
        results["/api prefix"] = (await s.get(f"{base}/api/object_info/SaveImage")).status == 200
        cid = str(uuid.uuid4())
        ws = await s.ws_connect(f"{base}/ws?clientId={cid}")
        response = await s.post(f"{base}/prompt", json={"prompt": MODEL_FREE, "client_id": cid, "extra_data": {
            "extra_pnginfo": {"workflow": {"probe": 1}}}})
        body = await response.json()
        results["POST /prompt returns prompt_id"] = response.status == 200 and "prompt_id" in body
        pid = body.get("prompt_id")
        seen, done = [], False
        async with asyncio.timeout(60):
            while not done:
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                msg = json.loads(message.data)
                seen.append(msg["type"])
                data = msg.get("data", {})
                if msg["type"] in ("execution_success", "execution_error") and data.get("prompt_id") == pid:
                    done = True
        results["websocket reports the run"] = "executing" in seen and "executed" in seen
        history = await (await s.get(f"{base}/history/{pid}")).json()  # read at once: must already be there
        images = history.get(pid, {}).get("outputs", {}).get("3", {}).get("images", [])
        results["history holds the output as soon as execution_success arrives"] = bool(images)
        if images:
            image = images[0]
            response = await s.get(f"{base}/view", params={"filename": image["filename"],
                                                           "subfolder": image["subfolder"], "type": image["type"]})
            picture = Image.open(io.BytesIO(await response.read()))
            results["/view serves the inverted PNG with metadata"] = (
                response.status == 200 and picture.size == (64, 48) and "prompt" in picture.info
                and "workflow" in picture.info and picture.getpixel((0, 0))[:3] == (0, 0, 0))
        for bad in ("../../../../etc/passwd", "/etc/passwd", "..%2F..%2Fetc%2Fpasswd"):
            response = await s.get(f"{base}/view", params={"filename": bad, "type": "output"})
            results[f"/view refuses {bad}"] = response.status in (400, 403, 404) and "root:" not in \
                await response.text()
        for name, prompt in BAD_PROMPTS.items():
            response = await s.post(f"{base}/prompt", json={"prompt": prompt})
            results[f"bad prompt ({name})"] = response.status == 400 and "error" in await response.json()
        response = await s.post(f"{base}/prompt", data=b"{not json", headers={"Content-Type": "application/json"})
        results["invalid JSON -> 400"] = response.status == 400
        response = await s.post(f"{base}/prompt", json={"prompt": MODEL_FREE}, headers={"Origin": "null"})
        results["Origin: null refused"] = response.status in (400, 403)
        results["healthy afterwards"] = (await s.get(f"{base}/system_stats")).status == 200
        await ws.close()
    return results


async def test_the_real_server_passes_the_api_probe(live_server_factory):
    server = live_server_factory()
    results = await probe(server.url)
    failed = [name for name, ok in results.items() if not ok]
    assert not failed, failed
    assert len(results) == 17


async def test_the_real_server_stops_cleanly_on_sigterm(live_server_factory):
    server = live_server_factory()
    async with aiohttp.ClientSession() as s:
        assert (await s.get(f"{server.url}/system_stats")).status == 200
    assert server.stop() == 0
    assert any("shutting down" in line for line in server.log)
