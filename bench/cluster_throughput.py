"""Cluster throughput: prompts on the built-in model with 1 and 2 Ray workers on this machine, against the default
single-process server run alongside, and the head's overhead per prompt; optionally the same on a 2-node Ray
cluster started with the commands a new user would type (two local nodes on different ports).

    python -m bench.cluster_throughput [--prompts 20] [--steps 20] [--batch 4] [--workers 1,2] [--two-nodes]
                                       [--save FILE]

Each case runs in a fresh process (its own Ray runtime, its own torch threads): an engine built by compose() as
`chisel serve` builds it (single process: the in-process worker thread using every core; Ray: `--ray local
--ray-workers N`, each worker with cores/N torch threads), one warm-up prompt per worker (the model is loaded),
then the prompts (the ready txt2img workflow, different seeds) queued at once; the time is from queueing to the
last history entry. Head overhead = a prompt's time from lease to history written on the head, minus the worker's
own execution time (the events' round trips, the PNG bytes coming back and written, the store).

--two-nodes: `ray start --head --port P --block`, `chisel serve --ray 127.0.0.1:P --ray-workers 1`, and
`chisel worker --ray 127.0.0.1:P --ray-workers 1` from a second base folder; the prompts go through HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import machine_description, ratio, run_worker, save_report, seconds, table, worker_main

REPO = Path(__file__).resolve().parent.parent
MODULE = "bench.cluster_throughput"


def prompt_for(seed: int, steps: int, batch: int) -> dict[str, Any]:
    prompt = json.loads((REPO / "workflows" / "api" / "txt2img.json").read_text())
    for node in prompt.values():
        node.pop("_meta", None)
    prompt["3"]["inputs"].update(seed=seed, steps=steps)
    prompt["5"]["inputs"]["batch_size"] = batch
    prompt["9"]["inputs"]["filename_prefix"] = "bench"
    return prompt


# ---- one case, in its own process ------------------------------------------------------------------------------
def case(spec: dict[str, Any]) -> dict[str, Any]:
    from server.compose import build_engine, compose
    from server.config import ServerConfig
    from server.engine.events import NullSink
    from server.engine.graph import check_prompt

    workers = int(spec["workers"])
    cores = os.cpu_count() or 1
    base = Path(tempfile.mkdtemp(prefix="chisel-bench-"))
    ray = {"ray": "local", "ray_workers": workers, "ray_worker_threads": max(1, cores // workers)} \
        if spec["ray"] else {}
    config = ServerConfig.create(base, load_custom_nodes=False, preview_method="none", **ray)
    if not spec["ray"] and spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    started = time.perf_counter()
    runtime = compose(config)
    engine = build_engine(runtime, NullSink())
    runner = engine.worker
    runner.start()
    try:
        deadline = time.monotonic() + 300
        while spec["ray"] and [w.state for w in runner.workers()] != ["idle"] * workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start: {[w.as_dict() for w in runner.workers()]}")
            time.sleep(0.05)
        ready = time.perf_counter() - started

        def queue(seed: int) -> str:
            prompt = prompt_for(seed, spec["steps"], spec["batch"])
            outputs = check_prompt(prompt, runtime.registry)
            return runner.enqueue(prompt, outputs_to_execute=list(outputs))[0]

        for index in range(workers):  # warm-up: every worker loads the model
            queue(10_000 + index)
            if not spec["ray"] or index == workers - 1:
                assert runner.wait_idle(300)
        begin = time.perf_counter()
        ids = [queue(seed) for seed in range(spec["prompts"])]
        assert runner.wait_idle(1800), "the prompts did not finish"
        wall = time.perf_counter() - begin
        entries = [engine.store.history_entry(p)[p] for p in ids]
        failed = [e for e in entries if e["status"]["status_str"] != "success"]
        assert not failed, failed[0]["status"]
        overhead = runner.stats()["overhead"][-spec["prompts"]:] if spec["ray"] else []
        return {"wall": wall, "ready": ready, "ran_on": dict(Counter(e.get("worker", "local") for e in entries)),
                "overhead": statistics.median(overhead) if overhead else None,
                "overhead_max": max(overhead) if overhead else None}
    finally:
        engine.close()
        shutil.rmtree(base, ignore_errors=True)


# ---- two Ray nodes on this machine ------------------------------------------------------------------------------
def two_nodes(spec: dict[str, Any]) -> dict[str, Any]:
    """The commands of README's two-machine setup, on two local Ray nodes (different ports)."""
    tmp = Path(tempfile.mkdtemp(prefix="chisel-two-nodes-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        ray_port = probe.getsockname()[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        http_port = probe.getsockname()[1]
    address = f"127.0.0.1:{ray_port}"
    ray = str(Path(sys.executable).with_name("ray"))
    chisel = [sys.executable, "-m", "server"]
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    commands = [
        [ray, "start", "--head", "--port", str(ray_port), "--block", "--include-dashboard=false",
         "--disable-usage-stats"],
        [*chisel, "serve", "--ray", address, "--ray-workers", "1", "--ray-worker-threads", threads, "--port",
         str(http_port), "--base-dir", str(tmp / "head"), "--preview-method", "none", "--no-custom-nodes"],
        [*chisel, "worker", "--ray", address, "--ray-workers", "1", "--ray-worker-threads", threads, "--base-dir",
         str(tmp / "second"), "--no-custom-nodes"],
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes: list[subprocess.Popen] = []
    url = f"http://127.0.0.1:{http_port}"
    started = time.perf_counter()
    try:
        for index, command in enumerate(commands):
            log = open(tmp / f"{index}.log", "w")
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))
            if index == 0:
                time.sleep(3)
            if index == 1:
                _wait(lambda: _get(url + "/workers"), 180)
        _wait(lambda: [w["state"] for w in _get(url + "/workers")["workers"]] == ["idle", "idle"], 300)
        ready = time.perf_counter() - started

        def queue(seed: int) -> str:
            body = json.dumps({"prompt": prompt_for(seed, spec["steps"], spec["batch"])}).encode()
            request = urllib.request.Request(url + "/prompt", data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)["prompt_id"]

        def done(ids: list[str]) -> list[dict[str, Any]] | None:
            history = _get(url + "/history")
            return [history[p] for p in ids] if all(p in history for p in ids) else None

        warm = [queue(10_000), queue(10_001)]  # warm-up (both workers)
        _wait(lambda: done(warm), 300)
        begin = time.perf_counter()
        ids = [queue(seed) for seed in range(spec["prompts"])]
        entries = _wait(lambda: done(ids), 1800)
        wall = time.perf_counter() - begin
        assert all(e["status"]["status_str"] == "success" for e in entries)
        return {"wall": wall, "ready": ready, "ran_on": dict(Counter(e.get("worker") for e in entries)),
                "overhead": None, "overhead_max": None,
                "commands": [_shown(command, chisel) for command in commands]}
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _shown(command: list[str], chisel: list[str]) -> str:
    """A command as a user types it: `chisel ...` (installed entry point) and `ray ...`."""
    if command[:len(chisel)] == chisel:
        return " ".join(["chisel", *command[len(chisel):]])
    return " ".join([Path(command[0]).name, *command[1:]])


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except OSError:
        return None


def _wait(predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout} s")


def work(spec: dict[str, Any]) -> dict[str, Any]:
    return two_nodes(spec) if spec.get("two_nodes") else case(spec)


# ---- the table --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to run (comma-separated; default 1,2)")
    parser.add_argument("--two-nodes", action="store_true", help="also run the 2-node Ray cluster case")
    parser.add_argument("--single-thread", action="store_true",
                        help="also run the single process with one torch thread (a per-core baseline)")
    parser.add_argument("--save", metavar="FILE", help="also write the report here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(work, args.worker)
    common = {"prompts": args.prompts, "steps": args.steps, "batch": args.batch}
    cores = os.cpu_count() or 1
    cases: list[tuple[str, dict[str, Any]]] = [(f"single process (default server), {cores} torch threads",
                                                 {"ray": False, "workers": 1})]
    if args.single_thread and cores > 1:
        cases.append(("single process (default server), 1 torch thread", {"ray": False, "workers": 1, "threads": 1}))
    for count in (int(n) for n in args.workers.split(",") if n.strip()):
        threads = max(1, cores // count)
        cases.append((f"--ray local, {count} worker{'s' if count > 1 else ''} x {threads} torch thread"
                      f"{'s' if threads > 1 else ''}", {"ray": True, "workers": count}))
    if args.two_nodes:
        cases.append((f"2 Ray nodes (ray start + chisel serve + chisel worker), 1 worker x {max(1, cores // 2)} "
                      "thread(s) each",
                      {"two_nodes": True, "workers": 2}))
    results = []
    for name, spec in cases:
        print(f"running: {name}", file=sys.stderr, flush=True)
        results.append((name, run_worker(MODULE, {**common, **spec, "name": name}, timeout=3600)))
    baseline = args.prompts / results[0][1]["wall"]
    one_worker = next((args.prompts / r["wall"] for name, r in results if name.startswith("--ray local, 1 worker")),
                      None)
    rows = []
    for name, result in results:
        rate = args.prompts / result["wall"]
        overhead = "-" if result["overhead"] is None else \
            f"{seconds(result['overhead'])} (max {seconds(result['overhead_max'])})"
        versus_one = ratio(rate, one_worker) if one_worker and not name.startswith("single") else "-"
        rows.append([name, seconds(result["wall"]), f"{rate:.2f}", ratio(rate, baseline), versus_one, overhead,
                     ", ".join(f"{k}: {v}" for k, v in sorted(result["ran_on"].items())), seconds(result["ready"])])
    text = table(["case", f"{args.prompts} prompts", "prompts/s", "vs single process", "vs 1 Ray worker",
                  "head overhead/prompt", "ran on", "start to ready"], rows)
    text += (f"\n\nprompt: workflows/api/txt2img.json on the built-in model, {args.batch} x 64x64, {args.steps} steps, "
             "different seeds, queued at once after one warm-up prompt per worker; Ray workers get cores/N torch "
             "threads each. The first row is the baseline of the ratios.")
    for name, result in results:
        if result.get("commands"):
            text += "\n\n2-node commands (as run, with their ports and folders):\n" + "\n".join(
                f"  {c}" for c in result["commands"])
    print(text)
    if args.save:
        save_report(args.save, text, header=machine_description(["server/cluster", "server/engine"]),
                    module=MODULE, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
