"""The engine's event protocol: what the executor and the worker report while prompts run, defined once.

Each event is a frozen dataclass whose `name` is the event's name on ComfyUI's wire (the history's status messages
and the websocket use the same names) and whose fields are the facts the engine knows. The engine emits them into an
`EventSink`; it never builds a frontend's payload or touches a socket. The web layer (server/messages.py) translates
them into ComfyUI's websocket messages, with the frontend-only extras (display_node, progress_state, preview
metadata), and `chisel run` draws progress bars from them.

Order for one prompt: ExecutionStart, ExecutionCached, then per node Executing, Progress..., Executed (nodes with a
ui; cached output nodes re-send theirs), then ExecutionSuccess | ExecutionError | ExecutionInterrupted; the worker's
final Executing(node=None) follows once the history is written. QueueStatus goes to everyone when the queue changes.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class NodePlace:
    """Where a node added by a graph expansion belongs (events of prompt nodes carry none): the node shown for it
    (`display_node`), the node whose run added it (`parent_node`) and the prompt node it comes from (`real_node`)."""

    display_node: str
    parent_node: str
    real_node: str


@dataclass(frozen=True)
class Event:
    """Base of the engine's events; `name` is the wire name."""

    name: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        """The event's fields as a plain dict (shallow: values are not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class QueueStatus(Event):
    name: ClassVar[str] = "status"
    queue_remaining: int


@dataclass(frozen=True)
class ExecutionStart(Event):
    name: ClassVar[str] = "execution_start"
    prompt_id: str
    timestamp: int


@dataclass(frozen=True)
class ExecutionCached(Event):
    """The nodes whose outputs this run takes from the cache."""

    name: ClassVar[str] = "execution_cached"
    nodes: Sequence[str]
    prompt_id: str
    timestamp: int


@dataclass(frozen=True)
class Executing(Event):
    """A node starts; `node=None` once the prompt is over and its history written."""

    name: ClassVar[str] = "executing"
    node: str | None
    prompt_id: str
    place: NodePlace | None = None


@dataclass(frozen=True)
class Progress(Event):
    """A node reports `value` of `max` steps, optionally with a preview (encoded bytes with a `.format`)."""

    name: ClassVar[str] = "progress"
    value: int
    max: int
    prompt_id: str
    node: str
    preview: Any = None
    place: NodePlace | None = None


@dataclass(frozen=True)
class Executed(Event):
    """A node's ui output (images to show, text...)."""

    name: ClassVar[str] = "executed"
    node: str
    output: Mapping[str, Any]
    prompt_id: str
    place: NodePlace | None = None


@dataclass(frozen=True)
class ExecutionSuccess(Event):
    name: ClassVar[str] = "execution_success"
    prompt_id: str
    timestamp: int


@dataclass(frozen=True)
class ExecutionError(Event):
    """A node (or the engine around it) failed; `exception_type` is the exception's qualified class name."""

    name: ClassVar[str] = "execution_error"
    prompt_id: str
    node_id: str | None
    node_type: str | None
    executed: Sequence[str]
    exception_message: str
    exception_type: str
    traceback: Sequence[str]
    current_inputs: Mapping[str, Any]
    current_outputs: Sequence[str]
    timestamp: int


@dataclass(frozen=True)
class ExecutionInterrupted(Event):
    name: ClassVar[str] = "execution_interrupted"
    prompt_id: str
    node_id: str | None
    node_type: str | None
    executed: Sequence[str]
    timestamp: int


TERMINAL: tuple[type[Event], ...] = (ExecutionSuccess, ExecutionError, ExecutionInterrupted)
"""The events that end a prompt's run."""


def exception_type_name(exc: BaseException) -> str:
    """An exception's class as ComfyUI reports it: qualified by module, bare for builtins."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module in (None, "builtins") else f"{module}.{cls.__qualname__}"


class EventSink(Protocol):
    """Where the executor and the worker send events. Implementations must be thread-safe."""

    def emit(self, event: Event, *, client_id: str | None) -> None:
        """One event; `client_id` is the prompt's client (None: everyone)."""
        ...


class NullSink:
    """Drops everything (benchmarks, runs without listeners)."""

    def emit(self, event: Event, *, client_id: str | None) -> None:
        pass


class EventLog:
    """An in-memory sink that keeps every event in order, with its client (thread-safe); for tests and tools."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[Event, str | None]] = []

    def emit(self, event: Event, *, client_id: str | None) -> None:
        with self._lock:
            self._items.append((event, client_id))

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return [event for event, _ in self._items]

    def of(self, kind: type[Event]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]
