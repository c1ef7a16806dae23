"""The app factory: `create_app(config)` builds everything one server needs and passes it down. No globals.

    folders   = ServerFolders.from_config(config)           models/, input/, output/, temp/, user/ (server/paths.py)
    registry  = build_registry(config, folders)              core nodes + custom_nodes/ packs
    services  = build_services(config, folders)              what nodes get as ctx.services
    engine    = build_engine(config, registry, services)     store (SQLite) + cache + executor + worker + event hub

The engine is built and the worker thread started in the app's cleanup context (startup), and stopped cleanly at
cleanup. `chisel run` (server/cli.py) uses the same build_* functions without HTTP.
Every route is registered twice, bare and under /api (as ComfyUI), the websocket as /ws and /api/ws; the frontend-only
routes of ComfyUI's /internal sub-app only under /internal.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from nodes.context import RunContext
from nodes.registry import Node, NodeSpec, Registry
from nodes.services import RunSettings, Services
from server.cache import OutputCache, walk_sizeof
from server.config import ServerConfig
from server.events import EventHub, EventSink
from server.executor import Executor
from server.paths import ServerFolders
from server.queue import PromptStore
from server.routes import files, info, prompt, user, ws
from server.routes.middleware import cache_headers, errors, guard
from server.routes.state import STATE, AppState
from server.routes.static import add_static_routes
from server.userdata import UserStore
from server.worker import Worker

log = logging.getLogger("chisel.server")
QUEUE_FILE = "chisel_queue.sqlite3"
API_ROUTE_TABLES = (prompt.routes, files.routes, info.routes, user.routes, ws.routes)
INTERNAL_ROUTE_TABLES = (info.internal_routes,)


@dataclass
class Engine:
    """The execution side of one server: persistent queue, output cache, executor, worker thread, event hub."""

    store: PromptStore
    hub: EventHub
    cache: OutputCache
    executor: Executor
    worker: Worker

    def queue_remaining(self) -> int:
        return self.store.queue_remaining()

    def running_for(self, client_id: str) -> dict[str, Any] | None:
        """The `executing` message to re-send to a client that reconnects while its prompt runs (else None)."""
        running = self.worker.running()
        if running is None or running.client_id != client_id or running.node_id is None:
            return None
        return {"node": running.node_id, "display_node": running.node_id, "prompt_id": running.prompt_id}

    def close(self, timeout: float = 30.0) -> None:
        stopped = self.worker.stop(timeout)
        if not stopped:
            log.warning("the worker did not stop within %.0f s; the queue keeps its prompt for the next start",
                        timeout)
        self.store.close()


# ---- building blocks ----------------------------------------------------------------------------------------------
def core_node_classes() -> list[type[Node] | NodeSpec]:
    from nodes.catalog import core_nodes

    return list(core_nodes())


def build_registry(config: ServerConfig, folders: ServerFolders, *,
                   nodes: Iterable[type[Node] | NodeSpec] | None = None) -> tuple[Registry, dict[str, Path]]:
    """The node registry (core nodes, then custom node packs) and the custom packs' web folders by pack name."""
    registry = Registry(list_files=folders.list_files)
    registry.add_all(core_node_classes() if nodes is None else nodes)
    web_dirs: dict[str, Path] = {}
    if config.load_custom_nodes and config.custom_nodes_dir.is_dir():
        from nodes.custom_nodes import load_custom_nodes

        for report in load_custom_nodes(config.custom_nodes_dir, registry):
            if report.error:
                log.warning("custom node pack %s was not loaded: %s", report.name, report.error)
            else:
                log.info("custom node pack %s: %d nodes (%.2f s)", report.name, len(report.nodes),
                         report.import_seconds)
            for name, why in report.skipped_nodes.items():
                log.warning("custom node %s from %s skipped: %s", name, report.name, why)
            if report.web_directory is not None:
                web_dirs[report.name] = report.web_directory
    return registry, web_dirs


def build_models(config: ServerConfig) -> Any:
    """The model manager on the configured device (--cpu, or the first GPU when there is one)."""
    from diffusion.memory import ModelManager, pick_device

    return ModelManager(pick_device(config.device), weight_dtype=config.weight_dtype)


