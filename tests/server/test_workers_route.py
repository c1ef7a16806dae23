"""GET /workers: without --ray, the one in-process worker."""

import os

from tests.server.conftest import model_free_prompt, queue_prompt, wait_history


async def test_workers_lists_the_in_process_worker(client):
    response = await client.get("/api/workers")
    assert response.status == 200
    body = await response.json()
    assert body["mode"] == "local"
    [worker] = body["workers"]
    assert worker["id"] == "local" and worker["pid"] == os.getpid() and worker["state"] == "idle"
    assert worker["prompts_done"] == 0 and worker["models"] == [] and worker["device"]
    await wait_history(client, await queue_prompt(client, model_free_prompt()))
    body = await (await client.get("/workers")).json()
    assert body["workers"][0]["prompts_done"] == 1
