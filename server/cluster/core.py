"""One cluster worker: its own Runtime (compose(config) with this machine's folders), the same executor as a local
run, its own output cache and model memory. It knows no Ray: server/cluster/actor.py wraps it in a Ray actor, and
tests drive it in-process (server/cluster/inprocess.py).

The head calls, in order: hello() once; status(folders) while idle (a heartbeat that also reports the model files
it holds and has); begin(job) to start a prompt; poll(wait) until the result comes (each poll returns the engine
events emitted since the last one, and the files of `executed` events; the last one carries the result);
interrupt(prompt_id) and free(...) at any time. One prompt at a time.

Events are the engine's own (server/engine/events.py), untranslated: the head's EventHub turns them into ComfyUI's
messages exactly as for a local run.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from safefiles import PathRefused, write_atomic
from server.cluster.outputs import FileKey, collect_files
from server.cluster.refs import split_ref
from server.config import ServerConfig
from server.engine.events import Event, Executed, ExecutionError, ExecutionStart, exception_type_name
from server.engine.executor import Outcome
from server.engine.graph import PromptError, validate_prompt
from server.engine.worker import rejected_outcome

log = logging.getLogger(__name__)


class WorkerBusy(RuntimeError):
    pass


class _Outbox:
    """The worker's EventSink: events (and the files of `executed` ones) wait here until the head polls."""

    def __init__(self, folders: Any, shared_output: bool):
        self.folders = folders
        self.shared_output = shared_output
        self._cond = threading.Condition()
        self._items: list[tuple[Event, str | None, dict[FileKey, bytes] | None]] = []
        self._result: dict[str, Any] | None = None

    def emit(self, event: Event, *, client_id: str | None) -> None:
        files = None
        if isinstance(event, Executed):
            try:
                files = collect_files(self.folders, event.output, shared_output=self.shared_output)
            except Exception:  # a file we cannot read must not fail the prompt; the head keeps the reference
                log.exception("could not collect the files of node %s", event.node)
        with self._cond:
            self._items.append((event, client_id, files))
            self._cond.notify_all()

    def finish(self, result: dict[str, Any]) -> None:
        with self._cond:
            self._result = result
            self._cond.notify_all()

    def reset(self) -> None:
        with self._cond:
            self._items, self._result = [], None

    def take(self, wait: float) -> dict[str, Any]:
        with self._cond:
            if not self._items and self._result is None:
                self._cond.wait(max(0.0, wait))
            items, self._items = self._items, []
            result = self._result
            if result is not None:
                self._result = None
            return {"events": items, "result": result}


