"""The queue survives kill -9: prompts queued or running when the process dies all complete after a restart, and
none runs twice (ComfyUI loses all of them: its queue lives in memory)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from tests.server.conftest import SLEEP_PACK, sleep_prompt


async def wait_for_history(session, base, ids, timeout):
    deadline = time.monotonic() + timeout
    history = {}
    while time.monotonic() < deadline:
        history = await (await session.get(f"{base}/history")).json()
        if all(i in history for i in ids):
            return history
        await asyncio.sleep(0.1)
    raise AssertionError(f"not finished after restart: {[i for i in ids if i not in history]}")


async def test_prompts_survive_kill_9_and_run_exactly_once(live_server_factory, tmp_path):
    base_dir = tmp_path / "restart"
    (base_dir / "custom_nodes").mkdir(parents=True)
    (base_dir / "custom_nodes" / "sleep_pack.py").write_text(SLEEP_PACK)
    server = live_server_factory(base_dir)
    seconds = [0.0, 2.0, 0.2, 0.2, 0.2]  # done before the kill / running at the kill / three pending
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"{server.url}/ws?clientId=watcher")
        ids = []
        for k, wait in enumerate(seconds):
            body = {"prompt": sleep_prompt(f"restart_{k}", wait), "client_id": "watcher", "prompt_id": f"r{k}"}
            response = await s.post(f"{server.url}/prompt", json=body)
            assert response.status == 200, await response.text()
            ids.append((await response.json())["prompt_id"])
        async with asyncio.timeout(60):  # until the second prompt is inside its sleep
            while True:
                message = json.loads((await ws.receive()).data)
                data = message["data"]
                if message["type"] == "executing" and data.get("prompt_id") == "r1" and data.get("node") == "2":
                    break
        first = await (await s.get(f"{server.url}/history/r0")).json()
        assert first["r0"]["status"]["status_str"] == "success"
        queue = await (await s.get(f"{server.url}/queue")).json()
        assert [item[1] for item in queue["queue_running"]] == ["r1"]
        assert [item[1] for item in queue["queue_pending"]] == ["r2", "r3", "r4"]
        await ws.close()
    server.kill()

    restarted = live_server_factory(base_dir)
    async with aiohttp.ClientSession() as s:
        queue = await (await s.get(f"{restarted.url}/queue")).json()
        in_queue = [item[1] for item in queue["queue_running"] + queue["queue_pending"]]
        assert in_queue == ["r1", "r2", "r3", "r4"]  # the interrupted prompt first, then the others in order
        history = await wait_for_history(s, restarted.url, ids, 60)
    assert list(history) == ["r0", "r1", "r2", "r3", "r4"]  # completion order
    for prompt_id in ids:
        assert history[prompt_id]["status"]["status_str"] == "success", history[prompt_id]["status"]
        assert history[prompt_id]["outputs"]["3"]["images"]
    outputs = sorted(p.name for p in (base_dir / "output").iterdir())
    assert outputs == [f"restart_{k}_00001_.png" for k in range(5)]  # every prompt saved exactly once
