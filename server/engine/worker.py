"""The worker thread: takes queued prompts from the store one at a time and runs them.

For each prompt: claim_next -> validate again against the current registry (node files or model folders may have
changed since it was queued) -> executor.execute -> store.finish -> events. QueueStatus goes to everyone when a
prompt is queued, taken and finished; the final Executing(node=None) goes to the prompt's client after its history
is written (ComfyUI's order).

Interrupt is per prompt (ComfyUI: with a prompt id, only if that prompt is running; without, whatever runs).
`free()` flags are handled between prompts. The thread sleeps on an event when the queue is empty (no polling) and
`stop()` joins it cleanly.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nodes.registry import Registry
from server.engine.events import (
    TERMINAL,
    Event,
    EventSink,
    Executing,
    ExecutionError,
    ExecutionStart,
    QueueStatus,
    exception_type_name,
)
from server.engine.executor import Executor, Outcome
from server.engine.graph import PromptError, validate_prompt
from server.engine.queue import PromptStore, QueueItem
from server.engine.runner import Running, WorkerInfo

log = logging.getLogger(__name__)
__all__ = ["Running", "TrackingSink", "Worker"]


class Worker:
    """Runs queued prompts on one background thread (the engine's default PromptRunner, server/engine/runner.py).

    store      the PromptStore
    registry   the node registry prompts are validated against when they are taken
    executor   the Executor
    events     the EventSink (a server's websocket hub)
    on_free    called between prompts as on_free(unload_models=, free_memory=) after POST /free (the app unloads
               models there); the worker itself clears the output cache when free_memory is set
    describe   () -> (device, models held) for GET /workers (the composition root asks the model manager)
    """

    mode = "local"

    def __init__(self, *, store: PromptStore, registry: Registry, executor: Executor, events: EventSink,
                 on_free: Callable[..., None] | None = None, clock: Callable[[], float] = time.time,
                 describe: Callable[[], tuple[str, Sequence[str]]] | None = None):
        self.store = store
        self.describe = describe
        self.prompts_done = 0
        self.registry = registry
        self.executor = executor
        self.events = events
        self.on_free = on_free
        self.clock = clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._busy = False
        self._lock = threading.Lock()
        self._running: tuple[str, str | None, threading.Event] | None = None
        self._node: str | None = None
        self._free = (False, False)
        self._cancelled: set[str] = set()  # prompts a user interrupted (vs. stopped by shutdown)
        self._thread: threading.Thread | None = None
        self.last_outcome: Outcome | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="chisel-worker", daemon=True)
        self._thread.start()
        self._wake.set()  # prompts recovered from the store run at once

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop the thread and join it; True if it ended in time. The running prompt is interrupted and goes back
        to the front of the queue (it was not cancelled by anyone): with the pending ones, it runs on the next
        start."""
        self._stopping.set()
        with self._lock:
            running = self._running
        if running is not None:
            running[2].set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- control (any thread) -------------------------------------------------------------------------------------
    def enqueue(self, prompt: Mapping[str, Any], *, outputs_to_execute: Sequence[str],
                extra_data: Mapping[str, Any] | None = None, client_id: str | None = None,
                prompt_id: str | None = None, number: int | float | None = None, front: bool = False
                ) -> tuple[str, int | float]:
        """Queue an already validated prompt: store it, broadcast the queue status, wake the thread.
        Returns (prompt_id, number). Raises DuplicatePromptId for a reused id."""
        prompt_id = prompt_id or str(uuid.uuid4())
        number = self.store.put(prompt_id, prompt, extra_data=extra_data, outputs_to_execute=outputs_to_execute,
                                client_id=client_id, number=number, front=front)
        self.broadcast_status()
        self.wake()
        return prompt_id, number

    def wake(self) -> None:
        """Tell the thread something was queued."""
        self._wake.set()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt (only if it is `prompt_id`, when given). True if one was interrupted."""
        with self._lock:
            running = self._running
        if running is None or (prompt_id is not None and running[0] != prompt_id):
            return False
        with self._lock:
            self._cancelled.add(running[0])
        running[2].set()
        return True

    def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """Ask for memory to be freed between prompts (POST /free)."""
        with self._lock:
            old = self._free
            self._free = (old[0] or unload_models, old[1] or free_memory)
        self._wake.set()

    def running(self) -> Running | None:
        with self._lock:
            if self._running is None:
                return None
            return Running(self._running[0], self._running[1], self._node)

    def running_prompts(self) -> list[Running]:
        running = self.running()
        return [] if running is None else [running]

    def workers(self) -> list[WorkerInfo]:
        """This process's one worker thread."""
        device, models = ("", ())
        if self.describe is not None:
            try:
                device, models = self.describe()
            except Exception:
                log.exception("could not describe the worker")
        running = self.running()
        state = "dead" if not self.alive else ("running" if running is not None else "idle")
        return [WorkerInfo(id="local", host=socket.gethostname(), pid=os.getpid(), device=device, state=state,
                           prompt_id=running.prompt_id if running else None, models=tuple(models),
                           prompts_done=self.prompts_done)]

    def queue_remaining(self) -> int:
        return self.store.queue_remaining()

    def broadcast_status(self) -> None:
        self.events.emit(QueueStatus(self.store.queue_remaining()), client_id=None)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is pending or running (tests, CLI); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy or self.store.queue_remaining() > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    # ---- the thread -------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._handle_free()
            self._wake.clear()
            item = None
            try:
                item = self.store.claim_next()
            except Exception:
                log.exception("could not read the queue")
            if item is None:
                with self._idle:
                    self._idle.notify_all()
                self._wake.wait()
                continue
            with self._idle:
                self._busy = True
            try:
                self._run(item)
            except Exception:  # never let one prompt take the worker down
                log.exception("prompt %s could not be completed", item.prompt_id)
            finally:
                with self._lock:
                    self._running = None
                    self._node = None
                with self._idle:
                    self._busy = False
                    self._idle.notify_all()

    def _run(self, item: QueueItem) -> None:
        interrupt = threading.Event()
        with self._lock:
            self._running = (item.prompt_id, item.client_id, interrupt)
            self._node = None
        if self._stopping.is_set():
            interrupt.set()
        self.broadcast_status()
        sink = TrackingSink(self.events, self._on_executing)
        try:
            graph = validate_prompt(item.prompt, self.registry,
                                    partial_execution_targets=item.outputs_to_execute or None)
        except PromptError as err:
            outcome = self._rejected(item, err, sink)
        else:
            outcome = self.executor.execute(graph, prompt_id=item.prompt_id, extra_data=item.extra_data,
                                            events=sink, interrupt=interrupt)
        self.last_outcome = outcome
        with self._lock:
            cancelled = item.prompt_id in self._cancelled
            self._cancelled.discard(item.prompt_id)
        try:
            if outcome.status == "interrupted" and self._stopping.is_set() and not cancelled:
                self.store.requeue(item.prompt_id)
            else:
                self.store.finish(item.prompt_id, status=outcome.status, outputs=outcome.outputs,
                                  messages=[(event.name, event.fields()) for event in outcome.messages])
        except Exception:
            log.exception("could not record the end of prompt %s", item.prompt_id)
        sink.release()
        self.prompts_done += 1
        self.broadcast_status()
        self.events.emit(Executing(None, item.prompt_id), client_id=item.client_id)

    def _rejected(self, item: QueueItem, err: PromptError, sink: EventSink) -> Outcome:
        """A queued prompt that no longer validates (a node or model file went away): reported as an error."""
        outcome = rejected_outcome(item.prompt_id, err, int(self.clock() * 1000))
        for event in outcome.messages:
            sink.emit(event, client_id=item.client_id)
        return outcome

    def _on_executing(self, node_id: str | None) -> None:
        with self._lock:
            self._node = node_id

    def _handle_free(self) -> None:
        with self._lock:
            unload_models, free_memory = self._free
            self._free = (False, False)
        if not (unload_models or free_memory):
            return
        if free_memory:
            self.executor.cache.clear()
        if self.on_free is not None:
            try:
                self.on_free(unload_models=unload_models, free_memory=free_memory)
            except Exception:
                log.exception("freeing memory failed")


def rejected_outcome(prompt_id: str, err: PromptError, now_ms: int) -> Outcome:
    """The outcome of a queued prompt that no longer validates when it is taken (its events: start, error)."""
    node_id = next(iter(err.node_errors), None) or err.error.get("extra_info", {}).get("node_id")
    node_type = err.node_errors.get(node_id, {}).get("class_type") if node_id else None
    start = ExecutionStart(prompt_id, now_ms)
    error = ExecutionError(prompt_id=prompt_id, node_id=node_id, node_type=node_type, executed=(),
                           exception_message=f"The prompt no longer validates: {err}",
                           exception_type=exception_type_name(err), traceback=(), current_inputs={},
                           current_outputs=(), timestamp=now_ms)
    return Outcome(prompt_id=prompt_id, status="error", outputs={}, executed=(), cached=(), error=error,
                   messages=(start, error))


class TrackingSink:
    """Forwards one prompt's events, remembers which node is executing (for clients that reconnect mid-prompt), and
    holds the prompt's final event (success, error or interrupted) until `release()`: the worker releases it after
    writing the history, so a client that reads /history/{id} on that event finds the entry. (The cluster's
    scheduler wraps each worker's event stream in one too.)"""

    def __init__(self, inner: EventSink, on_executing: Callable[[str | None], None]):
        self.inner = inner
        self.on_executing = on_executing
        self._held: list[tuple[Event, str | None]] = []

    def emit(self, event: Event, *, client_id: str | None) -> None:
        if isinstance(event, TERMINAL):
            self._held.append((event, client_id))
            return
        if isinstance(event, Executing):
            self.on_executing(event.node)
        self.inner.emit(event, client_id=client_id)

    def release(self) -> None:
        held, self._held = self._held, []
        for event, client_id in held:
            self.inner.emit(event, client_id=client_id)


_TrackingSink = TrackingSink  # the former name
