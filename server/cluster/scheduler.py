"""The head's scheduler: leases queued prompts from the SQLite store to workers and records what they did.

It is the engine's PromptRunner (server/engine/runner.py) when the server runs with `--ray`: the routes, the
websocket and the app call it as they call the local worker thread. The store stays the source of truth: a prompt is
leased there (`claim(prompt_id, worker)`), recorded there (`finish(..., owner=worker)`), and a prompt whose worker is
lost goes back there (`requeue(..., lost=True)`).

One thread per worker (a "slot") talks to it through a WorkerLink (server/cluster/link.py: a Ray actor handle, or a
WorkerCore in this process for tests), so a slow or dead worker never holds up the others:

  starting  hello() until the worker process is up (its own compose(): registry, model manager, executor)
  idle      every `tick` it looks at the queue's first `lookahead` prompts and asks the policy (policy.py) which one
            to take: model affinity, no prompt whose model file it lacks, no starvation; every `status_every`
            seconds a status() heartbeat refreshes the models it holds and has (and notices a dead process)
  running   begin(job), then poll() until the result: each poll brings the engine events emitted meanwhile, which go
            to the head's EventSink (the websocket hub) exactly as a local run's; `executed` files are written into
            the head's folders first (outputs.py). The final event is held until the history is written.
  dead      its process died, its machine went away, or it stayed silent for `hang_timeout` seconds while running

Faults: a prompt whose worker is lost goes back to the front of the queue and is leased again (to whichever worker
is free: the lost one is dead); a prompt that loses a second worker ends with an error that says so. A lost worker
that reports late cannot record anything: the store only accepts a result from the lease's owner. Interrupt goes to
the worker running the prompt. A worker added later (add_worker) starts taking prompts as soon as it says hello.
A prompt naming a model file that no live worker has fails at once with an error naming the file.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nodes.registry import Registry
from server.cluster.outputs import OutputLanding
from server.cluster.policy import Candidate, WorkerView, choose
from server.cluster.refs import ClusterListing, PromptFiles, model_folders, model_ref, prompt_files
from server.engine.events import EventSink, Executing, ExecutionError, ExecutionStart, QueueStatus
from server.engine.queue import PromptStore, QueueItem
from server.engine.runner import Running, WorkerInfo
from server.engine.worker import TrackingSink

log = logging.getLogger(__name__)
MAX_INPUT_BYTES = 256 * 1024 * 1024


class WorkerLost(Exception):
    """The worker's process is gone (killed, out of memory, machine down) or stopped answering."""


class WorkerLink(Protocol):
    """The head's handle on one worker (see server/cluster/core.py for what each call does)."""

    id: str

    def hello(self, timeout: float) -> dict[str, Any]: ...

    def status(self, folders: Sequence[str]) -> dict[str, Any]: ...

    def begin(self, job: dict[str, Any]) -> None: ...

    def poll(self, wait: float) -> dict[str, Any]: ...

    def interrupt(self, prompt_id: str | None) -> None: ...

    def free(self, unload_models: bool, free_memory: bool) -> None: ...

    def kill(self) -> None: ...


@dataclass(frozen=True)
class SchedulerOptions:
    """affinity_wait  seconds an idle worker leaves a prompt to a busy worker that holds its model
    max_skips      times a prompt may be passed over by affinity before it is taken in queue order
    lookahead      pending prompts considered at once
    max_lost       workers a prompt may lose; the last loss ends it with an error (2: leased again once)
    tick           seconds between an idle worker's looks at the queue (it is also woken on every change)
    status_every   seconds between an idle worker's heartbeats
    poll_wait      seconds a poll waits on the worker for events
    start_timeout  seconds a worker may take to start"""

    affinity_wait: float = 5.0
    max_skips: int = 4
    lookahead: int = 64
    max_lost: int = 2
    tick: float = 0.25
    status_every: float = 2.0
    poll_wait: float = 0.25
    start_timeout: float = 300.0


@dataclass
class _Job:
    item: QueueItem
    files: PromptFiles
    node: str | None = None
    cancelled: bool = False
    leased_at: float = 0.0


@dataclass
class _Slot:
    link: WorkerLink
    id: str
    state: str = "starting"
    host: str = ""
    pid: int | None = None
    device: str = ""
    threads: int | None = None
    shared_output: bool = False
    held: frozenset[str] = frozenset()
    files: frozenset[str] | None = None
    loads: int = 0
    prompts_done: int = 0
    error: str | None = None
    job: _Job | None = None
    idle_since: float = 0.0
    last_status: float = 0.0
    free_flags: tuple[bool, bool] = (False, False)
    thread: threading.Thread | None = None

    def view(self) -> WorkerView:
        return WorkerView(self.id, self.state == "idle", self.held, self.files)


