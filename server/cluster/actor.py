"""The Ray actor around a WorkerCore: one per worker process, holding one device and its model memory.

Nothing here imports Ray (server/cluster/ray_cluster.py wraps the class with `ray.remote` at run time) nor torch at
import time: the actor sets its torch thread count in the environment before compose() loads the model library.
Its settings come from the head (a worker on the head's machine: the head's config with its own scratch folders)
or, on a machine added with `chisel worker`, from that machine's environment (spec.CONFIG_ENV).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class WorkerActor:
    """spec: {id, config (a ServerConfig, or None: this machine's from the environment), threads (None: this
    machine's cores / `workers_here`), workers_here}"""

    def __init__(self, spec: Mapping[str, Any]):
        from server.cluster.spec import config_from_environment

        config = spec.get("config") or config_from_environment()
        if config is None:
            raise RuntimeError("this Ray node has no Chisel worker settings: add machines with "
                               "`chisel worker --ray ADDRESS`")
        threads = spec.get("threads") or config.ray_worker_threads
        if threads is None:
            threads = max(1, (os.cpu_count() or 1) // max(1, int(spec.get("workers_here") or 1)))
        for name in THREAD_VARIABLES:
            os.environ[name] = str(threads)
        from server.cluster.core import WorkerCore

        self.core = WorkerCore(config, worker_id=spec["id"])
        torch = __import__("sys").modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)

    def hello(self) -> dict[str, Any]:
        return self.core.hello()

    def status(self, folders: Sequence[str]) -> dict[str, Any]:
        return self.core.status(folders)

    def begin(self, job: Mapping[str, Any]) -> None:
        self.core.begin(job)

    def poll(self, wait: float) -> dict[str, Any]:
        return self.core.poll(wait)

    def interrupt(self, prompt_id: str | None) -> bool:
        return self.core.interrupt(prompt_id)

    def free(self, unload_models: bool, free_memory: bool) -> None:
        self.core.free(unload_models, free_memory)
