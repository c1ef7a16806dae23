"""What runs the queue: the interface the web layer talks to, whoever executes the prompts.

Two implementations: `server.engine.worker.Worker` (one thread in this process: the default) and
`server.cluster.scheduler.Scheduler` (leases prompts to worker processes, e.g. Ray actors on several machines). The
routes, the websocket handler and the app's lifecycle only use this interface, so they do not care which one runs.
Both keep the SQLite PromptStore as the source of truth: a prompt is queued there, leased from there and recorded
there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

WorkerStateName = Literal["starting", "idle", "running", "dead"]


@dataclass(frozen=True)
class Running:
    """A prompt being executed now: its id, its client, and the node it is on (None before the first)."""

    prompt_id: str
    client_id: str | None
    node_id: str | None
    worker: str | None = None  # the worker running it (None: the in-process worker)


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as GET /workers shows it.

    id            stable name ("local", or the cluster's worker id)
    host, pid     where its process runs
    device        its compute device ("cpu", "cuda:0"...)
    state         starting | idle | running | dead
    prompt_id     the prompt it runs (state running)
    models        model files it holds loaded ("checkpoints/x.safetensors")
    prompts_done  prompts it finished (any outcome)
    error         why it is dead
    """

    id: str
    host: str
    pid: int | None
    device: str
    state: WorkerStateName
    prompt_id: str | None = None
    models: Sequence[str] = ()
    prompts_done: int = 0
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "pid": self.pid, "device": self.device, "state": self.state,
                "prompt_id": self.prompt_id, "models": list(self.models), "prompts_done": self.prompts_done,
                "error": self.error, **dict(self.extra)}


class PromptRunner(Protocol):
    """Takes prompts from the store and runs them (see the module docstring)."""

    mode: str
    """"local" (the in-process worker) or the cluster's kind ("ray")."""

    def start(self) -> None:
        """Start running queued prompts (idempotent)."""
        ...

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Stop; running prompts are interrupted and go back to the front of the queue. True if stopped in time."""
        ...

    @property
    def alive(self) -> bool: ...

    def enqueue(self, prompt: Mapping[str, Any], *, outputs_to_execute: Sequence[str],
                extra_data: Mapping[str, Any] | None = None, client_id: str | None = None,
                prompt_id: str | None = None, number: int | float | None = None, front: bool = False
                ) -> tuple[str, int | float]:
        """Queue an already validated prompt; (prompt_id, number). Raises DuplicatePromptId for a reused id."""
        ...

    def wake(self) -> None:
        """Something was queued or changed: look at the queue again."""
        ...

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt a running prompt (that one, when given; else every running prompt). True if one was."""
        ...

    def free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """POST /free: unload models and/or clear output caches between prompts."""
        ...

    def running(self) -> Running | None:
        """The first running prompt, or None."""
        ...

    def running_prompts(self) -> list[Running]:
        """Every running prompt."""
        ...

    def queue_remaining(self) -> int: ...

    def broadcast_status(self) -> None:
        """Send QueueStatus to every client."""
        ...

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is pending or running (tests, CLI); False on timeout."""
        ...

    def workers(self) -> list[WorkerInfo]:
        """The workers that run prompts, for GET /workers."""
        ...
