"""The composition root: the one place that wires Chisel's parts from a ServerConfig, for `chisel serve` (through
create_app) and `chisel run` alike. No globals; tests build their own with other nodes or another model manager.

    folders   = ServerFolders.from_config(config)         models/, input/, output/, temp/, user/ (server/paths.py)
    registry  = build_registry(config, folders)            core nodes + custom_nodes/ packs
    services  = build_services(config, folders)            what nodes get as ctx.services (folders, model manager)
    executor  = build_executor(config, registry, services) output cache under the config's budgets + executor
    = compose(config)                                      all of the above: a Runtime
    engine    = build_engine(config, runtime, events)      + the SQLite queue and what runs it (a server): the
                                                           worker thread, or with config.ray the cluster's
                                                           scheduler and its Ray workers (server/cluster/)

The server never reaches into the model library: the model manager and the out-of-memory hint come through
nodes.services.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nodes.context import RunContext
from nodes.inputs import Files
from nodes.registry import Node, NodeSpec, Registry
from nodes.services import RunSettings, Services, model_manager, out_of_memory_hint
from server.config import ServerConfig
from server.engine.cache import OutputCache, walk_sizeof
from server.engine.engine import Engine
from server.engine.events import EventSink
from server.engine.executor import Executor
from server.engine.queue import PromptStore
from server.engine.runner import PromptRunner
from server.engine.worker import Worker
from server.paths import ServerFolders

if TYPE_CHECKING:
    from nodes.services import ModelManager

log = logging.getLogger("chisel.server")
QUEUE_FILE = "chisel_queue.sqlite3"
DEFAULT_GPU_CACHE_BYTES = 2 << 30


@dataclass(frozen=True)
class Runtime:
    """Everything a prompt needs to run, built from one config.

    extension_dirs  custom node packs' web folders by pack name (served by the web layer)
    file_listing    with config.ray: the registry's file listing, which adds the workers' model files to this
                    machine's (a model only a worker machine has validates here); None otherwise
    """

    config: ServerConfig
    folders: ServerFolders
    registry: Registry
    extension_dirs: Mapping[str, Path]
    services: Services
    executor: Executor
    file_listing: Any = None


def compose(config: ServerConfig, *, nodes: Iterable[type[Node] | NodeSpec] | None = None,
            models: ModelManager | None = None) -> Runtime:
    """The runtime of one config. `nodes` replaces the core node list (tests); `models` the model manager."""
    folders = ServerFolders.from_config(config)
    listing = None
    if config.ray is not None:
        from server.cluster.refs import ClusterListing

        listing = ClusterListing(folders.list_files)
    services = build_services(config, folders, models=models)
    registry, extension_dirs = build_registry(config, folders, nodes=nodes, list_files=listing, services=services)
    executor = build_executor(config, registry, services)
    return Runtime(config=config, folders=folders, registry=registry, extension_dirs=extension_dirs,
                   services=services, executor=executor, file_listing=listing)


def build_engine(runtime: Runtime, events: EventSink, *, store_path: str | Path | None = None) -> Engine:
    """The runtime's executor behind a persistent queue and what runs it (not started): the in-process worker
    thread, or with config.ray the cluster's scheduler (its Ray runtime connected, workers requested; Ray is
    imported only then). store_path defaults to <user dir>/chisel_queue.sqlite3."""
    config = runtime.config
    store = PromptStore(store_path if store_path is not None else config.user_dir / QUEUE_FILE,
                        max_history=config.history_limit)
    runner: PromptRunner
    if config.ray is not None:
        from server.cluster.ray_cluster import ray_runner

        try:
            runner = ray_runner(runtime, store, events)
        except BaseException:
            store.close()
            raise
    else:
        runner = Worker(store=store, registry=runtime.registry, executor=runtime.executor, events=events,
                        on_free=functools.partial(_free_models, runtime.services),
                        describe=functools.partial(_describe, runtime))
    return Engine(store=store, cache=runtime.executor.cache, executor=runtime.executor, worker=runner)


# ---- the parts ----------------------------------------------------------------------------------------------------
def core_node_classes() -> list[type[Node] | NodeSpec]:
    from nodes.catalog import core_nodes

    return list(core_nodes())


def build_registry(config: ServerConfig, folders: ServerFolders, *,
                   nodes: Iterable[type[Node] | NodeSpec] | None = None,
                   list_files: Callable[[Files], Sequence[str]] | None = None,
                   services: Services | None = None) -> tuple[Registry, dict[str, Path]]:
    """The node registry (core nodes, then custom node packs) and the custom packs' web folders by pack name.
    `list_files` resolves Files combos (default: the folders' own listing). With `services`, packs written for
    ComfyUI get its Python surface (comfy_compat, through the loader's PackEnvironment; docs/custom-nodes.md)."""
    registry = Registry(list_files=list_files or folders.list_files)
    registry.add_all(core_node_classes() if nodes is None else nodes)
    web_dirs: dict[str, Path] = {}
    if config.load_custom_nodes and config.custom_nodes_dir.is_dir():
        from nodes.custom_nodes import PackEnvironment, load_custom_nodes

        environment = None if services is None else PackEnvironment(
            services=services, base_dir=config.base_dir, disabled=frozenset(config.disabled_custom_nodes),
            allow_pickle=config.allow_pickle_custom_nodes, host_modules={"server": sys.modules["server"]},
            cli={"listen": ",".join(config.listen), "port": config.port, "preview_method": config.preview_method,
                 "preview_size": config.preview_size, "disable_metadata": config.disable_metadata,
                 "cpu": config.device == "cpu", "base_directory": str(config.base_dir),
                 "output_directory": str(config.output_dir), "input_directory": str(config.input_dir),
                 "temp_directory": str(config.temp_dir), "user_directory": str(config.user_dir),
                 "max_upload_size": config.max_upload_size / (1024 * 1024)})
        for report in load_custom_nodes(config.custom_nodes_dir, registry, environment=environment):
            if report.disabled:
                log.info("custom node pack %s is disabled", report.name)
                continue
            if report.error:
                log.warning("custom node pack %s was not loaded: %s", report.name, report.error)
            else:
                log.info("custom node pack %s: %d nodes (%.2f s)", report.name, len(report.nodes),
                         report.import_seconds)
            for name, why in report.skipped_nodes.items():
                log.warning("custom node %s from %s skipped: %s", name, report.name, why)
            if report.loaded and report.comfy_placeholders:
                log.info("custom node pack %s uses ComfyUI internals Chisel does not have (its nodes that use them "
                         "fail when run): %s", report.name, ", ".join(report.comfy_placeholders))
            if report.web_directory is not None:
                web_dirs[report.name] = report.web_directory
    return registry, web_dirs


def build_services(config: ServerConfig, folders: ServerFolders, *, models: ModelManager | None = None) -> Services:
    """What nodes get as ctx.services; `models` defaults to a model manager on the configured device."""
    settings = RunSettings(save_metadata=not config.disable_metadata, preview_method=config.preview_method,
                           preview_max_size=config.preview_size)
    if models is None:
        models = model_manager(config.device, config.weight_dtype, vram_mode=config.vram_mode,
                               budget_bytes=config.vram_budget_bytes, reserve_bytes=config.reserve_vram_bytes)
    return Services(folders=folders, models=models, settings=settings)


def build_executor(config: ServerConfig, registry: Registry, services: Services) -> Executor:
    """The output cache under the config's RAM and VRAM budgets, and the executor that fills it."""
    gpu_budget = config.cache_vram_bytes if config.cache_vram_bytes is not None else DEFAULT_GPU_CACHE_BYTES
    cache = OutputCache(cpu_budget=config.cache_ram_bytes, gpu_budget=gpu_budget, sizeof=walk_sizeof(tensor_bytes))
    return Executor(registry, cache, functools.partial(RunContext, services=services),
                    on_error=functools.partial(_error_hint, services))


def tensor_bytes(value: Any) -> tuple[int, int] | None:
    """Bytes a tensor holds, (cpu, gpu); None for anything else (the cache's walker looks inside containers).
    torch is looked up, not imported: a registry without model nodes never loads it."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        size = value.nelement() * value.element_size()
        return (size, 0) if value.device.type == "cpu" else (0, size)
    return None


def _error_hint(services: Services, error: BaseException) -> str | None:
    """The executor's on_error hook: after a GPU out-of-memory error, idle models leave the GPU and the message
    says so."""
    return out_of_memory_hint(services.models, error)


def _describe(runtime: Runtime) -> tuple[str, list[str]]:
    """The in-process worker for GET /workers: its device and the model files it holds loaded."""
    models = runtime.services.models
    loaded = getattr(models, "loaded_files", None)
    names = [Path(path).name for path in loaded()] if loaded is not None else []
    return str(getattr(models, "device", "cpu")), names


def _free_models(services: Services, *, unload_models: bool, free_memory: bool) -> None:
    """POST /free: move idle models off the GPU (the worker clears the output cache, which owns them)."""
    if unload_models or free_memory:
        services.models.offload_all()
