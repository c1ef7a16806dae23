"""The SQLite prompt store: queue order, crash recovery, history (ComfyUI semantics, bound), jobs filters."""

import sqlite3

import pytest

from server.engine.queue import DuplicatePromptId, PromptStore, UnknownPrompt


class Clock:
    def __init__(self, start=1_700_000_000.0):
        self.now = start

    def __call__(self):
        self.now += 1.0
        return self.now


@pytest.fixture
def path(tmp_path):
    return tmp_path / "user" / "queue.sqlite3"


@pytest.fixture
def store(path):
    with PromptStore(path, clock=Clock()) as s:
        yield s


PROMPT = {"1": {"class_type": "Const", "inputs": {"value": 1}}}


def finish(store, prompt_id, status="success", outputs=None, start=1000, end=1500):
    messages = [("execution_start", {"prompt_id": prompt_id, "timestamp": start})]
    if status == "success":
        messages.append(("execution_success", {"prompt_id": prompt_id, "timestamp": end}))
    elif status == "error":
        messages.append(("execution_error", {"prompt_id": prompt_id, "node_id": "1", "timestamp": end,
                                             "exception_message": "boom"}))
    else:
        messages.append(("execution_interrupted", {"prompt_id": prompt_id, "timestamp": end}))
    store.finish(prompt_id, status=status, outputs=outputs or {}, messages=messages)


def test_prompts_are_claimed_by_number_then_order(store):
    assert store.put("a", PROMPT) == 0
    assert store.put("b", PROMPT) == 1
    assert store.put("c", PROMPT, front=True) == -2
    assert store.put("d", PROMPT, number=0.5) == 0.5
    assert [item[1] for item in store.pending()] == ["c", "a", "d", "b"]
    assert [store.claim_next().prompt_id for _ in range(4)] == ["c", "a", "d", "b"]
    assert store.claim_next() is None


def test_queue_items_have_comfyui_shape_and_extra_data_gets_client_and_time(store):
    store.put("a", PROMPT, extra_data={"extra_pnginfo": {"workflow": {"id": "wf"}}}, outputs_to_execute=["1"],
              client_id="cli")
    [item] = store.pending()
    number, prompt_id, prompt, extra, outputs = item
    assert (number, prompt_id, prompt, outputs) == (0, "a", PROMPT, ["1"])
    assert extra["client_id"] == "cli" and isinstance(extra["create_time"], int)
    claimed = store.claim_next()
    assert store.pending() == [] and store.running()[0][1] == "a" and claimed.client_id == "cli"


def test_sensitive_keys_stay_in_memory_only(store, path):
    store.put("a", PROMPT, extra_data={"api_key_comfy_org": "secret", "auth_token_comfy_org": "tok", "x": 1})
    assert "api_key_comfy_org" not in store.pending()[0][3]
    raw = sqlite3.connect(path).execute("SELECT extra_data FROM prompts").fetchone()[0]
    assert "secret" not in raw and "tok" not in raw
    item = store.claim_next()
    assert item.extra_data["api_key_comfy_org"] == "secret" and item.extra_data["x"] == 1
    assert "api_key_comfy_org" not in item.as_list()[3]


def test_duplicate_prompt_id_is_refused(store):
    store.put("a", PROMPT)
    with pytest.raises(DuplicatePromptId):
        store.put("a", PROMPT)


def test_queue_survives_reopening(path):
    with PromptStore(path) as store:
        for pid in "abc":
            store.put(pid, PROMPT)
    with PromptStore(path) as store:
        assert [item[1] for item in store.pending()] == ["a", "b", "c"]
        assert store.put("d", PROMPT) == 3  # the counter is persistent too


