"""Leases in the SQLite store (the cluster's scheduler): claim by id, the owner fences late results, lost workers
count, "ran on" is recorded, and a file from before leases is migrated in place."""

import sqlite3

from server.engine.queue import SCHEMA_VERSION, PromptStore

PROMPT = {"1": {"class_type": "Const", "inputs": {"value": 1}}}
DONE = [("execution_start", {"timestamp": 1}), ("execution_success", {"timestamp": 2})]


def test_a_prompt_is_leased_by_id_once(tmp_path):
    with PromptStore(tmp_path / "q.sqlite3") as store:
        store.put("a", PROMPT)
        store.put("b", PROMPT)
        item = store.claim("b", "w1")
        assert item.prompt_id == "b" and item.attempt == 1 and item.lost == 0
        assert store.claim("b", "w2") is None  # already running
        assert store.leases() == {"b": "w1"}
        assert [i[1] for i in store.pending()] == ["a"]
        assert store.claim("nope", "w1") is None


def test_only_the_lease_owner_records_the_result_and_it_is_recorded_as_ran_on(tmp_path):
    with PromptStore(tmp_path / "q.sqlite3") as store:
        store.put("a", PROMPT)
        store.claim("a", "w1")
        assert store.requeue("a", owner="w2", lost=True) is False  # not w2's lease
        assert store.requeue("a", owner="w1", lost=True) is True  # w1 was lost
        item = store.claim("a", "w2")
        assert (item.attempt, item.lost) == (2, 1)
        assert store.finish("a", status="success", messages=DONE, owner="w1") is False  # late: w1 lost its lease
        assert store.status_of("a") == "running"
        assert store.finish("a", status="success", messages=DONE, owner="w2") is True
        assert store.finish("a", status="success", messages=DONE, owner="w2") is False  # no second record
        entry = store.history_entry("a")["a"]
        assert entry["worker"] == "w2" and entry["status"]["completed"]
        assert store.job("a")["worker"] == "w2"


def test_the_local_worker_records_no_worker_name(tmp_path):
    with PromptStore(tmp_path / "q.sqlite3") as store:
        store.put("a", PROMPT)
        store.claim_next()
        assert store.finish("a", status="success", messages=DONE) is True
        assert "worker" not in store.history_entry("a")["a"]


def test_a_leased_prompt_left_running_by_a_crash_is_queued_again_without_its_lease(tmp_path):
    path = tmp_path / "q.sqlite3"
    store = PromptStore(path)
    store.put("a", PROMPT)
    store.claim("a", "w1")
    store._db.close()  # the process dies
    with PromptStore(path) as reopened:
        assert reopened.recovered == ["a"] and reopened.leases() == {}
        assert reopened.claim("a", "w2").attempt == 2


def test_a_queue_file_from_before_leases_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE prompts (seq INTEGER PRIMARY KEY AUTOINCREMENT, prompt_id TEXT NOT NULL UNIQUE, number NOT NULL,
            status TEXT NOT NULL, prompt TEXT NOT NULL, extra_data TEXT NOT NULL, outputs_to_execute TEXT NOT NULL,
            client_id TEXT, workflow_id TEXT, create_time INTEGER, start_time INTEGER, end_time INTEGER,
            done_seq INTEGER, outputs TEXT, messages TEXT, meta TEXT, outputs_count INTEGER, preview_output TEXT,
            execution_error TEXT);
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO prompts (prompt_id, number, status, prompt, extra_data, outputs_to_execute)
            VALUES ('old', 0, 'pending', '{}', '{}', '[]');
        INSERT INTO prompts (prompt_id, number, status, prompt, extra_data, outputs_to_execute, done_seq, outputs,
            messages) VALUES ('done', 1, 'success', '{}', '{}', '[]', 0, '{}', '[]');
        INSERT INTO counters VALUES ('number', 2), ('done', 1);
    """)
    db.close()
    with PromptStore(path) as store:
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "worker" not in store.history_entry("done")["done"]
        item = store.claim("old", "w1")
        assert item.attempt == 1
        assert store.finish("old", status="success", messages=DONE, owner="w1")
        assert store.history_entry("old")["old"]["worker"] == "w1"
    with PromptStore(path) as again:  # migrating twice changes nothing
        assert again.history_entry("old")["old"]["worker"] == "w1"