@dataclass
class _Stats:
    overhead: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    wall: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


class Scheduler:
    """The cluster's PromptRunner (see module docstring).

    store     the PromptStore (source of truth)
    registry  the head's registry: which inputs name model files and input images
    events    the head's EventSink (the websocket hub)
    folders   the head's folders: input images to send, outputs to land
    listing   the head registry's file listing, told each worker's model files (None: leave the registry alone)
    on_stop   called once the slots stopped (the backend shuts its workers and runtime down)
    on_dead   called with a worker's id when it is found dead (not while stopping): the backend may start a
              replacement
    """

    mode = "ray"

    def __init__(self, *, store: PromptStore, registry: Registry, events: EventSink, folders: Any,
                 options: SchedulerOptions = SchedulerOptions(), listing: ClusterListing | None = None,
                 on_stop: Callable[[], None] | None = None, on_dead: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time, mode: str = "ray"):
        self.store = store
        self.registry = registry
        self.events = events
        self.folders = folders
        self.options = options
        self.listing = listing
        self.on_stop = on_stop
        self.on_dead = on_dead
        self.clock = clock
        self.mode = mode
        self.landing = OutputLanding(folders)
        self.folders_to_list = model_folders(registry)
        self._cond = threading.Condition(threading.RLock())
        self._slots: dict[str, _Slot] = {}
        self._refs: dict[str, PromptFiles] = {}
        self._skips: dict[str, int] = {}
        self._lost_on: dict[str, list[str]] = {}
        self._started = False
        self._stopping = False
        self._stopped = False
        self._stats = _Stats()
        self.cluster: Any = None  # the backend (RayCluster), for the CLI's banner

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._started and not self._stopping:
                return
            self._started, self._stopping, self._stopped = True, False, False
            slots = list(self._slots.values())
        for slot in slots:
            self._start_slot(slot)

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop every slot: running prompts are interrupted and go back to the front of the queue."""
        with self._cond:
            if self._stopped:
                return True
            self._stopping = True
            running = [(s, s.job.item.prompt_id) for s in self._slots.values() if s.job is not None]
            self._cond.notify_all()
        for slot, prompt_id in running:
            _quietly(slot.link.interrupt, prompt_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        stopped = True
        for slot in list(self._slots.values()):
            if slot.thread is not None:
                slot.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                stopped = stopped and not slot.thread.is_alive()
        with self._cond:
            self._stopped = True
        if self.on_stop is not None:
            try:
                self.on_stop()
            except Exception:
                log.exception("the cluster did not shut down cleanly")
        return stopped

    @property
    def alive(self) -> bool:
        return self._started and not self._stopping

    def add_worker(self, link: WorkerLink) -> None:
        """A new worker (at start or joining later): it takes prompts once it has said hello."""
        with self._cond:
            if link.id in self._slots and self._slots[link.id].state != "dead":
                raise ValueError(f"worker {link.id} is already known")
            slot = _Slot(link=link, id=link.id, idle_since=time.monotonic())
            self._slots[link.id] = slot
            started = self._started and not self._stopping
        if started:
            self._start_slot(slot)

    def _start_slot(self, slot: _Slot) -> None:
        if slot.thread is not None and slot.thread.is_alive():
            return
        slot.thread = threading.Thread(target=self._slot_main, args=(slot,), daemon=True,
                                       name=f"chisel-slot-{slot.id}")
        slot.thread.start()

    # ---- PromptRunner ---------------------------------------------------------------------------------------------
    def enqueue(self, prompt: Mapping[str, Any], *, outputs_to_execute: Sequence[str],
                extra_data: Mapping[str, Any] | None = None, client_id: str | None = None,
                prompt_id: str | None = None, number: int | float | None = None, front: bool = False
                ) -> tuple[str, int | float]:
        prompt_id = prompt_id or str(uuid.uuid4())
        number = self.store.put(prompt_id, prompt, extra_data=extra_data, outputs_to_execute=outputs_to_execute,
                                client_id=client_id, number=number, front=front)
        self.broadcast_status()
        self.wake()
        return prompt_id, number

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        with self._cond:
            targets = [s for s in self._slots.values()
                       if s.job is not None and (prompt_id is None or s.job.item.prompt_id == prompt_id)]
            for slot in targets:
                slot.job.cancelled = True  # type: ignore[union-attr]
            calls = [(s.link, s.job.item.prompt_id) for s in targets]  # type: ignore[union-attr]
        for link, running_id in calls:
            _quietly(link.interrupt, running_id)
        return bool(calls)

    def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        with self._cond:
            for slot in self._slots.values():
                old = slot.free_flags
                slot.free_flags = (old[0] or unload_models, old[1] or free_memory)
            self._cond.notify_all()

    def running_prompts(self) -> list[Running]:
        with self._cond:
            return [Running(s.job.item.prompt_id, s.job.item.client_id, s.job.node, s.id)
                    for s in self._slots.values() if s.job is not None]

    def running(self) -> Running | None:
        running = self.running_prompts()
        return running[0] if running else None

    def queue_remaining(self) -> int:
        return self.store.queue_remaining()

    def broadcast_status(self) -> None:
        self.events.emit(QueueStatus(self.store.queue_remaining()), client_id=None)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                busy = any(s.job is not None for s in self._slots.values())
            if not busy and self.store.queue_remaining() == 0:
                return True
            time.sleep(0.05)
        return False

    def workers(self) -> list[WorkerInfo]:
        with self._cond:
            return [WorkerInfo(id=s.id, host=s.host, pid=s.pid, device=s.device, state=s.state,  # type: ignore
                               prompt_id=s.job.item.prompt_id if s.job is not None else None,
                               models=tuple(sorted(s.held)), prompts_done=s.prompts_done, error=s.error,
                               extra={"model_loads": s.loads, "threads": s.threads,
                                      "shared_output": s.shared_output})
                    for s in self._slots.values()]

    def stats(self) -> dict[str, Any]:
        """Per-prompt times on the head: wall (lease to history written) and overhead (wall minus the worker's own
        execution time), in seconds."""
        with self._cond:
            return {"wall": list(self._stats.wall), "overhead": list(self._stats.overhead)}

    # ---- a slot's thread ------------------------------------------------------------------------------------------
    def _slot_main(self, slot: _Slot) -> None:
        try:
            info = slot.link.hello(self.options.start_timeout)
        except Exception as exc:
            self._mark_dead(slot, f"did not start: {exc}")
            _quietly(slot.link.kill)
            return
        with self._cond:
            slot.host = str(info.get("host", ""))
            slot.pid = info.get("pid")
            slot.device = str(info.get("device", ""))
            slot.threads = info.get("threads")
            slot.shared_output = bool(info.get("shared_output"))
        if not self._heartbeat(slot):
            return
        with self._cond:
            if slot.state == "starting":
                slot.state = "idle"
                slot.idle_since = time.monotonic()
            self._cond.notify_all()
        log.info("worker %s joined: %s pid %s, %s", slot.id, slot.host, slot.pid, slot.device)
        while True:
            action, item = self._next_action(slot)
            if action == "stop":
                return
            if action == "free":
                flags = slot.free_flags
                with self._cond:
                    slot.free_flags = (False, False)
                try:
                    slot.link.free(*flags)
                except Exception as exc:
                    self._mark_dead(slot, str(exc))
                    return
            elif action == "status":
                if not self._heartbeat(slot):
                    return
            elif item is not None:
                self._run(slot, item)
                if slot.state == "dead":
                    return

    def _next_action(self, slot: _Slot) -> tuple[str, QueueItem | None]:
        with self._cond:
            while True:
                if self._stopping or slot.state == "dead":
                    return "stop", None
                if any(slot.free_flags):
                    return "free", None
                if time.monotonic() - slot.last_status >= self.options.status_every:
                    return "status", None
                item = self._claim_for(slot)
                if item is not None:
                    return "run", item
                self._cond.wait(self.options.tick)

    def _heartbeat(self, slot: _Slot) -> bool:
        try:
            status = slot.link.status(self.folders_to_list)
        except Exception as exc:
            self._mark_dead(slot, str(exc))
            _quietly(slot.link.kill)
            return False
        inventory = {folder: frozenset(names) for folder, names in (status.get("inventory") or {}).items()}
        with self._cond:
            slot.last_status = time.monotonic()
            slot.held = frozenset(status.get("held") or ())
            slot.loads = int(status.get("loads") or 0)
            slot.files = frozenset(model_ref(folder, name) for folder, names in inventory.items() for name in names)
            self._cond.notify_all()
        if self.listing is not None:
            self.listing.update(slot.id, inventory)
        return True

    # ---- choosing ---------------------------------------------------------------------------------------------------
    def _claim_for(self, slot: _Slot) -> QueueItem | None:
        """Under the lock: the prompt `slot` takes now (leased in the store), or None."""
        pending = self.store.pending_ids(limit=self.options.lookahead)
        if not pending:
            self._refs.clear()
            self._skips.clear()
            return None
        candidates = []
        window = set(pending)
        for prompt_id in pending:
            files = self._refs.get(prompt_id)
            if files is None:  # each prompt is read and looked at once while it waits
                files = self._refs[prompt_id] = prompt_files(self.store.prompt_of(prompt_id) or {}, self.registry)
            candidates.append(Candidate(prompt_id, files.models, self._skips.get(prompt_id, 0)))
        for stale in [p for p in self._refs if p not in window]:
            self._refs.pop(stale, None)
            self._skips.pop(stale, None)
        live = [s for s in self._slots.values() if s.state in ("idle", "running")]
        if live and all(s.files is not None for s in live) \
                and not any(s.state == "starting" for s in self._slots.values()):
            views = [s.view() for s in live]
            for candidate in [c for c in candidates if not any(v.can_run(c) for v in views)]:
                self._fail_unrunnable(candidate, live)
                candidates.remove(candidate)
        others = [s.view() for s in live if s is not slot]
        recent = list(self._stats.wall)[-20:]
        choice = choose(slot.view(), candidates, others, idle_for=time.monotonic() - slot.idle_since,
                        affinity_wait=self.options.affinity_wait, max_skips=self.options.max_skips,
                        expected_run=statistics.median(recent) if recent else 0.0)
        if choice is None:
            return None
        item = self.store.claim(choice.prompt_id, slot.id)
        if item is None:  # deleted meanwhile
            return None
        view = slot.view()
        for candidate in candidates:
            if candidate.prompt_id == choice.prompt_id:
                break
            if view.can_run(candidate):
                self._skips[candidate.prompt_id] = candidate.skips + 1
        self._skips.pop(choice.prompt_id, None)
        slot.state = "running"
        files = self._refs.pop(choice.prompt_id, None) or prompt_files(item.prompt, self.registry)
        slot.job = _Job(item=item, files=files, leased_at=time.monotonic())
        return item

    def _fail_unrunnable(self, candidate: Candidate, live: list[_Slot]) -> None:
        """A prompt naming a model file no live worker has: it ends now, with an error naming the file."""
        absent = sorted(ref for ref in candidate.models if not any(s.files is not None and ref in s.files
                                                                   for s in live))
        item = self.store.claim(candidate.prompt_id, "scheduler")
        if item is None:
            return
        names = ", ".join(absent)
        message = (f"No worker has the model file{'s' if len(absent) > 1 else ''} {names} (workers: "
                   f"{', '.join(s.id for s in live)}). Put it in each worker machine's models folder under the same "
                   f"name, or join a machine that has it with `chisel worker --ray ADDRESS`.")
        self._end_with_error(item, "scheduler", message, "server.cluster.MissingModelFile")
        self._cond.notify_all()

    # ---- running ----------------------------------------------------------------------------------------------------
    def _run(self, slot: _Slot, item: QueueItem) -> None:
        job = slot.job
        assert job is not None
        sink = TrackingSink(self.events, lambda node: self._on_node(slot, node))
        self.broadcast_status()
        payload = {"prompt_id": item.prompt_id, "prompt": item.prompt, "extra_data": item.extra_data,
                   "outputs_to_execute": item.outputs_to_execute, "client_id": item.client_id,
                   "models": sorted(job.files.models), "inputs": self._input_files(job.files.inputs)}
        result: dict[str, Any] | None = None
        try:
            slot.link.begin(payload)
            stop_sent = False
            while result is None:
                if self._stopping and not stop_sent:
                    _quietly(slot.link.interrupt, item.prompt_id)
                    stop_sent = True
                batch = slot.link.poll(self.options.poll_wait)
                for event, client_id, files in batch.get("events") or ():
                    sink.emit(self.landing.land_event(slot.id, event, files), client_id=client_id)
                result = batch.get("result")
        except Exception as exc:
            self._lost(slot, item, exc)
            return
        self._record(slot, item, result, sink)

    def _record(self, slot: _Slot, item: QueueItem, result: Mapping[str, Any], sink: TrackingSink) -> None:
        status = result.get("status", "error")
        outputs = self.landing.rewrite(slot.id, result.get("outputs") or {})
        messages = [(event.name, event.fields()) for event in result.get("messages") or ()]
        with self._cond:
            cancelled = slot.job is not None and slot.job.cancelled
        try:
            if status == "interrupted" and self._stopping and not cancelled:
                self.store.requeue(item.prompt_id, owner=slot.id)
            elif not self.store.finish(item.prompt_id, status=status, outputs=outputs, messages=messages,
                                       owner=slot.id):
                log.warning("worker %s finished %s after its lease ended; the result is not recorded", slot.id,
                            item.prompt_id)
        except Exception:
            log.exception("could not record the end of prompt %s", item.prompt_id)
        sink.release()
        with self._cond:
            job = slot.job
            if job is not None:
                wall = time.monotonic() - job.leased_at
                self._stats.wall.append(wall)
                self._stats.overhead.append(max(0.0, wall - float(result.get("duration") or 0.0)))
            slot.job = None
            slot.state = "idle" if slot.state == "running" else slot.state
            slot.idle_since = time.monotonic()
            slot.prompts_done = int(result.get("prompts_done") or slot.prompts_done + 1)
            slot.held = frozenset(result.get("held") or ())
            slot.loads = int(result.get("loads") or slot.loads)
            self._lost_on.pop(item.prompt_id, None)
            self._cond.notify_all()
        self.broadcast_status()
        self.events.emit(Executing(None, item.prompt_id), client_id=item.client_id)

    def _lost(self, slot: _Slot, item: QueueItem, exc: BaseException) -> None:
        reason = str(exc) or type(exc).__name__
        self._mark_dead(slot, reason)
        _quietly(slot.link.kill)
        if self._stopping:  # shutting down: not the prompt's fault
            self.store.requeue(item.prompt_id, owner=slot.id)
            return
        lost_on = self._lost_on.setdefault(item.prompt_id, [])
        lost_on.append(slot.id)
        if item.lost + 1 >= self.options.max_lost:
            workers = ", ".join(lost_on) if len(lost_on) > 1 else f"{slot.id} and one before it"
            message = (f"The prompt was not completed: its worker was lost {item.lost + 1} times ({workers}); the "
                       f"last one: {reason}. It was not run again.")
            log.error("prompt %s: %s", item.prompt_id, message)
            self._end_with_error(item, slot.id, message, "server.cluster.WorkerLost")
            self._lost_on.pop(item.prompt_id, None)
        else:
            log.warning("worker %s was lost while running prompt %s (%s); the prompt is leased again", slot.id,
                        item.prompt_id, reason)
            self.store.requeue(item.prompt_id, owner=slot.id, lost=True)
            self.broadcast_status()
        with self._cond:
            self._cond.notify_all()

    def _end_with_error(self, item: QueueItem, owner: str, message: str, kind: str) -> None:
        now = int(self.clock() * 1000)
        start = ExecutionStart(item.prompt_id, now)
        error = ExecutionError(prompt_id=item.prompt_id, node_id=None, node_type=None, executed=(),
                               exception_message=message, exception_type=kind, traceback=(), current_inputs={},
                               current_outputs=(), timestamp=now)
        try:
            self.store.finish(item.prompt_id, status="error", messages=[(e.name, e.fields()) for e in (start, error)],
                              owner=owner)
        except Exception:
            log.exception("could not record the end of prompt %s", item.prompt_id)
        self.events.emit(error, client_id=item.client_id)
        self.broadcast_status()
        self.events.emit(Executing(None, item.prompt_id), client_id=item.client_id)

    def _mark_dead(self, slot: _Slot, reason: str) -> None:
        with self._cond:
            newly = slot.state != "dead"
            if newly:
                log.warning("worker %s is dead: %s", slot.id, reason)
            slot.state = "dead"
            slot.error = reason
            slot.job = None
            slot.held = frozenset()
            stopping = self._stopping
            self._cond.notify_all()
        if self.listing is not None:
            self.listing.forget(slot.id)
        if newly and not stopping and self.on_dead is not None:
            try:
                self.on_dead(slot.id)
            except Exception:
                log.exception("could not replace worker %s", slot.id)

    def _on_node(self, slot: _Slot, node: str | None) -> None:
        with self._cond:
            if slot.job is not None:
                slot.job.node = node

    def _input_files(self, names: Sequence[str]) -> dict[str, bytes]:
        """The head's input images a prompt names, sent along to the worker."""
        files: dict[str, bytes] = {}
        for name in names:
            try:
                path = self.folders.input_path(name)
                if path.is_file() and path.stat().st_size <= MAX_INPUT_BYTES:
                    files[name] = path.read_bytes()
            except Exception:  # a missing or refused name: the worker's validation reports it
                continue
        return files


def _quietly(call: Callable[..., Any], *args: Any) -> None:
    try:
        call(*args)
    except Exception:
        log.debug("ignored error in %s", getattr(call, "__name__", call), exc_info=True)