def test_prompt_left_running_by_a_crash_runs_again_exactly_once(path):
    store = PromptStore(path)
    for pid in "abc":
        store.put(pid, PROMPT)
    assert store.claim_next().prompt_id == "a"
    finish(store, "a")
    assert store.claim_next().prompt_id == "b"
    store._db.close()  # the process dies while b runs; nothing more is written

    with PromptStore(path) as reopened:
        assert reopened.recovered == ["b"]
        assert [item[1] for item in reopened.pending()] == ["b", "c"]  # b back at the front
        claimed = []
        while (item := reopened.claim_next()) is not None:
            claimed.append(item.prompt_id)
            finish(reopened, item.prompt_id)
        assert claimed == ["b", "c"]  # a, finished before the crash, does not run again
        assert list(reopened.history()) == ["a", "b", "c"]


def test_finish_moves_prompt_to_history_in_comfyui_shape(store):
    store.put("a", PROMPT, outputs_to_execute=["1"])
    store.claim_next()
    outputs = {"9": {"images": [{"filename": "x.png", "subfolder": "", "type": "output"}]}}
    finish(store, "a", outputs=outputs)
    entry = store.history_entry("a")["a"]
    assert entry["prompt"][:3] == [0, "a", PROMPT] and entry["prompt"][4] == ["1"]
    assert entry["outputs"] == outputs
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert entry["status"]["messages"][0] == ["execution_start", {"prompt_id": "a", "timestamp": 1000}]
    assert entry["meta"] == {}
    assert store.history_entry("missing") == {}
    assert store.queue_remaining() == 0 and store.status_of("a") == "success"


def test_interrupted_and_failed_prompts_are_errors_in_history(store):
    for pid, status in (("e", "error"), ("i", "interrupted")):
        store.put(pid, PROMPT)
        store.claim_next()
        finish(store, pid, status)
        assert store.history_entry(pid)[pid]["status"]["status_str"] == "error"
        assert store.history_entry(pid)[pid]["status"]["completed"] is False
    with pytest.raises(UnknownPrompt):
        store.finish("ghost", status="success")
    with pytest.raises(ValueError):
        store.finish("e", status="done")


def fill_history(store, count):
    for i in range(count):
        store.put(f"p{i}", PROMPT)
        store.claim_next()
        finish(store, f"p{i}")


def test_history_pagination_follows_comfyui(store):
    fill_history(store, 6)
    assert list(store.history()) == [f"p{i}" for i in range(6)]
    assert list(store.history(max_items=2)) == ["p4", "p5"]  # without offset: the last N
    assert list(store.history(max_items=2, offset=1)) == ["p1", "p2"]
    assert list(store.history(offset=4)) == ["p4", "p5"]
    assert list(store.history(max_items=10, offset=5)) == ["p5"]
    assert store.history(max_items=0) == {}


def test_history_is_bounded_oldest_dropped(path):
    with PromptStore(path, max_history=3) as store:
        fill_history(store, 5)
        assert list(store.history()) == ["p2", "p3", "p4"]


def test_delete_and_clear_pending_and_history(store):
    fill_history(store, 3)
    for pid in "xyz":
        store.put(pid, PROMPT)
    assert store.delete(["x", "p0"]) == 1  # finished prompts are not in the queue
    assert [i[1] for i in store.pending()] == ["y", "z"]
    assert store.clear_pending() == 2 and store.pending() == []
    assert store.delete_history(["p0", "y"]) == 1 and list(store.history()) == ["p1", "p2"]
    assert store.clear_history() == 2 and store.history() == {}


def test_running_prompt_cannot_be_deleted_from_the_queue(store):
    store.put("a", PROMPT)
    store.claim_next()
    assert store.delete(["a"]) == 0 and store.running()[0][1] == "a"