class WorkerCore:
    """One worker (see module docstring).

    config         this worker's settings: its folders (models from this machine, its own output/temp/input unless
                   the output folder is shared), device, budgets
    worker_id      the name the head gave it
    shared_output  its output folder is the head's (same path on every machine): files are not sent back
    nodes, models  as compose(): tests replace the node list or the model manager
    """

    def __init__(self, config: ServerConfig, *, worker_id: str, shared_output: bool | None = None,
                 nodes: Any = None, models: Any = None):
        from server.compose import compose

        self.worker_id = worker_id
        self.config = config
        self.shared_output = config.ray_shared_output if shared_output is None else shared_output
        self.runtime = compose(config.with_changes(ray=None), nodes=nodes, models=models)
        for kind in ("input", "output", "temp"):
            self.runtime.folders.directory(kind).mkdir(parents=True, exist_ok=True)
        self.outbox = _Outbox(self.runtime.folders, self.shared_output)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._prompt: tuple[str, threading.Event] | None = None
        self._seen_models: dict[str, None] = {}  # "folder/name" of every model file a prompt named here
        self.prompts_done = 0

    # ---- the head's calls ---------------------------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        models = self.runtime.services.models
        torch = sys.modules.get("torch")  # looked up, not imported (the model nodes load it)
        threads = torch.get_num_threads() if torch is not None else None
        return {"id": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(),
                "device": str(getattr(models, "device", "cpu")), "shared_output": self.shared_output,
                "threads": threads, "output_dir": str(self.config.output_dir)}

    def status(self, folders: Sequence[str] = ()) -> dict[str, Any]:
        """Heartbeat: busy or not, the model files held loaded, files loaded so far, and this machine's model files
        of the given folder kinds."""
        listing = {}
        for folder in folders:
            try:
                listing[folder] = list(self.runtime.folders.model_files(folder))
            except Exception:  # an unknown folder kind: nothing there
                listing[folder] = []
        with self._lock:
            busy = self._prompt is not None
        return {"busy": busy, "held": self.held_models(), "loads": self.loads(), "inventory": listing,
                "prompts_done": self.prompts_done}

    def begin(self, job: Mapping[str, Any]) -> None:
        """Start running a prompt (job: prompt_id, prompt, extra_data, outputs_to_execute, client_id, models,
        inputs {name: bytes}); returns at once."""
        with self._lock:
            if self._prompt is not None:
                raise WorkerBusy(f"worker {self.worker_id} is running {self._prompt[0]}")
            interrupt = threading.Event()
            self._prompt = (job["prompt_id"], interrupt)
        self.outbox.reset()
        for ref in job.get("models", ()):
            self._seen_models[ref] = None
        self._thread = threading.Thread(target=self._run, args=(job, interrupt), daemon=True,
                                        name=f"chisel-{self.worker_id}")
        self._thread.start()

    def poll(self, wait: float = 0.25) -> dict[str, Any]:
        """The events since the last poll (waiting up to `wait` seconds for one) and, once it ended, the result."""
        return self.outbox.take(wait)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        with self._lock:
            running = self._prompt
        if running is None or (prompt_id is not None and running[0] != prompt_id):
            return False
        running[1].set()
        return True

    def free(self, unload_models: bool = False, free_memory: bool = False) -> None:
        if free_memory:
            self.runtime.executor.cache.clear()
        if unload_models or free_memory:
            self.runtime.services.models.offload_all()

    # ---- what it holds ---------------------------------------------------------------------------------------
    def held_models(self) -> list[str]:
        """The model files ("folder/name") named by prompts here that the model manager holds loaded now."""
        loaded_files = getattr(self.runtime.services.models, "loaded_files", None)
        if loaded_files is None:
            return []
        loaded = set(loaded_files())
        held = []
        for ref in list(self._seen_models):
            folder, name = split_ref(ref)
            try:
                path = os.path.realpath(self.runtime.folders.model_path(folder, name))
            except Exception:  # gone from this machine
                continue
            if path in loaded:
                held.append(ref)
        return held

    def loads(self) -> int:
        stats = getattr(self.runtime.services.models, "stats", None)
        return int(stats().get("files_loaded", 0)) if stats is not None else 0

    # ---- the run --------------------------------------------------------------------------------------------------
    def _run(self, job: Mapping[str, Any], interrupt: threading.Event) -> None:
        prompt_id = job["prompt_id"]
        try:
            outcome = self._execute(job, interrupt)
        except Exception as exc:  # never leave the head waiting: a fault here is the prompt's error
            log.exception("prompt %s failed on worker %s", prompt_id, self.worker_id)
            outcome = _fault(prompt_id, exc)
            for event in outcome.messages:
                self.outbox.emit(event, client_id=job.get("client_id"))
        with self._lock:
            self._prompt = None
            self.prompts_done += 1
        self.outbox.finish({"status": outcome.status, "outputs": _plain(outcome.outputs),
                            "messages": list(outcome.messages), "executed": list(outcome.executed),
                            "cached": list(outcome.cached), "duration": outcome.duration,
                            "held": self.held_models(), "loads": self.loads(), "prompts_done": self.prompts_done})

    def _execute(self, job: Mapping[str, Any], interrupt: threading.Event) -> Outcome:
        prompt_id, client_id = job["prompt_id"], job.get("client_id")
        self._write_inputs(job.get("inputs") or {})
        try:
            graph = validate_prompt(job["prompt"], self.runtime.registry,
                                    partial_execution_targets=list(job.get("outputs_to_execute") or ()) or None)
        except PromptError as err:
            outcome = rejected_outcome(prompt_id, err, int(time.time() * 1000))
            for event in outcome.messages:
                self.outbox.emit(event, client_id=client_id)
            return outcome
        extra = dict(job.get("extra_data") or {})
        return self.runtime.executor.execute(graph, prompt_id=prompt_id, extra_data=extra, events=self.outbox,
                                             interrupt=interrupt)

    def _write_inputs(self, inputs: Mapping[str, bytes]) -> None:
        """Input images sent with the prompt, written where this worker's folders look for them (unchanged files
        are not rewritten)."""
        for name, data in inputs.items():
            try:
                path = self.runtime.folders.input_path(name)
            except (PathRefused, ValueError):
                continue
            try:
                if path.is_file() and path.read_bytes() == data:
                    continue
            except OSError:
                pass
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data, durable=False)


def _fault(prompt_id: str, exc: BaseException) -> Outcome:
    now = int(time.time() * 1000)
    start = ExecutionStart(prompt_id, now)
    error = ExecutionError(prompt_id=prompt_id, node_id=None, node_type=None, executed=(),
                           exception_message=f"the worker failed: {exc}", exception_type=exception_type_name(exc),
                           traceback=(), current_inputs={}, current_outputs=(), timestamp=now)
    return Outcome(prompt_id=prompt_id, status="error", outputs={}, executed=(), cached=(), error=error,
                   messages=(start, error))


def _plain(outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {node_id: dict(ui) if isinstance(ui, Mapping) else ui for node_id, ui in outputs.items()}


def inventory_sets(listing: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    return {folder: frozenset(names) for folder, names in listing.items()}
