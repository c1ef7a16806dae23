"""`chisel worker --ray ADDRESS`: add this machine's devices to a Chisel cluster.

It starts a Ray node on this machine that joins the cluster at ADDRESS (`ray start --address ADDRESS --block`),
announcing the custom resource `chisel_worker: N` (N worker processes: one per GPU, or one without a GPU, or
--ray-workers) and carrying this machine's Chisel settings (its folders: models are read from this machine's own
models/ and extra_model_paths, under the same names as on the head) in the environment its worker processes
inherit. The head notices the node within a second or two and starts N worker actors on it; they take prompts at
once. Ctrl-C (or SIGTERM) stops the node: its workers end, and a prompt one of them was running is leased to another
worker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from server.cluster.spec import CONFIG_ENV, config_to_json
from server.config import ServerConfig

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
WORKER_RESOURCE = "chisel_worker"  # the same name as server/cluster/ray_cluster.py's (which imports Ray)


def gpu_count(config: ServerConfig) -> int:
    if config.device == "cpu":
        return 0
    from nodes.services import device_count

    return device_count()


def ray_executable() -> str | None:
    beside = Path(sys.executable).with_name("ray")
    if beside.is_file():
        return str(beside)
    return shutil.which("ray")


def node_command(config: ServerConfig, ray: str, *, workers: int, gpus: int) -> list[str]:
    assert config.ray is not None
    return [ray, "start", "--address", config.ray, "--block", "--disable-usage-stats",
            "--num-gpus", str(gpus), "--resources", json.dumps({WORKER_RESOURCE: workers})]


def node_environment(config: ServerConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    from server.cluster.ray_cluster import enable_token_auth_if_available

    env = dict(os.environ if environ is None else environ)
    env[CONFIG_ENV] = config_to_json(config)
    # Ctrl-C leaves at once (Ray 2.5x would first "drain" the node for 30 s; a prompt running here is leased again
    # to another worker anyway)
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    enable_token_auth_if_available(env)
    return env


def run_worker_node(config: ServerConfig, *, out: Any = None) -> int:
    out = out or sys.stdout
    if config.ray in (None, "", "local"):
        print("chisel worker: give the cluster's address, e.g. --ray 10.0.0.5:6379 (`chisel serve --ray ADDRESS` "
              "or `ray start --head` prints it)", file=sys.stderr)
        return EXIT_USAGE
    from server.cluster.ray_cluster import unreachable

    why = unreachable(config.ray)
    if why is not None:
        print(f"chisel worker: {why}", file=sys.stderr)
        return EXIT_FAILED
    ray = ray_executable()
    if ray is None:
        print("chisel worker: Ray is not installed: pip install 'chisel-studio[cluster]'", file=sys.stderr)
        return EXIT_FAILED
    gpus = gpu_count(config)
    workers = config.ray_workers if config.ray_workers is not None else max(gpus, 1)
    if workers < 1:
        print("chisel worker: --ray-workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    for folder in (config.output_dir, config.temp_dir, config.input_dir):
        folder.mkdir(parents=True, exist_ok=True)
    command = node_command(config, ray, workers=workers, gpus=gpus)
    print(f"chisel worker: joining {config.ray} with {workers} worker(s) "
          f"({gpus} GPU{'s' if gpus != 1 else ''}); models from {config.models_dir}", file=out, flush=True)
    process = subprocess.Popen(command, env=node_environment(config))

    stopping: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        stopping.append(signum)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:  # asked to leave: `ray start --block` ends with 1 on SIGTERM
        print("chisel worker: stopped; this machine is out of the cluster", file=out, flush=True)
        return EXIT_OK
    if code != 0:
        print(f"chisel worker: the Ray node exited with {code} (could it reach {config.ray}? see the lines above)",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
