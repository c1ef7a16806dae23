"""The prompt queue and history, persisted in SQLite so queued prompts survive a restart (even kill -9).

One table holds every prompt from queued to finished: status pending -> running -> success | error | interrupted.
SQLite runs in WAL mode and every change is one transaction, so a crash loses nothing that was acknowledged. A prompt
left 'running' by a crash goes back to the front of the pending queue when the store is reopened: it runs again,
once; a finished prompt never runs again.

Shapes are ComfyUI's:
  queue item     [number, prompt_id, prompt, extra_data, outputs_to_execute]  (pending sorted by number, then order)
  history entry  {prompt: <queue item>, outputs, status: {status_str, completed, messages}, meta} (meta: the web
                 layer fills it from the outputs; the column keeps what older versions stored)
  jobs           {jobs: [...], pagination: {offset, limit, total, has_more}} (GET /api/jobs)
Sensitive extra_data keys (ComfyUI's SENSITIVE_EXTRA_DATA_KEYS) are never written to disk: they are kept in memory
for the run only and merged back into the item `claim_next` returns.

Leases (a scheduler with several workers, server/cluster/): `claim(prompt_id, owner)` takes one pending prompt for a
worker; the row records the lease owner, how many leases it got (`attempts`) and how many of its workers were lost
(`lost`). `finish(..., owner=)` and `requeue(..., owner=)` only act while that owner still holds the lease, so a worker
declared lost that reports late changes nothing (nothing is recorded twice); the finished row keeps `ran_on`, the
worker that ran it (history entries and jobs show it as `worker`). Files from before leases are migrated in place
(new columns, PRAGMA user_version 1).

Thread-safe: one connection guarded by a lock (the worker and the HTTP handlers share the store).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
DEFAULT_MAX_HISTORY = 10_000

FinalStatus = Literal["success", "error", "interrupted"]
JobStatus = Literal["pending", "in_progress", "completed", "failed", "cancelled"]
JOB_STATUSES: dict[str, str] = {"pending": "pending", "in_progress": "running", "completed": "success",
                                "failed": "error", "cancelled": "interrupted"}
_JOB_OF = {stored: job for job, stored in JOB_STATUSES.items()}
_DONE = ("success", "error", "interrupted")
_PREVIEWABLE_MEDIA = frozenset({"images", "video", "audio"})
_THREE_D = (".obj", ".fbx", ".gltf", ".glb")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL UNIQUE,
    number NOT NULL,                -- no type: ints stay ints, floats stay floats (as the client sent them)
    status TEXT NOT NULL,           -- pending | running | success | error | interrupted
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    client_id TEXT,
    workflow_id TEXT,
    create_time INTEGER,
    start_time INTEGER,
    end_time INTEGER,
    done_seq INTEGER,               -- completion order (history order)
    outputs TEXT,
    messages TEXT,
    meta TEXT,
    outputs_count INTEGER,
    preview_output TEXT,
    execution_error TEXT,
    lease_owner TEXT,               -- the worker holding a running prompt (None: the in-process worker)
    attempts INTEGER NOT NULL DEFAULT 0,  -- leases given
    lost INTEGER NOT NULL DEFAULT 0,      -- workers lost while running it
    ran_on TEXT                     -- the worker whose run was recorded
);
CREATE INDEX IF NOT EXISTS prompts_queue ON prompts (status, number, seq);
CREATE INDEX IF NOT EXISTS prompts_done ON prompts (done_seq) WHERE done_seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
SCHEMA_VERSION = 1
_ADDED_COLUMNS = (  # (column, declaration) added after version 0: files written before get them by ALTER TABLE
    ("lease_owner", "TEXT"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("lost", "INTEGER NOT NULL DEFAULT 0"),
    ("ran_on", "TEXT"),
)


class DuplicatePromptId(ValueError):
    def __init__(self, prompt_id: str):
        super().__init__(f"a prompt with id {prompt_id!r} is already queued or in the history")
        self.prompt_id = prompt_id


class UnknownPrompt(KeyError):
    pass


@dataclass(frozen=True)
class QueueItem:
    """A claimed prompt, ready to run. `extra_data` has the sensitive keys merged back (memory only)."""

    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    client_id: str | None
    attempt: int = 1  # this lease's number (1 for the first run)
    lost: int = 0  # workers lost while running it before

    def as_list(self) -> list[Any]:
        """ComfyUI's queue item shape, without the sensitive keys."""
        public = {k: v for k, v in self.extra_data.items() if k not in SENSITIVE_EXTRA_DATA_KEYS}
        return [self.number, self.prompt_id, self.prompt, public, self.outputs_to_execute]


