"""Workers on Ray: the runtime (started here, or an existing cluster joined), the worker actors, and the links the
scheduler talks through. Ray is imported only here, and only when a server runs with `--ray`.

  chisel serve --ray local      ray.init(address="local"): a Ray runtime on this machine, `ray_workers` actors on it
  chisel serve --ray ADDRESS    ray.init(address=ADDRESS): join the cluster; `ray_workers` actors on this machine
                                (default: one per GPU, or one), plus actors on every node added by `chisel worker`
  chisel worker --ray ADDRESS   (server/cluster/node.py) starts a Ray node on its machine announcing
                                `chisel_worker: N` and carrying its folders in the environment

Who owns what: the head (this process) creates every actor, so actors live as long as the head's Ray job; a node
with the `chisel_worker` resource is noticed within `discover_every` seconds and gets its N actors, each pinned to
it (its devices, its model folders). Each actor holds one device (num_gpus=1 on a GPU machine: Ray sets
CUDA_VISIBLE_DEVICES) and its model cache. An actor that dies is reported dead by Ray (ActorDiedError) at once; one
that stops answering is declared lost after `ray_hang_timeout` seconds and killed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.cluster.actor import WorkerActor
from server.cluster.scheduler import Scheduler, SchedulerOptions, WorkerLost
from server.config import ServerConfig

if TYPE_CHECKING:
    from server.compose import Runtime
    from server.engine.events import EventSink
    from server.engine.queue import PromptStore

log = logging.getLogger(__name__)
NAMESPACE = "chisel"
WORKER_RESOURCE = "chisel_worker"
MAX_REPLACEMENTS = 10  # per worker: a worker that dies again and again (a broken machine) stays dead
REPLACE_AFTER = 2.0  # seconds
INSTALL_HINT = "Ray is not installed: pip install 'chisel-studio[cluster]' (or pip install 'ray>=2.9')"


class ClusterError(RuntimeError):
    """The cluster could not be started or joined (the CLI prints it)."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None
    return ray


def enable_token_auth_if_available(environ: dict[str, str] | None = None) -> bool:
    """Ray 2.5x clusters started with `ray start --head` require their auth token when a token exists on the head
    machine, but processes that *join* only send it in token mode: turn that on when a token is available here
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) and RAY_AUTH_MODE is unset. True if turned on."""
    env = os.environ if environ is None else environ
    if env.get("RAY_AUTH_MODE"):
        return False
    path = env.get("RAY_AUTH_TOKEN_PATH")
    if env.get("RAY_AUTH_TOKEN") or (path and Path(path).is_file()) or (Path.home() / ".ray" / "auth_token").is_file():
        env["RAY_AUTH_MODE"] = "token"
        return True
    return False


def unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers at a Ray address ("host:port"), or None when something listens there. Ray itself would
    retry for minutes on a mistyped address."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return f"{address!r} is not host:port (the address `ray start --head` printed)"
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return (f"nothing answers at {address} ({exc.strerror or exc}); start the cluster's head first (`chisel "
                f"serve --ray local` prints its address, or `ray start --head --port {port}`)")


class RayLink:
    """The scheduler's WorkerLink to one actor: calls with timeouts, Ray's failures as WorkerLost."""

    def __init__(self, handle: Any, worker_id: str, *, hang_timeout: float, call_timeout: float = 60.0,
                 status_timeout: float = 15.0):
        self.handle = handle
        self.id = worker_id
        self.hang_timeout = hang_timeout
        self.call_timeout = call_timeout
        self.status_timeout = status_timeout  # an idle worker's heartbeat: a machine that left is noticed in seconds

    def hello(self, timeout: float) -> dict[str, Any]:
        return self._get(self.handle.hello.remote(), timeout)

    def status(self, folders: Any) -> dict[str, Any]:
        return self._get(self.handle.status.remote(list(folders)), self.status_timeout)

    def begin(self, job: dict[str, Any]) -> None:
        self._get(self.handle.begin.remote(job), self.call_timeout)

    def poll(self, wait: float) -> dict[str, Any]:
        return self._get(self.handle.poll.remote(wait), wait + self.hang_timeout)

    def interrupt(self, prompt_id: str | None) -> None:
        self.handle.interrupt.remote(prompt_id)  # not waited for: a route handler calls it

    def free(self, unload_models: bool, free_memory: bool) -> None:
        self._get(self.handle.free.remote(unload_models, free_memory), self.call_timeout)

    def kill(self) -> None:
        import_ray().kill(self.handle, no_restart=True)

    def _get(self, ref: Any, timeout: float) -> Any:
        ray = import_ray()
        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise WorkerLost(f"no answer for {timeout:.0f} s") from None
        except ray.exceptions.RayActorError as exc:
            raise WorkerLost(f"the worker process died ({_first_line(exc)})") from None
        except ray.exceptions.RayError as exc:
            raise WorkerLost(_first_line(exc)) from None