def jobs_fixture(store):
    store.put("done", PROMPT, extra_data={"extra_pnginfo": {"workflow": {"id": "wf1"}}})
    store.claim_next()
    finish(store, "done", outputs={"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "temp"},
                                                    {"filename": "b.png", "subfolder": "", "type": "output"}]}},
           start=1000, end=5000)
    store.put("failed", PROMPT)
    store.claim_next()
    finish(store, "failed", "error", start=1000, end=1100)
    store.put("cancelled", PROMPT)
    store.claim_next()
    finish(store, "cancelled", "interrupted", start=1000, end=3000)
    store.put("running", PROMPT, extra_data={"extra_pnginfo": {"workflow": {"id": "wf1"}}})
    store.claim_next()
    store.put("pending", PROMPT)


def test_jobs_lists_every_status_newest_first(store):
    jobs_fixture(store)
    result = store.jobs()
    assert [(j["id"], j["status"]) for j in result["jobs"]] == [
        ("pending", "pending"), ("running", "in_progress"), ("cancelled", "cancelled"), ("failed", "failed"),
        ("done", "completed")]
    assert result["pagination"] == {"offset": 0, "limit": None, "total": 5, "has_more": False}
    done = result["jobs"][-1]
    assert done["outputs_count"] == 2 and done["workflow_id"] == "wf1"
    assert done["preview_output"] == {"filename": "b.png", "subfolder": "", "type": "output", "nodeId": "9",
                                      "mediaType": "images"}
    assert (done["execution_start_time"], done["execution_end_time"]) == (1000, 5000)
    assert result["jobs"][3]["execution_error"]["exception_message"] == "boom"
    assert "execution_error" not in done and "preview_output" not in result["jobs"][0]


def test_jobs_filters_sorts_and_paginates(store):
    jobs_fixture(store)
    queue = store.jobs(statuses=["in_progress", "pending"])
    assert [j["id"] for j in queue["jobs"]] == ["pending", "running"]
    history = store.jobs(statuses=["completed", "failed", "cancelled"], sort_by="execution_duration",
                         sort_order="desc")
    assert [j["id"] for j in history["jobs"]] == ["done", "cancelled", "failed"]
    page = store.jobs(limit=2, offset=1, sort_order="asc")
    assert [j["id"] for j in page["jobs"]] == ["failed", "cancelled"]
    assert page["pagination"] == {"offset": 1, "limit": 2, "total": 5, "has_more": True}
    assert [j["id"] for j in store.jobs(workflow_id="wf1")["jobs"]] == ["running", "done"]
    assert store.jobs(statuses=[])["jobs"] == []


@pytest.mark.parametrize("kw", [{"statuses": ["done"]}, {"sort_by": "name"}, {"sort_order": "up"},
                                {"limit": 0}, {"offset": -1}])
def test_bad_jobs_parameters_raise_value_error(store, kw):
    with pytest.raises(ValueError):
        store.jobs(**kw)


def test_single_job_has_details(store):
    jobs_fixture(store)
    job = store.job("done")
    assert job["execution_status"]["status_str"] == "success"
    assert job["workflow"]["prompt"] == PROMPT and "9" in job["outputs"]
    assert store.job("pending")["status"] == "pending" and store.job("nope") is None


def test_store_survives_kill_dash_nine(path):
    """A real process is killed with SIGKILL while a prompt runs: nothing acknowledged is lost."""
    import os
    import signal
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from server.engine.queue import PromptStore\n"
        f"store = PromptStore({str(path)!r})\n"
        "for i in range(5):\n"
        "    store.put(f'p{i}', {'1': {'class_type': 'Const', 'inputs': {'value': i}}})\n"
        "store.claim_next()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    with PromptStore(path) as store:
        assert store.recovered == ["p0"]
        assert [item[1] for item in store.pending()] == ["p0", "p1", "p2", "p3", "p4"]


def test_requeue_puts_a_running_prompt_back_first(store):
    for pid in "abc":
        store.put(pid, PROMPT)
    store.claim_next()
    assert store.requeue("a") is True and store.requeue("b") is False  # b is pending, not running
    assert [item[1] for item in store.pending()] == ["a", "b", "c"] and store.running() == []
