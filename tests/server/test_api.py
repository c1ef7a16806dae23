"""The HTTP API in-process (create_app + aiohttp's test client): every route, the /api prefix, ComfyUI's shapes."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from PIL import Image

from tests.server.conftest import MODEL_FREE, model_free_prompt, queue_prompt, sleep_prompt, wait_history


async def test_object_info_lists_nodes_in_comfyui_shape(client):
    response = await client.get("/object_info")
    info = await response.json()
    assert response.status == 200
    for name in ("EmptyImage", "ImageInvert", "SaveImage", "LoadImage"):
        assert name in info
    save = info["SaveImage"]
    for key in ("input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
                "description", "python_module", "category", "output_node"):
        assert key in save
    assert save["output_node"] is True
    assert save["input"]["required"]["images"][0] == "IMAGE"


async def test_object_info_of_one_class_and_unknown_class(client):
    one = await (await client.get("/object_info/ImageInvert")).json()
    assert list(one) == ["ImageInvert"]
    response = await client.get("/object_info/NoSuchNode")
    assert response.status == 200 and await response.json() == {}


@pytest.mark.parametrize("path", ["/object_info/EmptyImage", "/system_stats", "/features", "/embeddings", "/models",
                                  "/extensions", "/users", "/settings", "/i18n", "/prompt", "/queue", "/history",
                                  "/jobs", "/workflow_templates", "/experiment/models", "/global_subgraphs"])
async def test_every_read_route_answers_bare_and_under_api(client, path):
    bare = await client.get(path)
    prefixed = await client.get("/api" + path)
    assert bare.status == 200, await bare.text()
    assert prefixed.status == 200
    bare_body, prefixed_body = await bare.json(), await prefixed.json()
    if path == "/system_stats":  # free memory moves between two calls: compare the shape
        bare_body, prefixed_body = sorted(bare_body["system"]), sorted(prefixed_body["system"])
    assert bare_body == prefixed_body


async def test_websocket_answers_under_api_too(client):
    ws = await client.ws_connect("/api/ws?clientId=abc")
    first = await ws.receive_json(timeout=5)
    assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "abc"}}
    await ws.close()


async def test_websocket_without_client_id_gets_a_generated_sid(client):
    ws = await client.ws_connect("/ws")
    first = await ws.receive_json(timeout=5)
    assert len(first["data"]["sid"]) == 32
    await ws.close()


async def test_feature_flags_handshake_is_answered(client):
    ws = await client.ws_connect("/ws?clientId=flags")
    await ws.receive_json(timeout=5)
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    reply = await ws.receive_json(timeout=5)
    assert reply["type"] == "feature_flags"
    assert reply["data"]["supports_preview_metadata"] is True
    assert reply["data"]["max_upload_size"] == 100 * 1024 * 1024
    await ws.close()


async def test_system_stats_and_features_shapes(client):
    stats = await (await client.get("/system_stats")).json()
    for key in ("os", "ram_total", "ram_free", "comfyui_version", "required_frontend_version", "python_version",
                "pytorch_version", "embedded_python", "argv"):
        assert key in stats["system"]
    device = stats["devices"][0]
    for key in ("name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"):
        assert key in device
    features = await (await client.get("/features")).json()
    assert features == {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024}


async def test_prompt_runs_and_messages_arrive_in_comfyui_order(client):
    ws = await client.ws_connect("/ws?clientId=c1")
    await ws.receive_json(timeout=5)
    response = await client.post("/prompt", json={"prompt": MODEL_FREE, "client_id": "c1"})
    body = await response.json()
    assert response.status == 200
    assert set(body) == {"prompt_id", "number", "node_errors"} and body["node_errors"] == {}
    prompt_id = body["prompt_id"]
    seen = []
    while True:
        message = await ws.receive_json(timeout=20)
        seen.append((message["type"], message["data"].get("node")))
        if message["type"] == "executing" and message["data"]["node"] is None:
            break
    kinds = [kind for kind, _ in seen if kind != "status"]
    assert kinds == ["execution_start", "execution_cached", "executing", "executing", "executing", "executed",
                     "execution_success", "executing"]
    assert [node for kind, node in seen if kind == "executing"] == ["1", "2", "3", None]
    assert seen[-2][0] == "status"  # queue status before the final executing(null), as ComfyUI
    entry = await wait_history(client, prompt_id)
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert entry["prompt"][1] == prompt_id and entry["prompt"][4] == ["3"]
    assert entry["prompt"][3]["client_id"] == "c1"
    image = entry["outputs"]["3"]["images"][0]
    assert image["type"] == "output" and image["filename"].startswith("probe_")
    await ws.close()


async def test_saved_image_is_served_by_view_with_its_metadata(client):
    prompt_id = await queue_prompt(client, MODEL_FREE, extra_data={"extra_pnginfo": {"workflow": {"probe": 1}}})
    entry = await wait_history(client, prompt_id)
    image = entry["outputs"]["3"]["images"][0]
    response = await client.get("/api/view", params=image)
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/png"
    picture = Image.open(io.BytesIO(await response.read()))
    assert picture.size == (64, 48)
    assert json.loads(picture.info["prompt"])["1"]["class_type"] == "EmptyImage"
    assert json.loads(picture.info["workflow"]) == {"probe": 1}
    assert picture.getpixel((0, 0))[:3] == (0, 0, 0)


async def test_client_chosen_prompt_id_is_kept_and_must_be_unique(client):
    response = await client.post("/prompt", json={"prompt": MODEL_FREE, "prompt_id": "my-run.1"})
    assert (await response.json())["prompt_id"] == "my-run.1"
    again = await client.post("/prompt", json={"prompt": MODEL_FREE, "prompt_id": "my-run.1"})
    body = await again.json()
    assert again.status == 409 and body["error"]["type"] == "duplicate_prompt_id"


async def test_sensitive_extra_data_is_never_stored_or_echoed(client):
    prompt_id = await queue_prompt(client, MODEL_FREE, extra_data={"api_key_comfy_org": "secret-key-123",
                                                                   "auth_token_comfy_org": "secret-token"})
    await wait_history(client, prompt_id)
    for path in ("/history", f"/history/{prompt_id}", "/queue", f"/jobs/{prompt_id}", "/jobs"):
        text = await (await client.get(path)).text()
        assert "secret-key-123" not in text and "secret-token" not in text, path


async def test_queue_shows_pending_items_and_clear_and_delete_remove_them(client):
    _state(client).engine.worker.stop()  # nothing runs: the prompts stay pending
    ids = [await queue_prompt(client, model_free_prompt(f"q{i}"), prompt_id=f"q-{i}") for i in range(3)]
    queue = await (await client.get("/queue")).json()
    assert queue["queue_running"] == []
    assert [item[1] for item in queue["queue_pending"]] == ids
    item = queue["queue_pending"][0]
    assert len(item) == 5 and item[2]["1"]["class_type"] == "EmptyImage" and item[4] == ["3"]
    assert (await (await client.get("/prompt")).json()) == {"exec_info": {"queue_remaining": 3}}
    assert (await client.post("/queue", json={"delete": ["q-1"]})).status == 200
    queue = await (await client.get("/api/queue")).json()
    assert [item[1] for item in queue["queue_pending"]] == ["q-0", "q-2"]
    assert (await client.post("/api/queue", json={"clear": True})).status == 200
    assert (await (await client.get("/queue")).json())["queue_pending"] == []


async def test_front_and_number_set_the_order(client):
    state = _state(client)
    state.engine.worker.stop()
    await queue_prompt(client, model_free_prompt("a"), prompt_id="a")
    await queue_prompt(client, model_free_prompt("b"), prompt_id="b", front=True)
    await queue_prompt(client, model_free_prompt("c"), prompt_id="c", number=-100)
    pending = (await (await client.get("/queue")).json())["queue_pending"]
    assert [item[1] for item in pending] == ["c", "b", "a"]


async def test_history_pagination_and_delete_and_clear(client):
    ids = []
    for i in range(4):
        ids.append(await queue_prompt(client, model_free_prompt(f"h{i}"), prompt_id=f"h-{i}"))
        await wait_history(client, ids[-1])
    assert list(await (await client.get("/history")).json()) == ids
    assert list(await (await client.get("/history?max_items=2")).json()) == ids[2:]
    assert list(await (await client.get("/history?max_items=2&offset=1")).json()) == ids[1:3]
    assert (await (await client.get("/history/unknown-id")).json()) == {}
    assert (await client.post("/history", json={"delete": ["h-0"]})).status == 200
    assert list(await (await client.get("/history")).json()) == ids[1:]
    assert (await client.post("/api/history", json={"clear": True})).status == 200
    assert await (await client.get("/history")).json() == {}


async def test_jobs_list_and_one_job(client):
    prompt_id = await queue_prompt(client, MODEL_FREE, prompt_id="job-1")
    await wait_history(client, prompt_id)
    jobs = await (await client.get("/api/jobs?status=completed,failed&limit=10&offset=0")).json()
    assert jobs["pagination"] == {"offset": 0, "limit": 10, "total": 1, "has_more": False}
    job = jobs["jobs"][0]
    assert job["id"] == "job-1" and job["status"] == "completed" and job["outputs_count"] == 1
    assert job["preview_output"]["nodeId"] == "3"
    one = await (await client.get("/api/jobs/job-1")).json()
    assert one["outputs"]["3"]["images"] and one["workflow"]["prompt"]["1"]["class_type"] == "EmptyImage"
    missing = await client.get("/api/jobs/nope")
    assert missing.status == 404 and (await missing.json())["error"]["type"] == "job_not_found"


async def test_interrupt_stops_the_running_prompt(sleepy_client):
    client = sleepy_client
    ws = await client.ws_connect("/ws?clientId=int")
    await ws.receive_json(timeout=5)
    prompt_id = await queue_prompt(client, sleep_prompt("int", seconds=30), client_id="int")
    await _until_executing(ws, "2")
    assert (await client.post("/interrupt", json={"prompt_id": "someone-else"})).status == 200
    assert _state(client).engine.worker.running() is not None  # another prompt's id interrupts nothing
    assert (await client.post("/interrupt", json={"prompt_id": prompt_id})).status == 200
    entry = await wait_history(client, prompt_id, timeout=10)
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert kinds[-1] == "execution_interrupted" and entry["status"]["status_str"] == "error"
    interrupted = dict(entry["status"]["messages"])["execution_interrupted"]
    assert interrupted["node_id"] == "2" and interrupted["node_type"] == "TestSleep"
    assert _state(client).engine.worker.alive
    await ws.close()


async def test_interrupt_and_free_accept_empty_bodies(client):
    assert (await client.post("/interrupt")).status == 200
    assert (await client.post("/api/free", json={"unload_models": True, "free_memory": True})).status == 200
    assert (await client.post("/free")).status == 200


async def test_reconnecting_client_gets_the_running_node_again(sleepy_client):
    client = sleepy_client
    ws = await client.ws_connect("/ws?clientId=re")
    await ws.receive_json(timeout=5)
    prompt_id = await queue_prompt(client, sleep_prompt("re", seconds=1.0), client_id="re")
    await _until_executing(ws, "2")
    second = await client.ws_connect("/ws?clientId=re")
    first_message = await second.receive_json(timeout=5)
    assert first_message["type"] == "status" and first_message["data"]["sid"] == "re"
    resent = await second.receive_json(timeout=5)
    assert resent == {"type": "executing", "data": {"node": "2", "display_node": "2", "prompt_id": prompt_id}}
    closed = await ws.receive(timeout=5)  # the older socket was replaced: the server closes it
    assert closed.type.name in ("CLOSE", "CLOSING", "CLOSED")
    rest = []
    while not rest or rest[-1] != ("executing", None):
        message = await second.receive_json(timeout=10)
        rest.append((message["type"], message["data"].get("node")))
    assert ("execution_success", None) in rest  # the new socket receives the rest of the run
    await second.close()


async def _until_executing(ws, node_id):
    while True:
        message = await ws.receive_json(timeout=20)
        if message["type"] == "executing" and message["data"]["node"] == node_id:
            return


async def test_events_go_only_to_the_prompts_client(client):
    mine = await client.ws_connect("/ws?clientId=mine")
    other = await client.ws_connect("/ws?clientId=other")
    await mine.receive_json(timeout=5)
    await other.receive_json(timeout=5)
    prompt_id = await queue_prompt(client, MODEL_FREE, client_id="mine")
    await wait_history(client, prompt_id)
    await asyncio.sleep(0.1)
    other_types = []
    while True:
        try:
            message = await other.receive_json(timeout=0.2)
        except asyncio.TimeoutError:
            break
        other_types.append(message["type"])
    assert set(other_types) <= {"status"}, other_types
    await mine.close()
    await other.close()


async def test_embeddings_and_models_list_files(client, config):
    (config.models_dir / "embeddings").mkdir(parents=True, exist_ok=True)
    (config.models_dir / "embeddings" / "bad-hands.safetensors").write_bytes(b"x")
    (config.models_dir / "checkpoints" / "sub").mkdir(parents=True, exist_ok=True)
    (config.models_dir / "checkpoints" / "sub" / "m.safetensors").write_bytes(b"x")
    (config.models_dir / "checkpoints" / "old.ckpt").write_bytes(b"x")
    assert await (await client.get("/embeddings")).json() == ["bad-hands"]
    kinds = await (await client.get("/models")).json()
    assert "checkpoints" in kinds and "loras" in kinds and "vae_approx" in kinds
    # The built-in model (the repository's models/, searched after the base directory's) is listed too.
    assert await (await client.get("/models/checkpoints")).json() == ["chisel-shapes.safetensors", "sub/m.safetensors"]
    missing = await client.get("/models/nope")
    assert missing.status == 404 and (await missing.json())["error"]["type"] == "unknown_folder"
    browser = await (await client.get("/experiment/models/checkpoints")).json()
    assert browser[-1] == {"name": "sub/m.safetensors", "pathIndex": 0}
    assert browser[0]["name"] == "chisel-shapes.safetensors" and browser[0]["pathIndex"] > 0


async def test_view_metadata_reads_the_safetensors_header(client, config):
    header = json.dumps({"__metadata__": {"ss_network_dim": "4"}}).encode()
    folder = config.models_dir / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "l.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    response = await client.get("/view_metadata/loras?filename=l.safetensors")
    assert response.status == 200 and await response.json() == {"ss_network_dim": "4"}
    assert (await client.get("/view_metadata/loras?filename=none.safetensors")).status == 404


async def test_workflow_templates_are_listed_and_served(client):
    assert await (await client.get("/workflow_templates")).json() == {"chisel": ["invert"]}
    response = await client.get("/api/workflow_templates/chisel/invert.json")
    assert response.status == 200 and (await response.json())["1"]["class_type"] == "EmptyImage"
    assert (await client.get("/workflow_templates/chisel/nope.json")).status == 404
    assert (await client.get("/workflow_templates/other/invert.json")).status == 404


async def test_workflow_convert_turns_a_ui_workflow_into_a_prompt(client):
    ui = {"last_node_id": 2, "last_link_id": 1, "version": 0.4, "links": [[1, 1, 0, 2, 0, "IMAGE"]],
          "nodes": [{"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [],
                     "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
                     "widgets_values": [32, 16, 1, 0]},
                    {"id": 2, "type": "SaveImage", "mode": 0,
                     "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": [],
                     "widgets_values": ["conv"]}]}
    response = await client.post("/workflow/convert", json={"workflow": ui})
    body = await response.json()
    assert response.status == 200, body
    prompt = body["prompt"]
    assert prompt["1"]["inputs"] == {"width": 32, "height": 16, "batch_size": 1, "color": 0}
    assert prompt["2"]["inputs"]["images"] == ["1", 0]
    queued = await client.post("/prompt", json={"prompt": prompt})
    assert queued.status == 200


async def test_workflow_convert_refuses_a_malformed_workflow_with_the_prompt_error_shape(client):
    response = await client.post("/api/workflow/convert", json={"workflow": {"nodes": [{"id": 1}], "links": "x"}})
    body = await response.json()
    assert response.status == 400
    assert set(body) == {"error", "node_errors"} and body["error"]["type"]
    missing = await client.post("/workflow/convert", json={})
    assert missing.status == 400 and (await missing.json())["error"]["type"] == "no_workflow"


async def test_index_is_served_without_caching_and_static_files_too(client):
    index = await client.get("/")
    assert index.status == 200 and "Chisel test editor" in await index.text()
    assert index.headers["Cache-Control"] == "no-cache"
    script = await client.get("/main.js")
    assert script.status == 200 and "editor" in await script.text()
    assert (await client.get("/no-such-file.js")).status == 404


def _state(client):
    from server.routes.state import STATE

    return client.app[STATE]


def _preview_node():
    """A test node that reports two progress steps, each with a JPEG preview."""
    import io as _io

    from PIL import Image as _Image

    from nodes.context import Preview
    from nodes.inputs import Link
    from nodes.registry import Node, Output

    buffer = _io.BytesIO()
    _Image.new("RGB", (4, 4), (255, 0, 0)).save(buffer, format="JPEG")
    jpeg = buffer.getvalue()

    class TestPreviewer(Node):
        image = Link("IMAGE")
        outputs = (Output("IMAGE"),)

        @classmethod
        def run(cls, ctx, image):
            for step in (1, 2):
                ctx.progress(step, 2, Preview(jpeg, "JPEG"))
            return (image,)

    return TestPreviewer, jpeg


@pytest.mark.parametrize("negotiated", [True, False])
async def test_previews_arrive_as_binary_frames_of_the_negotiated_type(aiohttp_client, config, negotiated):
    import struct

    from nodes.catalog import core_nodes
    from server.app import create_app

    node, jpeg = _preview_node()
    client = await aiohttp_client(create_app(config, nodes=[*core_nodes(), node]))
    ws = await client.ws_connect("/ws?clientId=pv")
    await ws.receive_json(timeout=5)
    if negotiated:
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        assert (await ws.receive_json(timeout=5))["type"] == "feature_flags"
    prompt = model_free_prompt("pv")
    prompt["4"] = {"class_type": "TestPreviewer", "inputs": {"image": ["2", 0]}}
    prompt["3"]["inputs"]["images"] = ["4", 0]
    prompt_id = await queue_prompt(client, prompt, client_id="pv")
    frames, progress = [], []
    while True:
        message = await ws.receive(timeout=20)
        if message.type.name == "BINARY":
            frames.append(message.data)
            continue
        data = json.loads(message.data)
        if data["type"] == "progress":
            progress.append((data["data"]["value"], data["data"]["max"], data["data"]["node"]))
        if data["type"] == "executing" and data["data"]["node"] is None:
            break
    assert progress == [(1, 2, "4"), (2, 2, "4")]
    assert frames, "no preview frame arrived"
    frame = frames[-1]
    kind = struct.unpack(">I", frame[:4])[0]
    if negotiated:
        assert kind == 4
        length = struct.unpack(">I", frame[4:8])[0]
        meta = json.loads(frame[8:8 + length])
        assert meta["node_id"] == "4" and meta["prompt_id"] == prompt_id and meta["image_type"] == "image/jpeg"
        assert frame[8 + length:] == jpeg
    else:
        assert kind == 1 and struct.unpack(">I", frame[4:8])[0] == 1  # 1 = JPEG
        assert frame[8:] == jpeg
    await ws.close()


async def test_an_unexpected_fault_is_a_500_with_an_error_id_and_the_server_goes_on(client, caplog):
    state = _state(client)

    def broken():
        raise RuntimeError("disk on fire")

    state.users.settings = broken  # a fault inside a handler, injected
    response = await client.get("/settings")
    body = await response.json()
    assert response.status == 500 and body["error"]["type"] == "internal_error"
    error_id = body["error"]["extra_info"]["error_id"]
    assert "disk on fire" not in json.dumps(body)  # no internals leak to the client
    assert any(error_id in record.getMessage() for record in caplog.records)  # but the log has them
    assert (await client.get("/system_stats")).status == 200