class PromptStore:
    """The persistent queue + history (see module docstring).

    path         the SQLite file (e.g. <user dir>/queue.sqlite3); ":memory:" works for throwaway use
    max_history  finished prompts kept; the oldest are dropped beyond it
    clock        wall clock in seconds
    """

    def __init__(self, path: str | Path, *, max_history: int = DEFAULT_MAX_HISTORY,
                 clock: Callable[[], float] = time.time):
        if max_history < 1:
            raise ValueError("max_history must be at least 1")
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.max_history = max_history
        self._clock = clock
        self._lock = threading.RLock()
        self._sensitive: dict[str, dict[str, Any]] = {}
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable across process crashes (kill -9)
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._migrate()
            self.recovered = self._recover()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> PromptStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- queue ------------------------------------------------------------------------------------------------
    def put(self, prompt_id: str, prompt: Mapping[str, Any], *, extra_data: Mapping[str, Any] | None = None,
            outputs_to_execute: Sequence[str] = (), client_id: str | None = None,
            number: int | float | None = None, front: bool = False) -> int | float:
        """Queue a prompt; returns its number (lower runs first). Without `number` the next counter value is used,
        negated when `front` (ComfyUI). `extra_data` is copied: client_id and create_time (ms) are added, the
        sensitive keys kept in memory only. Raises DuplicatePromptId."""
        extra = dict(extra_data or {})
        if client_id is not None:
            extra["client_id"] = client_id
        extra.setdefault("create_time", self._now_ms())
        sensitive = {k: extra.pop(k) for k in SENSITIVE_EXTRA_DATA_KEYS if k in extra}
        texts = _dumps(prompt, "prompt"), _dumps(extra, "extra_data"), _dumps(list(outputs_to_execute), "outputs")
        with self._lock, self._transaction():
            if self._db.execute("SELECT 1 FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone():
                raise DuplicatePromptId(prompt_id)
            if number is None:
                counter = self._bump("number")
                number = -counter if front else counter
            self._db.execute(
                "INSERT INTO prompts (prompt_id, number, status, prompt, extra_data, outputs_to_execute, client_id,"
                " workflow_id, create_time) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
                (prompt_id, number, *texts, extra.get("client_id"), _workflow_id(extra), extra.get("create_time")))
            if sensitive:
                self._sensitive[prompt_id] = sensitive
        return number

    def claim_next(self, owner: str | None = None) -> QueueItem | None:
        """Atomically take the first pending prompt (lowest number, then oldest) and mark it running (leased to
        `owner` when given)."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT * FROM prompts WHERE status = 'pending' ORDER BY number, seq LIMIT 1"
                                   ).fetchone()
            return None if row is None else self._lease(row, owner)

    def claim(self, prompt_id: str, owner: str) -> QueueItem | None:
        """Atomically lease one pending prompt to `owner` (a scheduler's choice); None if it is no longer pending
        (deleted or taken meanwhile)."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT * FROM prompts WHERE prompt_id = ? AND status = 'pending'",
                                   (prompt_id,)).fetchone()
            return None if row is None else self._lease(row, owner)

    def _lease(self, row: sqlite3.Row, owner: str | None) -> QueueItem:
        attempt = int(row["attempts"] or 0) + 1
        self._db.execute("UPDATE prompts SET status = 'running', start_time = ?, lease_owner = ?, attempts = ?"
                         " WHERE seq = ?", (self._now_ms(), owner, attempt, row["seq"]))
        extra = json.loads(row["extra_data"])
        extra.update(self._sensitive.get(row["prompt_id"], {}))
        return QueueItem(number=row["number"], prompt_id=row["prompt_id"], prompt=json.loads(row["prompt"]),
                         extra_data=extra, outputs_to_execute=json.loads(row["outputs_to_execute"]),
                         client_id=row["client_id"], attempt=attempt, lost=int(row["lost"] or 0))

    def finish(self, prompt_id: str, *, status: FinalStatus, outputs: Mapping[str, Any] | None = None,
               messages: Iterable[Sequence[Any]] = (), owner: str | None = None) -> bool:
        """Record a prompt's end (moves it to the history) and drop the oldest history beyond `max_history`.

        With `owner`: only while that worker holds the prompt's lease (it is running and leased to it); the row
        then records `ran_on = owner`. False (nothing written) for a stale report: the lease was lost and given to
        another worker, or the prompt already finished. Without `owner` the end is always recorded."""
        if status not in _DONE:
            raise ValueError(f"status must be one of {_DONE}, got {status!r}")
        outputs = dict(outputs or {})
        messages = [[event, dict(data)] for event, data in messages]
        start = end = None
        error = None
        for event, data in messages:
            if event == "execution_start":
                start = data.get("timestamp")
            elif event in ("execution_success", "execution_error", "execution_interrupted"):
                end = data.get("timestamp")
                if event == "execution_error":
                    error = data
        count, preview = outputs_summary(outputs)
        with self._lock, self._transaction():
            row = self._db.execute("SELECT start_time, status, lease_owner FROM prompts WHERE prompt_id = ?",
                                   (prompt_id,)).fetchone()
            if row is None:
                raise UnknownPrompt(prompt_id)
            if owner is not None and (row["status"] != "running" or row["lease_owner"] != owner):
                return False
            done = self._bump("done")
            self._db.execute(
                "UPDATE prompts SET status = ?, done_seq = ?, outputs = ?, messages = ?, start_time = ?,"
                " end_time = ?, outputs_count = ?, preview_output = ?, execution_error = ?, lease_owner = NULL,"
                " ran_on = ? WHERE prompt_id = ?",
                (status, done, _dumps(outputs, "outputs"), _dumps(messages, "messages"),
                 start if start is not None else row["start_time"], end if end is not None else self._now_ms(),
                 count, _dumps(preview, "preview") if preview else None, _dumps(error, "error") if error else None,
                 owner, prompt_id))
            self._db.execute(
                "DELETE FROM prompts WHERE done_seq <= (SELECT done_seq FROM prompts WHERE done_seq IS NOT NULL"
                " ORDER BY done_seq DESC LIMIT 1 OFFSET ?)", (self.max_history,))
            self._sensitive.pop(prompt_id, None)
        return True

    def pending(self, limit: int | None = None) -> list[list[Any]]:
        """Pending items in run order, ComfyUI's shape (the first `limit` when given)."""
        return self._items("SELECT * FROM prompts WHERE status = 'pending' ORDER BY number, seq"
                           + (f" LIMIT {int(limit)}" if limit is not None else ""))

    def pending_ids(self, limit: int | None = None) -> list[str]:
        """Ids of the pending prompts in run order (cheap: nothing is decoded)."""
        with self._lock:
            return [row[0] for row in self._db.execute(
                "SELECT prompt_id FROM prompts WHERE status = 'pending' ORDER BY number, seq"
                + (f" LIMIT {int(limit)}" if limit is not None else ""))]

    def prompt_of(self, prompt_id: str) -> dict[str, Any] | None:
        """A queued or finished prompt's API prompt (None if unknown)."""
        with self._lock:
            row = self._db.execute("SELECT prompt FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def leases(self) -> dict[str, str | None]:
        """Running prompts and the worker holding each (None: the in-process worker)."""
        with self._lock:
            return {row[0]: row[1] for row in self._db.execute(
                "SELECT prompt_id, lease_owner FROM prompts WHERE status = 'running' ORDER BY seq")}

    def running(self) -> list[list[Any]]:
        return self._items("SELECT * FROM prompts WHERE status = 'running' ORDER BY seq")

    def queue_remaining(self) -> int:
        """Pending + running prompts (ComfyUI's exec_info.queue_remaining)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM prompts WHERE status IN ('pending', 'running')"
                                    ).fetchone()[0]

    def status_of(self, prompt_id: str) -> str | None:
        """'pending', 'running', 'success', 'error', 'interrupted', or None if unknown."""
        with self._lock:
            row = self._db.execute("SELECT status FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
            return row[0] if row else None

    def delete(self, prompt_ids: Iterable[str]) -> int:
        """Remove pending prompts (running or finished ones are left alone); returns how many were removed."""
        ids = list(prompt_ids)
        with self._lock, self._transaction():
            removed = self._delete_where("status = 'pending'", ids)
        return removed

    def clear_pending(self) -> int:
        with self._lock, self._transaction():
            ids = [r[0] for r in self._db.execute("SELECT prompt_id FROM prompts WHERE status = 'pending'")]
            return self._delete_where("status = 'pending'", ids)

    # ---- history ------------------------------------------------------------------------------------------------
    def history(self, max_items: int | None = None, offset: int | None = None) -> dict[str, Any]:
        """Finished prompts, oldest first, as {prompt_id: entry}. ComfyUI semantics: `max_items` without an
        offset (or with a negative one) gives the last N; with an offset, N entries from that offset."""
        if max_items is not None and max_items < 0:
            raise ValueError("max_items must be >= 0")
        with self._lock:
            if offset is None or offset < 0:
                total = self._db.execute("SELECT COUNT(*) FROM prompts WHERE done_seq IS NOT NULL").fetchone()[0]
                offset = max(total - max_items, 0) if max_items is not None else 0
            rows = self._db.execute("SELECT * FROM prompts WHERE done_seq IS NOT NULL ORDER BY done_seq"
                                    " LIMIT ? OFFSET ?", (-1 if max_items is None else max_items, offset)
                                    ).fetchall()
        return {row["prompt_id"]: _history_entry(row) for row in rows}

    def history_entry(self, prompt_id: str) -> dict[str, Any]:
        """{prompt_id: entry}, or {} if the prompt is not in the history (ComfyUI answers {} with 200)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM prompts WHERE prompt_id = ? AND done_seq IS NOT NULL",
                                   (prompt_id,)).fetchone()
        return {prompt_id: _history_entry(row)} if row else {}

    def delete_history(self, prompt_ids: Iterable[str]) -> int:
        ids = list(prompt_ids)
        with self._lock, self._transaction():
            return self._delete_where("done_seq IS NOT NULL", ids)

    def clear_history(self) -> int:
        with self._lock, self._transaction():
            return self._db.execute("DELETE FROM prompts WHERE done_seq IS NOT NULL").rowcount

    # ---- jobs (GET /api/jobs) -------------------------------------------------------------------------------------
    def jobs(self, *, statuses: Iterable[str] | None = None, sort_by: str = "created_at", sort_order: str = "desc",
             limit: int | None = None, offset: int = 0, workflow_id: str | None = None) -> dict[str, Any]:
        """{jobs: [...], pagination: {offset, limit, total, has_more}}. Raises ValueError on bad parameters
        (the route answers 400). statuses: pending | in_progress | completed | failed | cancelled."""
        wanted = list(JOB_STATUSES) if statuses is None else list(statuses)
        unknown = [s for s in wanted if s not in JOB_STATUSES]
        if unknown:
            raise ValueError(f"unknown job status {unknown[0]!r}; use {', '.join(JOB_STATUSES)}")
        if sort_by not in ("created_at", "execution_duration"):
            raise ValueError("sort_by must be created_at or execution_duration")
        if sort_order not in ("asc", "desc"):
            raise ValueError("sort_order must be asc or desc")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError("limit must be a positive integer")
        if not isinstance(offset, int) or offset < 0:
            raise ValueError("offset must be a non-negative integer")
        stored = [JOB_STATUSES[s] for s in dict.fromkeys(wanted)]
        where = f"status IN ({', '.join('?' * len(stored))})" if stored else "0"
        args: list[Any] = list(stored)
        if workflow_id:
            where += " AND workflow_id = ?"
            args.append(workflow_id)
        direction = "DESC" if sort_order == "desc" else "ASC"
        if sort_by == "created_at":
            order = f"COALESCE(create_time, 0) {direction}, seq {direction}"
        else:
            order = (f"(CASE WHEN start_time IS NOT NULL AND end_time IS NOT NULL AND status IN {_DONE}"
                     f" THEN end_time - start_time ELSE 0 END) {direction}, seq {direction}")
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM prompts WHERE {where}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT * FROM prompts WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                                    [*args, -1 if limit is None else limit, offset]).fetchall()
        jobs = [_job(row) for row in rows]
        return {"jobs": jobs, "pagination": {"offset": offset, "limit": limit, "total": total,
                                             "has_more": offset + len(jobs) < total}}

    def job(self, prompt_id: str) -> dict[str, Any] | None:
        """One job with its details (outputs, execution_status, workflow) or None (the route answers 404)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return _job(row, details=True) if row else None

    # ---- internals ------------------------------------------------------------------------------------------------
    def requeue(self, prompt_id: str, *, owner: str | None = None, lost: bool = False) -> bool:
        """Put a running prompt back at the front of the queue (the server stops while it runs, or its worker was
        lost: `lost` counts that against the prompt); True if it was running (and leased to `owner`, when given).
        """
        with self._lock, self._transaction():
            row = self._db.execute("SELECT seq, number, lease_owner FROM prompts WHERE prompt_id = ? AND"
                                   " status = 'running'", (prompt_id,)).fetchone()
            if row is None or (owner is not None and row["lease_owner"] != owner):
                return False
            self._to_front(row)
            if lost:
                self._db.execute("UPDATE prompts SET lost = lost + 1 WHERE seq = ?", (row["seq"],))
        return True

    def _migrate(self) -> None:
        """Bring a file written by an older version up to SCHEMA_VERSION (columns added in place)."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        with self._transaction():
            present = {row[1] for row in self._db.execute("PRAGMA table_info(prompts)")}
            for column, declaration in _ADDED_COLUMNS:
                if column not in present:
                    self._db.execute(f"ALTER TABLE prompts ADD COLUMN {column} {declaration}")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _recover(self) -> list[str]:
        """Prompts left running by a crash go back to the front of the queue; returns their ids."""
        with self._transaction():
            rows = self._db.execute("SELECT seq, prompt_id, number FROM prompts WHERE status = 'running'"
                                    " ORDER BY seq DESC").fetchall()
            for row in rows:
                self._to_front(row)
        return [row["prompt_id"] for row in reversed(rows)]

    def _to_front(self, row: sqlite3.Row) -> None:
        first = self._db.execute("SELECT MIN(number) FROM prompts WHERE status IN ('pending', 'running')"
                                 " AND seq != ?", (row["seq"],)).fetchone()[0]
        number = row["number"] if first is None or row["number"] < first else first - 1
        self._db.execute("UPDATE prompts SET status = 'pending', number = ?, start_time = NULL, lease_owner = NULL"
                         " WHERE seq = ?", (number, row["seq"]))

    def _bump(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        value = row[0] if row else 0
        self._db.execute("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (name, value + 1))
        return value

    def _delete_where(self, condition: str, ids: list[str]) -> int:
        removed = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            removed += self._db.execute(f"DELETE FROM prompts WHERE {condition} AND prompt_id IN"
                                        f" ({', '.join('?' * len(chunk))})", chunk).rowcount
        for prompt_id in ids:
            if self.status_of(prompt_id) is None:
                self._sensitive.pop(prompt_id, None)
        return removed

    def _items(self, query: str) -> list[list[Any]]:
        with self._lock:
            rows = self._db.execute(query).fetchall()
        return [_queue_item(row) for row in rows]

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); nested use joins the outer transaction."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.outer = False

    def __enter__(self) -> None:
        self.outer = not self.db.in_transaction
        if self.outer:
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if not self.outer:
            return
        if kind is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


# ---- shapes -------------------------------------------------------------------------------------------------------
def _queue_item(row: sqlite3.Row) -> list[Any]:
    return [row["number"], row["prompt_id"], json.loads(row["prompt"]), json.loads(row["extra_data"]),
            json.loads(row["outputs_to_execute"])]


def _history_entry(row: sqlite3.Row) -> dict[str, Any]:
    status = row["status"]
    entry = {"prompt": _queue_item(row), "outputs": json.loads(row["outputs"] or "{}"),
             "status": {"status_str": "success" if status == "success" else "error",
                        "completed": status == "success", "messages": json.loads(row["messages"] or "[]")},
             "meta": json.loads(row["meta"] or "{}")}
    if row["ran_on"] is not None:
        entry["worker"] = row["ran_on"]
    return entry


def _job(row: sqlite3.Row, *, details: bool = False) -> dict[str, Any]:
    status = row["status"]
    done = status in _DONE
    job = {"id": row["prompt_id"], "status": _JOB_OF[status], "priority": row["number"],
           "create_time": row["create_time"],
           "execution_start_time": row["start_time"] if status != "pending" else None,
           "execution_end_time": row["end_time"] if done else None,
           "execution_error": json.loads(row["execution_error"]) if row["execution_error"] else None,
           "outputs_count": row["outputs_count"] if done else 0,
           "preview_output": json.loads(row["preview_output"]) if row["preview_output"] else None,
           "workflow_id": row["workflow_id"], "worker": row["ran_on"] if done else row["lease_owner"]}
    job = {k: v for k, v in job.items() if v is not None}
    if details and done:
        entry = _history_entry(row)
        job.update(outputs=entry["outputs"], execution_status=entry["status"],
                   workflow={"prompt": entry["prompt"][2], "extra_data": entry["prompt"][3]})
    elif details:
        job["workflow"] = {"prompt": json.loads(row["prompt"]), "extra_data": json.loads(row["extra_data"])}
    return job


def outputs_summary(outputs: Mapping[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """(number of output items, the preview to show): ComfyUI's jobs rules -- the first previewable item of type
    'output', else the first previewable item."""
    count = 0
    preview = fallback = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, Mapping):
            continue
        for media, items in node_outputs.items():
            if media == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, Mapping):
                    continue
                count += 1
                if preview is None and _previewable(media, item):
                    enriched = {**item, "nodeId": node_id, "mediaType": media}
                    if item.get("type") == "output":
                        preview = enriched
                    elif fallback is None:
                        fallback = enriched
    return count, preview or fallback


def _previewable(media: str, item: Mapping[str, Any]) -> bool:
    if media in _PREVIEWABLE_MEDIA:
        return True
    fmt = str(item.get("format", ""))
    return fmt.startswith(("video/", "audio/")) or str(item.get("filename", "")).lower().endswith(_THREE_D)


def _workflow_id(extra: Mapping[str, Any]) -> str | None:
    info = extra.get("extra_pnginfo")
    workflow = info.get("workflow") if isinstance(info, Mapping) else None
    ident = workflow.get("id") if isinstance(workflow, Mapping) else None
    return ident if isinstance(ident, str) else None


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} cannot be stored as JSON: {exc}") from exc
