"""The engine as one unit: the persistent queue, the output cache, the executor and the worker thread that joins
them. It knows no HTTP and no model code: a web server (or another process) holds one and gives it an EventSink.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from server.engine.cache import OutputCache
from server.engine.executor import Executor
from server.engine.queue import PromptStore
from server.engine.runner import PromptRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engine:
    """store: the SQLite queue and history; cache: outputs by signature; executor: runs graphs; worker: what takes
    prompts from the store and runs them (a PromptRunner: the in-process worker thread, or a cluster scheduler whose
    workers run their own executors), started with `worker.start()`."""

    store: PromptStore
    cache: OutputCache
    executor: Executor
    worker: PromptRunner

    def queue_remaining(self) -> int:
        return self.store.queue_remaining()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker (its prompt goes back to the queue) and close the store."""
        if not self.worker.stop(timeout):
            log.warning("the worker did not stop within %.0f s; the queue keeps its prompts for the next start",
                        timeout)
        self.store.close()
