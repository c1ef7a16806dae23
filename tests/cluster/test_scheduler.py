"""The cluster's scheduler without Ray: WorkerCores in this process behind InProcessLinks (which can die or hang on
demand), the head's store, registry and folders. Leases, retries, interrupt, late joins, model files, input and
output files, and the events a client sees."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from nodes.catalog import core_nodes
from server.cluster.core import WorkerCore
from server.cluster.inprocess import InProcessLink
from server.cluster.scheduler import Scheduler, SchedulerOptions
from server.compose import compose
from server.config import ServerConfig
from server.engine.graph import check_prompt
from server.engine.queue import PromptStore
from server.engine.worker import Worker
from server.messages import EventRecorder
from tests.cluster.conftest import BUILTIN, SleepNode, make_config, model_free_prompt, sleep_prompt, txt2img, wait_for

NODES = [*core_nodes(), SleepNode]
FAST = SchedulerOptions(tick=0.02, status_every=0.2, poll_wait=0.05, affinity_wait=5.0)


class Cluster:
    """A head (store, registry, folders, recorder) and a scheduler over in-process workers."""

    def __init__(self, tmp: Path, *, workers: int = 2, options: SchedulerOptions = FAST, hang_timeout: float = 120.0,
                 worker_models: dict[int, bool] | None = None, start: bool = True, shared_output: bool = False):
        self.tmp = tmp
        self.config = make_config(tmp)
        self.runtime = compose(self.config, nodes=NODES)
        self.events = EventRecorder()
        self.store = PromptStore(tmp / "queue.sqlite3")
        self.scheduler = Scheduler(store=self.store, registry=self.runtime.registry, events=self.events,
                                   folders=self.runtime.folders, options=options)
        self.hang_timeout = hang_timeout
        self.shared_output = shared_output
        self.worker_models = worker_models or {}
        self.links: dict[str, InProcessLink] = {}
        for index in range(1, workers + 1):
            self.add(index)
        if start:
            self.scheduler.start()

    def worker_config(self, index: int) -> ServerConfig:
        scratch = self.tmp / f"worker-{index}"
        changes: dict[str, Any] = {"input_dir": scratch / "input", "temp_dir": scratch / "temp",
                                   "output_dir": self.config.output_dir if self.shared_output else scratch / "output",
                                   "ray_shared_output": self.shared_output}
        if not self.worker_models.get(index, True):  # a machine without the built-in model
            changes.update(models_dir=scratch / "models", bundled_models_dir=None)
        return self.config.with_changes(**changes)

    def add(self, index: int) -> InProcessLink:
        worker_id = f"w{index}"
        config = self.worker_config(index)
        link = InProcessLink(worker_id, lambda: WorkerCore(config, worker_id=worker_id, nodes=NODES),
                             hang_timeout=self.hang_timeout)
        self.links[worker_id] = link
        self.scheduler.add_worker(link)
        return link

    def queue(self, prompt: dict[str, Any], client_id: str = "me", **kw: Any) -> str:
        outputs = check_prompt(prompt, self.runtime.registry)
        return self.scheduler.enqueue(prompt, outputs_to_execute=list(outputs), client_id=client_id, **kw)[0]

    def entry(self, prompt_id: str, timeout: float = 30.0) -> dict[str, Any]:
        return wait_for(lambda: self.store.history_entry(prompt_id).get(prompt_id), timeout, f"{prompt_id} to end")

    def running_on(self, prompt_id: str, node: str | None = None) -> str:
        def find() -> str | None:
            for running in self.scheduler.running_prompts():
                if running.prompt_id == prompt_id and (node is None or running.node_id == node):
                    return running.worker
            return None

        return wait_for(find, 30, f"{prompt_id} to run")

    def worker(self, worker_id: str) -> dict[str, Any]:
        return next(w.as_dict() for w in self.scheduler.workers() if w.id == worker_id)

    def close(self) -> None:
        self.scheduler.stop(10)
        self.store.close()


@pytest.fixture
def cluster(tmp_path):
    made: list[Cluster] = []

    def build(**kw: Any) -> Cluster:
        made.append(Cluster(tmp_path, **kw))
        return made[-1]

    yield build
    for item in made:
        item.close()


def error_message(entry: dict[str, Any]) -> str:
    return next(m[1]["exception_message"] for m in entry["status"]["messages"] if m[0] == "execution_error")


def test_prompts_run_on_the_workers_and_their_files_land_in_the_heads_output(cluster):
    c = cluster()
    wait_for(lambda: all(w.state == "idle" for w in c.scheduler.workers()), what="workers to start")
    ids = [c.queue(model_free_prompt("probe", color=i)) for i in range(6)]
    assert c.scheduler.wait_idle(30)
    names = set()
    for prompt_id in ids:
        entry = c.entry(prompt_id)
        assert entry["status"]["status_str"] == "success"
        assert entry["worker"] in ("w1", "w2")
        [image] = entry["outputs"]["3"]["images"]
        assert (c.config.output_dir / image["filename"]).is_file()
        names.add(image["filename"])
    # each worker numbered its own files from 1: the head renamed the clashes to the next counters
    assert names == {f"probe_{n:05}_.png" for n in range(1, 7)}
    for index in (1, 2):
        assert list((c.tmp / f"worker-{index}" / "output").iterdir()) == []  # moved, not copied
    jobs = c.store.jobs()["jobs"]
    assert {job["worker"] for job in jobs} <= {"w1", "w2"}
    assert sum(w.prompts_done for w in c.scheduler.workers()) == 6


def test_with_a_shared_output_folder_workers_save_into_it_and_nothing_travels(cluster):
    c = cluster(shared_output=True)
    ids = [c.queue(model_free_prompt("shared", color=i)) for i in range(4)]
    assert c.scheduler.wait_idle(30)
    names = {c.entry(p)["outputs"]["3"]["images"][0]["filename"] for p in ids}
    assert names == {f"shared_{n:05}_.png" for n in range(1, 5)}  # one folder, one counter, no clash
    assert all((c.config.output_dir / name).is_file() for name in names)
    assert all(w["shared_output"] for w in (c.worker("w1"), c.worker("w2")))


def test_a_client_sees_the_same_messages_as_from_a_local_run(cluster, tmp_path):
    c = cluster(workers=1)
    prompt_id = c.queue(model_free_prompt("same"), client_id="me")
    c.entry(prompt_id)
    wait_for(lambda: "executing" in [i.event for i in c.events.items if i.data.get("node", 1) is None])
    clustered = [(i.event, i.client_id) for i in c.events.items]

    local_events = EventRecorder()
    runtime = compose(make_config(tmp_path / "local"), nodes=NODES)
    store = PromptStore(tmp_path / "local.sqlite3")
    worker = Worker(store=store, registry=runtime.registry, executor=runtime.executor, events=local_events)
    worker.start()
    worker.enqueue(model_free_prompt("same"), outputs_to_execute=["3"], client_id="me")
    assert worker.wait_idle(10)
    worker.stop()
    store.close()
    assert clustered == [(i.event, i.client_id) for i in local_events.items]
    executed = c.events.of_type("executed")[0]
    assert executed["output"]["images"][0]["filename"] == "same_00001_.png"


def test_a_prompt_whose_worker_dies_runs_again_on_another_and_is_recorded_once(cluster):
    c = cluster()
    prompt_id = c.queue(sleep_prompt("slow", seconds=1.5))
    first = c.running_on(prompt_id, node="2")
    c.links[first].kill()
    entry = c.entry(prompt_id)
    assert entry["status"]["status_str"] == "success"
    assert entry["worker"] != first
    assert list(c.store.history()) == [prompt_id]
    assert c.worker(first)["state"] == "dead" and "died" in c.worker(first)["error"]
    job = c.store.job(prompt_id)
    assert job["worker"] == entry["worker"] and job["status"] == "completed"
    [image] = entry["outputs"]["3"]["images"]
    assert (c.config.output_dir / image["filename"]).is_file()


def test_a_prompt_that_loses_a_second_worker_ends_with_a_clear_error(cluster):
    c = cluster()
    prompt_id = c.queue(sleep_prompt("slow", seconds=5))
    first = c.running_on(prompt_id, node="2")
    c.links[first].kill()
    second = wait_for(lambda: next((r.worker for r in c.scheduler.running_prompts() if r.worker != first), None))
    c.running_on(prompt_id, node="2")
    c.links[second].kill()
    entry = c.entry(prompt_id)
    assert entry["status"]["status_str"] == "error"
    message = error_message(entry)
    assert "lost 2 times" in message and first in message and second in message and "not run again" in message
    errors = [i for i in c.events.items if i.event == "execution_error"]
    assert errors and errors[-1].client_id == "me"
    assert c.store.queue_remaining() == 0


def test_a_worker_that_stops_answering_is_declared_lost_and_its_prompt_moves(cluster):
    c = cluster(hang_timeout=0.5)
    prompt_id = c.queue(sleep_prompt("hang", seconds=1.0))
    first = c.running_on(prompt_id, node="2")
    c.links[first].hang()
    entry = c.entry(prompt_id)
    assert entry["status"]["status_str"] == "success" and entry["worker"] != first
    assert "no answer" in c.worker(first)["error"]


def test_interrupt_reaches_the_worker_that_runs_the_prompt(cluster):
    c = cluster()
    prompt_id = c.queue(sleep_prompt("stop", seconds=30))
    worker = c.running_on(prompt_id, node="2")
    assert not c.scheduler.interrupt("some-other-prompt")
    started = time.monotonic()
    assert c.scheduler.interrupt(prompt_id)
    entry = c.entry(prompt_id, timeout=10)
    assert time.monotonic() - started < 5
    assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"
    assert entry["worker"] == worker
    wait_for(lambda: c.worker(worker)["state"] == "idle")
    assert c.store.job(prompt_id)["status"] == "cancelled"


def test_stopping_the_head_puts_running_prompts_back_first_in_the_queue(cluster):
    c = cluster(workers=1)
    prompt_id = c.queue(sleep_prompt("requeue", seconds=30))
    c.running_on(prompt_id, node="2")
    assert c.scheduler.stop(10)
    assert c.store.status_of(prompt_id) == "pending"
    assert c.store.pending()[0][1] == prompt_id


def test_a_worker_that_joins_later_takes_work_at_once(cluster):
    c = cluster(workers=0)
    prompt_id = c.queue(model_free_prompt("late"))
    time.sleep(0.3)
    assert c.store.status_of(prompt_id) == "pending"  # nobody to run it, and no error either
    c.add(7)
    entry = c.entry(prompt_id)
    assert entry["status"]["status_str"] == "success" and entry["worker"] == "w7"


def test_a_model_file_no_worker_has_ends_the_prompt_with_an_error_naming_it(cluster):
    c = cluster(worker_models={1: False, 2: False})
    wait_for(lambda: all(w.state == "idle" for w in c.scheduler.workers()), what="workers to start")
    prompt_id = c.queue(txt2img(1))  # valid on the head, which has the built-in model
    entry = c.entry(prompt_id, timeout=10)
    assert entry["status"]["status_str"] == "error"
    message = error_message(entry)
    assert f"checkpoints/{BUILTIN}" in message and "No worker has the model file" in message
    assert c.scheduler.wait_idle(5)


def test_a_prompt_is_not_leased_to_a_worker_that_lacks_its_model(cluster):
    c = cluster(worker_models={1: False, 2: True})
    ids = [c.queue(txt2img(seed, steps=1)) for seed in range(3)]
    free = [c.queue(model_free_prompt("free", color=i)) for i in range(3)]
    assert c.scheduler.wait_idle(60)
    assert {c.entry(p)["worker"] for p in ids} == {"w2"}
    assert all(c.entry(p)["status"]["status_str"] == "success" for p in ids + free)
    assert c.worker("w2")["models"] == [f"checkpoints/{BUILTIN}"] and c.worker("w1")["models"] == []


def test_input_images_travel_with_the_prompt(cluster, tmp_path):
    from PIL import Image

    c = cluster(workers=1)
    c.config.input_dir.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 4), (10, 200, 30)).save(c.config.input_dir / "green.png")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "green.png"}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inv"}}}
    entry = c.entry(c.queue(prompt))
    assert entry["status"]["status_str"] == "success", entry["status"]
    [image] = entry["outputs"]["3"]["images"]
    with Image.open(c.config.output_dir / image["filename"]) as saved:
        pixel = saved.convert("RGB").getpixel((0, 0))
    assert all(abs(a - b) <= 1 for a, b in zip(pixel, (245, 55, 225))), pixel
    assert (tmp_path / "worker-1" / "input" / "green.png").is_file()


def test_free_reaches_every_worker(cluster):
    c = cluster()
    entry = c.entry(c.queue(txt2img(3, steps=1)))
    holder = entry["worker"]
    wait_for(lambda: c.worker(holder)["models"] == [f"checkpoints/{BUILTIN}"])
    c.scheduler.free(unload_models=True, free_memory=True)
    wait_for(lambda: c.worker(holder)["models"] == [], what="the model to be dropped")
