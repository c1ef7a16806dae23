"""Two Ray nodes on this machine, started as a new user would start two machines (different ports, separate
folders): `ray start --head`, `chisel serve --ray ADDRESS --ray-workers 0` (the head runs no worker itself), then
`chisel worker --ray ADDRESS` from the "second machine". A prompt queued before the worker joined runs as soon as it
joins; its image comes back to the head's output/; a model only the worker machine has validates on the head and
runs there; a model only the head has fails with an error naming it; stopping the worker shows it dead."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from tests.cluster.conftest import BUILTIN, REPO, txt2img, wait_for  # noqa: E402
from tests.server.conftest import start_server  # noqa: E402

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.is_file() else (shutil.which("ray") or "ray")


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class Http:
    def __init__(self, url: str):
        self.url = url

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.load(response)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    def queue(self, prompt: dict[str, Any]) -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": "two-nodes"})
        assert status == 200, body
        return body["prompt_id"]

    def entry(self, prompt_id: str, timeout: float = 120) -> dict[str, Any]:
        return wait_for(lambda: self.get(f"/history/{prompt_id}").get(prompt_id), timeout, f"prompt {prompt_id}")


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two-nodes")
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("ray-head", "worker")}
    processes: list[subprocess.Popen] = []
    server = None
    try:
        processes.append(subprocess.Popen(
            [ray_cli(), "start", "--head", "--port", str(port), "--block", "--num-cpus", "1",
             "--include-dashboard=false", "--disable-usage-stats"],
            env=env, stdout=logs["ray-head"], stderr=subprocess.STDOUT, cwd=tmp))
        head_base = tmp / "head"
        (head_base / "models" / "checkpoints").mkdir(parents=True)
        shutil.copyfile(REPO / "models" / "checkpoints" / BUILTIN,
                        head_base / "models" / "checkpoints" / "head-only.safetensors")
        server = start_server(head_base, "--ray", address, "--ray-workers", "0", "--no-custom-nodes",
                              "--preview-method", "none", timeout=120)
        http = Http(server.url)
        assert http.get("/workers") == {"mode": "ray", "workers": []}
        early = http.queue(txt2img(5, steps=2, prefix="early"))  # queued before any worker exists

        worker_base = tmp / "second-machine"
        (worker_base / "models" / "checkpoints").mkdir(parents=True)
        shutil.copyfile(REPO / "models" / "checkpoints" / BUILTIN,
                        worker_base / "models" / "checkpoints" / "worker-only.safetensors")
        worker = subprocess.Popen(
            [sys.executable, "-m", "server", "worker", "--ray", address, "--base-dir", str(worker_base),
             "--ray-worker-threads", "1", "--no-custom-nodes"],
            env=env, stdout=logs["worker"], stderr=subprocess.STDOUT, cwd=REPO)
        processes.append(worker)
        yield {"http": http, "early": early, "server": server, "worker": worker, "head": head_base,
               "second": worker_base, "tmp": tmp}
    finally:
        if server is not None:
            server.stop()
        for process in reversed(processes):
            stop(process)
        for log in logs.values():
            log.close()


def test_a_prompt_queued_before_the_worker_joined_runs_on_it_and_lands_on_the_head(two_nodes):
    http = two_nodes["http"]
    entry = http.entry(two_nodes["early"], 180)
    assert entry["status"]["status_str"] == "success"
    assert entry["worker"].startswith("node-")
    [image] = entry["outputs"]["9"]["images"]
    assert (two_nodes["head"] / "output" / image["filename"]).is_file()
    with urllib.request.urlopen(f"{http.url}/view?filename={image['filename']}&type=output", timeout=30) as view:
        assert view.status == 200 and view.read(8) == b"\x89PNG\r\n\x1a\n"
    assert list((two_nodes["second"] / "output").glob("*.png")) == []
    [worker] = http.get("/workers")["workers"]
    assert worker["id"] == entry["worker"] and worker["state"] == "idle" and worker["prompts_done"] == 1
    assert worker["models"] == [f"checkpoints/{BUILTIN}"] and worker["pid"] != two_nodes["server"].process.pid


def test_each_machine_reads_its_own_model_folders(two_nodes):
    http = two_nodes["http"]
    wait_for(lambda: "worker-only.safetensors" in http.get("/object_info/CheckpointLoaderSimple")
             ["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0], 30, "the worker's model list")
    entry = http.entry(http.queue(txt2img(6, ckpt="worker-only.safetensors", steps=1, prefix="remote-model")))
    assert entry["status"]["status_str"] == "success", entry["status"]
    entry = http.entry(http.queue(txt2img(6, ckpt="head-only.safetensors", steps=1, prefix="head-model")), 30)
    assert entry["status"]["status_str"] == "error"
    message = next(m[1]["exception_message"] for m in entry["status"]["messages"] if m[0] == "execution_error")
    assert "checkpoints/head-only.safetensors" in message


def test_a_worker_machine_that_leaves_is_shown_dead(two_nodes):
    http = two_nodes["http"]
    stop(two_nodes["worker"])
    assert two_nodes["worker"].returncode == 0  # Ctrl-C / SIGTERM: the machine leaves at once, cleanly
    [worker] = wait_for(lambda: [w for w in http.get("/workers")["workers"] if w["state"] == "dead"], 30,
                        "the worker to be reported dead")
    assert "died" in worker["error"]
