"""A WorkerLink to a WorkerCore in this process: the scheduler without Ray (tests, and a way to try the scheduling
without a cluster). `kill()` and `hang()` make it behave as a lost worker does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from server.cluster.core import WorkerCore
from server.cluster.scheduler import WorkerLost


class InProcessLink:
    def __init__(self, worker_id: str, make_core: Callable[[], WorkerCore], *, hang_timeout: float = 120.0):
        self.id = worker_id
        self.make_core = make_core
        self.hang_timeout = hang_timeout
        self.core: WorkerCore | None = None
        self._dead = threading.Event()
        self._hung = threading.Event()

    def hello(self, timeout: float) -> dict[str, Any]:
        self._check()
        if self.core is None:
            self.core = self.make_core()
        return self.core.hello()

    def status(self, folders: Sequence[str]) -> dict[str, Any]:
        return self._core().status(folders)

    def begin(self, job: dict[str, Any]) -> None:
        self._core().begin(job)

    def poll(self, wait: float) -> dict[str, Any]:
        core = self._core()
        if self._hung.is_set():
            self._dead.wait(self.hang_timeout)
            raise WorkerLost(f"no answer for {self.hang_timeout:.0f} s")
        batch = core.poll(wait)
        self._check()  # it died while the call waited: nothing comes back
        return batch

    def interrupt(self, prompt_id: str | None) -> None:
        if self.core is not None and not self._dead.is_set():
            self.core.interrupt(prompt_id)

    def free(self, unload_models: bool, free_memory: bool) -> None:
        self._core().free(unload_models, free_memory)

    def kill(self) -> None:
        """The process is gone: every call fails from now on (its thread is told to stop, as the OS would)."""
        self._dead.set()
        if self.core is not None:
            self.core.interrupt(None)

    def hang(self) -> None:
        """The process stops answering (but is not known to be dead)."""
        self._hung.set()

    def _core(self) -> WorkerCore:
        self._check()
        assert self.core is not None
        return self.core

    def _check(self) -> None:
        if self._dead.is_set():
            time.sleep(0)  # as a dead actor: the call fails
            raise WorkerLost(f"worker {self.id} died")