def build_services(config: ServerConfig, folders: ServerFolders, *, models: Any = None) -> Services:
    """What nodes get as ctx.services; `models` defaults to a model manager built from the config."""
    settings = RunSettings(save_metadata=not config.disable_metadata, preview_method=config.preview_method,
                           preview_max_size=config.preview_size)
    return Services(folders=folders, models=models if models is not None else build_models(config),
                    settings=settings)


def error_hint(services: Services, error: BaseException) -> str | None:
    """The executor's on_error hook: after a GPU out-of-memory error, move idle models off the GPU and say so."""
    from diffusion.memory import is_out_of_memory

    if not is_out_of_memory(error):
        return None
    if services.models is not None:
        services.models.offload_all()
    return ("This error means the GPU ran out of memory. Idle models were moved off the GPU; try again, or use a "
            "smaller image or batch size.")


def build_engine(config: ServerConfig, registry: Registry, services: Services, *, store_path: str | Path | None = None,
                 events: EventSink | None = None) -> Engine:
    """Store + cache + executor + worker (not started). store_path defaults to <user dir>/chisel_queue.sqlite3."""
    store = PromptStore(store_path if store_path is not None else config.user_dir / QUEUE_FILE,
                        max_history=config.history_limit)
    gpu_budget = config.cache_vram_bytes if config.cache_vram_bytes is not None else 2 << 30
    cache = OutputCache(cpu_budget=config.cache_ram_bytes, gpu_budget=gpu_budget, sizeof=walk_sizeof(_tensor_bytes))
    executor = Executor(registry, cache, functools.partial(RunContext, services=services),
                        on_error=functools.partial(error_hint, services))
    hub = EventHub()
    worker = Worker(store=store, registry=registry, executor=executor,
                    events=events or hub,
                    on_free=functools.partial(_free_models, services))
    return Engine(store=store, hub=hub, cache=cache, executor=executor, worker=worker)


def _tensor_bytes(value: Any) -> tuple[int, int] | None:
    """Bytes a tensor holds, (cpu, gpu); None for anything else (the cache's walker looks inside containers)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        size = value.nelement() * value.element_size()
        return (size, 0) if value.device.type == "cpu" else (0, size)
    return None


def _free_models(services: Services, *, unload_models: bool, free_memory: bool) -> None:
    """POST /free: move idle models off the GPU (the worker clears the output cache, which owns them)."""
    if services.models is not None and (unload_models or free_memory):
        services.models.offload_all()


# ---- the app ------------------------------------------------------------------------------------------------------
def create_app(config: ServerConfig, *, nodes: Iterable[type[Node] | NodeSpec] | None = None,
               models: Any = None) -> web.Application:
    """The aiohttp application of one server. `nodes` replaces the core node list (tests); `models` is the model
    manager handed to nodes as ctx.services.models."""
    folders = ServerFolders.from_config(config)
    registry, web_dirs = build_registry(config, folders, nodes=nodes)
    services = build_services(config, folders, models=models)
    state = AppState(config=config, folders=folders, registry=registry, users=UserStore(config.user_dir),
                     extension_dirs=web_dirs, services=services)
    app = web.Application(client_max_size=config.max_upload_size, middlewares=[errors, guard, cache_headers])
    app[STATE] = state
    for table in API_ROUTE_TABLES:
        for route in table:
            if not isinstance(route, web.RouteDef):
                continue
            kwargs = dict(route.kwargs)
            app.router.add_route(route.method, "/api" + route.path, route.handler, **kwargs)
            app.router.add_route(route.method, route.path, route.handler, **kwargs)
    for table in INTERNAL_ROUTE_TABLES:
        for route in table:
            if isinstance(route, web.RouteDef):
                app.router.add_route(route.method, "/internal" + route.path, route.handler, **dict(route.kwargs))
    add_static_routes(app, web_root_exists=config.web_root.is_dir())
    app.cleanup_ctx.append(functools.partial(_lifecycle, state))
    return app


async def _lifecycle(state: AppState, app: web.Application) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()

    def start() -> Engine:
        state.folders.create_directories()
        state.folders.empty_temp()
        state.folders.install_examples(state.config.workflows_dir / "assets")
        state.users.create()
        engine = build_engine(state.config, state.registry, state.services)
        if engine.store.recovered:
            log.info("resuming %d prompt(s) interrupted by the last shutdown", len(engine.store.recovered))
        return engine

    engine = await loop.run_in_executor(None, start)
    state.engine = engine
    engine.worker.start()
    try:
        yield
    finally:
        await loop.run_in_executor(None, engine.close)
