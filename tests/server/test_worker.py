"""The worker thread end to end: store -> validate -> execute -> history -> events, interrupt, free, restart."""

import time

import pytest

from server.messages import EventRecorder
from server.engine.graph import validate_prompt
from server.engine.queue import PromptStore
from server.engine.worker import Worker
from tests.server import engine_nodes as E


class Engine:
    """A worker with everything it needs, over a real SQLite file."""

    def __init__(self, path, reg=None, **worker_kw):
        self.reg = reg or E.registry()
        self.calls = E.Calls()
        self.store = PromptStore(path)
        self.executor = E.executor(self.reg, self.calls)
        self.events = EventRecorder()
        self.worker = Worker(store=self.store, registry=self.reg, executor=self.executor, events=self.events,
                             **worker_kw)

    def queue(self, prompt, **kw):
        graph = validate_prompt(prompt, self.reg)
        return self.worker.enqueue(prompt, outputs_to_execute=list(graph.outputs), **kw)[0]

    def close(self):
        assert self.worker.stop(5)
        self.store.close()


@pytest.fixture
def engine(tmp_path):
    eng = Engine(tmp_path / "queue.sqlite3")
    eng.worker.start()
    yield eng
    eng.close()


def slow_prompt(steps=5000):
    return {"1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Slow", "inputs": {"a": ["1", 0], "steps": steps}},
            "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_queued_prompt_runs_and_lands_in_history(engine):
    prompt_id = engine.queue(E.chain(2, start=5), client_id="me")
    assert engine.worker.wait_idle(5)
    entry = engine.store.history_entry(prompt_id)[prompt_id]
    assert entry["outputs"] == {"nout": {"values": [7]}} and entry["status"]["status_str"] == "success"
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]


def test_event_order_for_one_prompt_matches_comfyui(engine):
    prompt_id = engine.queue(E.chain(1), client_id="me")
    assert engine.worker.wait_idle(5)
    items = engine.events.items
    assert [(i.event, i.client_id) for i in items] == [
        ("status", None),  # queued
        ("status", None),  # taken
        ("execution_start", "me"), ("execution_cached", "me"),
        ("executing", "me"), ("executing", "me"), ("executing", "me"), ("executed", "me"),
        ("execution_success", "me"),
        ("status", None),  # done
        ("executing", "me")]
    assert items[-1].data == {"node": None, "prompt_id": prompt_id}
    assert items[0].data == {"status": {"exec_info": {"queue_remaining": 1}}}
    assert items[-2].data == {"status": {"exec_info": {"queue_remaining": 0}}}


def test_a_failing_prompt_does_not_stop_the_next(engine):
    failing = {"1": {"class_type": "Const", "inputs": {"value": 1}},
               "2": {"class_type": "Fail", "inputs": {"a": ["1", 0]}},
               "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    bad = engine.queue(failing)
    good = engine.queue(E.chain(1))
    assert engine.worker.wait_idle(5)
    assert engine.store.status_of(bad) == "error" and engine.store.status_of(good) == "success"
    error = engine.store.jobs(statuses=["failed"])["jobs"][0]["execution_error"]
    assert error["node_id"] == "2" and error["exception_type"] == "ValueError"


def test_interrupt_with_the_running_id_stops_it_and_the_queue_goes_on(engine):
    slow = engine.queue(slow_prompt())
    after = engine.queue(E.chain(1))
    wait_for(lambda: engine.worker.running() is not None and engine.worker.running().node_id == "2")
    assert engine.worker.interrupt("some-other-prompt") is False
    assert engine.worker.interrupt(slow) is True
    assert engine.worker.wait_idle(5)
    assert engine.store.status_of(slow) == "interrupted" and engine.store.status_of(after) == "success"
    assert engine.store.jobs(statuses=["cancelled"])["jobs"][0]["id"] == slow


def test_interrupt_without_id_stops_whatever_runs(engine):
    slow = engine.queue(slow_prompt())
    wait_for(lambda: engine.worker.running() is not None and engine.worker.running().node_id == "2")
    assert engine.worker.running().prompt_id == slow
    assert engine.worker.interrupt() is True
    assert engine.worker.wait_idle(5) and engine.store.status_of(slow) == "interrupted"
    assert engine.worker.interrupt() is False  # nothing runs now


def test_free_memory_clears_the_cache_and_calls_the_hook(tmp_path):
    freed = []
    eng = Engine(tmp_path / "q.sqlite3", on_free=lambda **kw: freed.append(kw))
    eng.worker.start()
    try:
        eng.queue(E.chain(1))
        assert eng.worker.wait_idle(5) and len(eng.executor.cache) > 0
        eng.worker.free(unload_models=True, free_memory=True)
        wait_for(lambda: freed)
        assert freed == [{"unload_models": True, "free_memory": True}] and len(eng.executor.cache) == 0
        eng.calls.clear()
        eng.queue(E.chain(1))
        assert eng.worker.wait_idle(5) and len(eng.calls.calls) == 3  # everything ran again
    finally:
        eng.close()


def test_prompt_that_no_longer_validates_is_reported_as_an_error(tmp_path):
    eng = Engine(tmp_path / "q.sqlite3")
    prompt_id = eng.queue(E.chain(1))
    eng.reg._specs.pop("Add")  # the node type went away while the prompt waited
    eng.worker.start()
    try:
        assert eng.worker.wait_idle(5)
        assert eng.store.status_of(prompt_id) == "error"
        assert eng.events.of_type("execution_error")[0]["exception_type"] == "server.engine.graph.PromptError"
    finally:
        eng.close()


def test_queued_prompts_survive_a_restart_and_a_crashed_one_runs_exactly_once(tmp_path):
    path = tmp_path / "q.sqlite3"
    first = Engine(path)
    ids = [first.queue(E.chain(1, start=i)) for i in range(3)]
    first.store.claim_next()  # the server took ids[0] ...
    first.store._db.close()  # ... and died before finishing it

    second = Engine(path)
    second.worker.start()
    try:
        assert second.worker.wait_idle(5)
        assert [second.store.status_of(i) for i in ids] == ["success"] * 3
        assert second.calls.ids("Show") == ["nout"] * 3  # each prompt ran once
        assert list(second.store.history()) == ids
    finally:
        second.close()


def test_worker_sleeps_when_idle_and_wakes_on_enqueue(engine):
    time.sleep(0.05)
    assert engine.events.items == []  # nothing happens while idle (no polling side effects)
    engine.queue(E.chain(1))
    wait_for(lambda: engine.store.queue_remaining() == 0 and engine.events.of_type("execution_success"))


def test_stop_interrupts_the_running_prompt_joins_and_requeues_it_first(tmp_path):
    eng = Engine(tmp_path / "q.sqlite3")
    eng.worker.start()
    slow = eng.queue(slow_prompt(steps=100_000))
    later = eng.queue(E.chain(1))
    wait_for(lambda: eng.worker.running() is not None and eng.worker.running().node_id == "2")
    started = time.monotonic()
    assert eng.worker.stop(5) and time.monotonic() - started < 1.0
    assert not eng.worker.alive
    assert [item[1] for item in eng.store.pending()] == [slow, later]  # runs again on the next start
    eng.store.close()


def test_user_interrupt_during_shutdown_still_cancels(engine):
    slow = engine.queue(slow_prompt(steps=100_000))
    wait_for(lambda: engine.worker.running() is not None and engine.worker.running().node_id == "2")
    engine.worker.interrupt(slow)
    assert engine.worker.stop(5)
    assert engine.store.status_of(slow) == "interrupted"
