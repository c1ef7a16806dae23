"""A real local Ray runtime with two worker actors (CPU, one torch thread each), shared by this module: results equal
the single-process ones, model affinity, interrupt, and a worker process killed mid-prompt."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from server.compose import build_engine, compose  # noqa: E402
from server.engine.graph import check_prompt, validate_prompt  # noqa: E402
from server.messages import EventRecorder  # noqa: E402
from tests.cluster.conftest import (BUILTIN, SLEEP_PACK, make_config, pixels, sleep_prompt, txt2img,  # noqa: E402
                                    wait_for)

pytestmark = pytest.mark.slow


class Head:
    def __init__(self, base: Path):
        self.config = make_config(base, ray="local", ray_workers=2, ray_worker_threads=1, load_custom_nodes=True,
                                  ray_affinity_wait=20.0, ray_hang_timeout=60.0)
        self.config.custom_nodes_dir.mkdir(parents=True, exist_ok=True)
        (self.config.custom_nodes_dir / "sleep_pack.py").write_text(SLEEP_PACK)
        checkpoints = self.config.models_dir / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        source = self.config.bundled_models_dir / "checkpoints" / BUILTIN
        for name in ("shapes-b.safetensors", "shapes-c.safetensors"):  # two more model files (same weights)
            shutil.copyfile(source, checkpoints / name)
        self.runtime = compose(self.config)
        self.events = EventRecorder()
        self.engine = build_engine(self.runtime, self.events)
        self.runner = self.engine.worker
        self.runner.start()
        wait_for(lambda: [w.state for w in self.runner.workers()] == ["idle", "idle"], 180, "two idle workers")

    def queue(self, prompt: dict[str, Any], client_id: str = "me") -> str:
        outputs = check_prompt(prompt, self.runtime.registry)
        return self.runner.enqueue(prompt, outputs_to_execute=list(outputs), client_id=client_id)[0]

    def entry(self, prompt_id: str, timeout: float = 60.0) -> dict[str, Any]:
        return wait_for(lambda: self.engine.store.history_entry(prompt_id).get(prompt_id), timeout,
                        f"prompt {prompt_id}")

    def workers(self) -> dict[str, dict[str, Any]]:
        return {w.id: w.as_dict() for w in self.runner.workers()}

    def running_on(self, prompt_id: str, node: str) -> str:
        return wait_for(lambda: next((r.worker for r in self.runner.running_prompts()
                                      if r.prompt_id == prompt_id and r.node_id == node), None), 60, "the prompt")


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    head = Head(tmp_path_factory.mktemp("ray-local"))
    yield head
    head.engine.close(timeout=30)


def single_process_images(head: Head, prompts: list[dict[str, Any]], folder: Path) -> list[bytes]:
    """The same prompts run by one executor in this process (one torch thread, as each worker)."""
    import torch

    runtime = compose(head.config.with_changes(ray=None, output_dir=folder))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        images = []
        for index, prompt in enumerate(prompts):
            outcome = runtime.executor.execute(validate_prompt(prompt, runtime.registry), prompt_id=f"single-{index}")
            assert outcome.ok, outcome.error
            [image] = outcome.outputs["9"]["images"]
            images.append(pixels(folder / image["filename"]))
        return images
    finally:
        torch.set_num_threads(threads)


def test_eight_prompts_run_on_both_workers_and_equal_the_single_process_results(head, tmp_path):
    prompts = [txt2img(100 + i, steps=3, prefix=f"eq{i}") for i in range(8)]
    ids = [head.queue(prompt) for prompt in prompts]
    entries = [head.entry(prompt_id, 120) for prompt_id in ids]
    assert [e["status"]["status_str"] for e in entries] == ["success"] * 8
    ran_on = Counter(e["worker"] for e in entries)
    assert set(ran_on) == {"head-1", "head-2"}, ran_on
    landed = [pixels(head.config.output_dir / e["outputs"]["9"]["images"][0]["filename"]) for e in entries]
    assert landed == single_process_images(head, prompts, tmp_path)
    assert len(set(landed)) == 8  # different seeds, different images
    for worker in head.workers().values():
        assert worker["models"] == [f"checkpoints/{BUILTIN}"] and worker["model_loads"] == 1


def test_a_client_gets_the_messages_of_a_local_run(head, tmp_path):
    from server.engine.queue import PromptStore
    from server.engine.worker import Worker

    prompt = txt2img(7, steps=2, prefix="cmp")
    prompt["6"]["inputs"]["text"] = "a small green square"
    head.runner.free(free_memory=True)  # cold caches, as in the fresh local run below
    head.entry(head.queue(prompt, client_id="cmp"))
    wait_for(lambda: any(i.event == "executing" and i.client_id == "cmp" and i.data["node"] is None
                         for i in head.events.items))
    clustered = [(i.event, i.data.get("node"), i.data.get("value")) for i in head.events.items
                 if i.client_id == "cmp"]

    local = EventRecorder()
    runtime = compose(head.config.with_changes(ray=None, output_dir=tmp_path / "out"))
    store = PromptStore(tmp_path / "q.sqlite3")
    worker = Worker(store=store, registry=runtime.registry, executor=runtime.executor, events=local)
    worker.start()
    worker.enqueue(prompt, outputs_to_execute=["9"], client_id="cmp")
    assert worker.wait_idle(60)
    worker.stop()
    store.close()
    assert clustered == [(i.event, i.data.get("node"), i.data.get("value")) for i in local.items
                         if i.client_id == "cmp"]
    assert ("preview", None, None) in clustered or "progress" in [c[0] for c in clustered]


def test_each_worker_keeps_its_own_model_when_prompts_alternate(head):
    before = {w: info["model_loads"] for w, info in head.workers().items()}
    models = ["shapes-b.safetensors", "shapes-c.safetensors"]
    ids = [(models[i % 2], head.queue(txt2img(200 + i, ckpt=models[i % 2], steps=2, prefix="aff"))) for i in range(8)]
    ran: dict[str, set[str]] = {m: set() for m in models}
    for model, prompt_id in ids:
        entry = head.entry(prompt_id, 120)
        assert entry["status"]["status_str"] == "success"
        ran[model].add(entry["worker"])
    assert all(len(workers) == 1 for workers in ran.values()), ran  # every B prompt on one worker, every C on one
    assert ran[models[0]] != ran[models[1]]
    after = head.workers()
    for worker, info in after.items():
        assert info["model_loads"] == before[worker] + 1, (worker, info)  # one load each, no reloads after it
        mine = next(m for m in models if worker in ran[m])
        other = next(m for m in models if m != mine)
        assert f"checkpoints/{mine}" in info["models"] and f"checkpoints/{other}" not in info["models"]


def test_interrupt_reaches_the_worker_running_the_prompt(head):
    prompt_id = head.queue(sleep_prompt("stop", seconds=60))
    worker = head.running_on(prompt_id, "2")
    started = time.monotonic()
    assert head.runner.interrupt(prompt_id)
    entry = head.entry(prompt_id, 20)
    assert time.monotonic() - started < 10
    assert entry["status"]["messages"][-1][0] == "execution_interrupted" and entry["worker"] == worker
    assert head.engine.store.job(prompt_id)["status"] == "cancelled"
    wait_for(lambda: head.workers()[worker]["state"] == "idle")


def test_a_killed_worker_process_loses_its_prompt_to_the_other_worker(head):
    """Last in the module: it replaces a worker."""
    prompt_id = head.queue(sleep_prompt("killed", seconds=6))
    victim = head.running_on(prompt_id, "2")
    os.kill(head.workers()[victim]["pid"], signal.SIGKILL)
    entry = head.entry(prompt_id, 60)
    assert entry["status"]["status_str"] == "success"
    survivor = entry["worker"]
    assert survivor != victim
    workers = head.workers()
    assert workers[victim]["state"] == "dead" and "died" in workers[victim]["error"]
    jobs = [job for job in head.engine.store.jobs()["jobs"] if job["id"] == prompt_id]
    assert len(jobs) == 1 and jobs[0]["status"] == "completed"
    assert len(list(head.config.output_dir.glob("killed_*.png"))) == 1  # the killed run saved nothing here
    # the dead worker is replaced by a fresh process, which takes prompts too
    replacement = f"{victim}.2"
    wait_for(lambda: head.workers().get(replacement, {}).get("state") == "idle", 120, "the replacement worker")
    assert head.workers()[replacement]["pid"] not in (workers[victim]["pid"], workers[survivor]["pid"])
    after = [head.queue(txt2img(300 + i, steps=1, prefix="after")) for i in range(4)]
    assert all(head.entry(p)["status"]["status_str"] == "success" for p in after)