def _first_line(exc: BaseException) -> str:
    """Ray's message, short: its first line, and its last one when that names the cause (an exception raised in
    the worker's __init__, say), without terminal colours."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).strip().splitlines()]
    lines = [line for line in lines if line]
    text = lines[0] if lines else type(exc).__name__
    if len(lines) > 1 and lines[-1] != text:
        text = f"{text[:200]} ... {lines[-1]}"
    return text if len(text) <= 400 else text[:397] + "..."


class RayCluster:
    """The Ray side of a cluster head (see module docstring).

    config           the head's config (ray: "local" or an address; ray_workers; folders for the head's own workers)
    discover_every   seconds between looks for nodes added with `chisel worker`
    """

    def __init__(self, config: ServerConfig, *, discover_every: float = 1.0):
        self.config = config
        self.discover_every = discover_every
        self.scheduler: Scheduler | None = None
        self.head_node: str | None = None
        self.address: str | None = None  # the cluster's address, for `chisel worker --ray ADDRESS`
        self._nodes_seen: set[str] = set()
        self._links: list[RayLink] = []
        self._spawned: dict[str, dict[str, Any]] = {}  # worker id -> how it was made (to replace it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- the runtime ------------------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Start the local Ray runtime, or join the cluster; ClusterError when that fails."""
        address = (self.config.ray or "local").strip()
        if address not in ("local", "auto"):
            why = unreachable(address)
            if why is not None:
                raise ClusterError(f"could not join the Ray cluster: {why}")
        if address != "local":
            enable_token_auth_if_available()  # before Ray is imported: it reads the mode once
        ray = import_ray()
        if ray.is_initialized():
            self.head_node = ray.get_runtime_context().get_node_id()
            return
        try:
            if address == "local":
                ray.init(address="local", include_dashboard=False, namespace=NAMESPACE,
                         logging_level=logging.WARNING, num_cpus=os.cpu_count() or 1,
                         num_gpus=0 if self.config.device == "cpu" else None)
            else:
                ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "start a local Ray runtime" if address == "local" else f"join the Ray cluster at {address}"
            raise ClusterError(f"could not {where}: {_first_line(exc)}") from None
        context = ray.get_runtime_context()
        self.head_node = context.get_node_id()
        self.address = getattr(context, "gcs_address", None) or address

    def attach(self, scheduler: Scheduler) -> None:
        """Create this machine's workers and start looking for joining machines."""
        self.scheduler = scheduler
        ray = import_ray()
        head = self._node(self.head_node) or {}
        gpus = 0 if self.config.device == "cpu" else int(head.get("Resources", {}).get("GPU", 0))
        count = self.config.ray_workers if self.config.ray_workers is not None else max(gpus, 1)
        for index in range(1, count + 1):
            worker_id = f"head-{index}"
            spec = {"id": worker_id, "config": self._head_worker_config(worker_id), "workers_here": count,
                    "threads": self.config.ray_worker_threads}
            self._spawn(ray, worker_id, spec, node_id=self.head_node, gpus=(gpus / count if gpus else 0),
                        resources=None)
        self._nodes_seen.add(self.head_node or "")
        self._thread = threading.Thread(target=self._discover_loop, name="chisel-ray-discovery", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop looking for nodes, end the workers, and leave Ray (a runtime this process started stops with it; a
        joined cluster keeps running)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for link in list(self._links):
            try:
                link.kill()
            except Exception:
                pass
        ray = import_ray()
        if ray.is_initialized():
            ray.shutdown()

    # ---- workers ----------------------------------------------------------------------------------------------------
    def _head_worker_config(self, worker_id: str) -> ServerConfig:
        """A worker on the head's machine: the head's model folders, its own scratch folders (inside the head's
        temp/, emptied at each start) unless the output folder is shared."""
        scratch = self.config.temp_dir / "workers" / worker_id
        changes: dict[str, Any] = {"input_dir": scratch / "input", "temp_dir": scratch / "temp",
                                   "user_dir": scratch / "user", "auth_token": None}
        if not self.config.ray_shared_output:
            changes["output_dir"] = scratch / "output"
        return self.config.with_changes(**changes)

    def _spawn(self, ray: Any, worker_id: str, spec: Mapping[str, Any], *, node_id: str | None, gpus: float,
               resources: dict[str, float] | None) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options: dict[str, Any] = {"num_cpus": 0, "num_gpus": min(gpus, 1.0), "max_concurrency": 4,
                                   "max_restarts": 0, "max_task_retries": 0}
        if node_id:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        if resources:
            options["resources"] = resources
        handle = ray.remote(WorkerActor).options(**options).remote(dict(spec))
        link = RayLink(handle, worker_id, hang_timeout=self.config.ray_hang_timeout)
        with self._lock:
            self._links.append(link)
            self._spawned[worker_id] = {"spec": dict(spec), "node_id": node_id, "gpus": gpus,
                                        "resources": resources}
        assert self.scheduler is not None
        self.scheduler.add_worker(link)
        log.info("worker %s requested on node %s", worker_id, (node_id or "?")[:8])

    def replace(self, worker_id: str) -> None:
        """A worker died (killed, out of memory): start a fresh one in its place ("head-1" -> "head-1.2") after a
        moment, on the same node if that node is still alive; its prompt was already leased to another worker."""
        made = self._spawned.get(worker_id)
        if made is None or self._stop.is_set():
            return
        base, _, generation = worker_id.partition(".")
        number = int(generation or 1) + 1
        if number > MAX_REPLACEMENTS + 1:
            log.error("worker %s died %d times: not replaced again", base, number - 1)
            return
        successor = f"{base}.{number}"

        def later() -> None:
            if self._stop.wait(REPLACE_AFTER):
                return
            node = self._node(made["node_id"]) if made["node_id"] else None
            if made["node_id"] and not (node and node.get("Alive")):
                log.info("worker %s is not replaced: its machine left the cluster", worker_id)
                return
            log.info("replacing worker %s with %s", worker_id, successor)
            self._spawn(import_ray(), successor, {**made["spec"], "id": successor}, node_id=made["node_id"],
                        gpus=made["gpus"], resources=made["resources"])

        threading.Thread(target=later, name=f"chisel-replace-{worker_id}", daemon=True).start()

    def _discover_loop(self) -> None:
        ray = import_ray()
        while not self._stop.wait(self.discover_every):
            try:
                nodes = ray.nodes()
            except Exception:
                log.debug("could not list the Ray nodes", exc_info=True)
                continue
            for node in nodes:
                node_id = node.get("NodeID")
                slots = int(node.get("Resources", {}).get(WORKER_RESOURCE, 0))
                if not node.get("Alive") or slots < 1 or node_id in self._nodes_seen:
                    continue
                self._nodes_seen.add(node_id)
                gpus = int(node.get("Resources", {}).get("GPU", 0))
                log.info("a machine joined: node %s at %s with %d worker(s)", node_id[:8],
                         node.get("NodeManagerAddress"), slots)
                for index in range(1, slots + 1):
                    worker_id = f"node-{node_id[:6]}-{index}"
                    spec = {"id": worker_id, "config": None, "workers_here": slots, "threads": None}
                    try:
                        self._spawn(ray, worker_id, spec, node_id=node_id, gpus=(gpus / slots if gpus else 0),
                                    resources={WORKER_RESOURCE: 1})
                    except Exception:
                        log.exception("could not start worker %s", worker_id)

    def _node(self, node_id: str | None) -> dict[str, Any] | None:
        for node in import_ray().nodes():
            if node.get("NodeID") == node_id:
                return node
        return None


def ray_runner(runtime: Runtime, store: PromptStore, events: EventSink) -> Scheduler:
    """The scheduler of a `--ray` server, its Ray runtime connected and this machine's workers requested."""
    config = runtime.config
    cluster = RayCluster(config)
    cluster.connect()
    scheduler = Scheduler(store=store, registry=runtime.registry, events=events, folders=runtime.folders,
                          options=SchedulerOptions(affinity_wait=config.ray_affinity_wait),
                          listing=runtime.file_listing, on_stop=cluster.close, on_dead=cluster.replace,
                          mode="ray")
    try:
        cluster.attach(scheduler)
    except BaseException:
        cluster.close()
        raise
    scheduler.cluster = cluster
    return scheduler
