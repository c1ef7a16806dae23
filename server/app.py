"""The app factory: `create_app(config)` builds everything one server needs and passes it down. No globals.

    runtime  = compose(config)                   folders, registry, services, executor (server/compose.py)
    hub      = EventHub()                        the websocket hub: engine events -> ComfyUI messages
    engine   = build_engine(runtime, hub)        + the SQLite queue and what runs it: the worker thread, or with
                                                 --ray the cluster's scheduler and its Ray workers

The engine is built and the worker thread started in the app's cleanup context (startup), and stopped cleanly at
cleanup. `chisel run` (server/cli.py) uses the same compose() without HTTP.
Every route is registered twice, bare and under /api (as ComfyUI), the websocket as /ws and /api/ws; the frontend-only
routes of ComfyUI's /internal sub-app only under /internal.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from nodes.registry import Node, NodeSpec, Registry
from server.compose import build_engine, compose
from server.config import ServerConfig
from server.engine.engine import Engine
from server.hub import EventHub
from server.routes import files, info, inspect, prompt, user, workers, ws
from server.routes.middleware import cache_headers, errors, guard
from server.routes.state import STATE, AppState, EngineNotStarted
from server.routes.static import add_static_routes
from server.userdata import UserStore

if TYPE_CHECKING:
    from nodes.services import ModelManager

log = logging.getLogger("chisel.server")
API_ROUTE_TABLES = (prompt.routes, files.routes, info.routes, inspect.routes, user.routes, workers.routes, ws.routes)
INTERNAL_ROUTE_TABLES = (info.internal_routes,)


# ---- the app ------------------------------------------------------------------------------------------------------
def create_app(config: ServerConfig, *, nodes: Iterable[type[Node] | NodeSpec] | None = None,
               models: ModelManager | None = None) -> web.Application:
    """The aiohttp application of one server. `nodes` replaces the core node list (tests); `models` is the model
    manager handed to nodes as ctx.services.models."""
    runtime = compose(config, nodes=nodes, models=models)
    state = AppState(config=config, runtime=runtime, users=UserStore(config.user_dir), hub=EventHub())
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
    _add_pack_routes(app, state, runtime.registry)
    add_static_routes(app, web_root_exists=config.web_root.is_dir())
    app.cleanup_ctx.append(functools.partial(_lifecycle, state))
    return app


def _add_pack_routes(app: web.Application, state: AppState, registry: Registry) -> None:
    """Custom node packs' routes (PromptServer.instance.routes) after ours, behind the same middlewares, and their
    websocket messages (send_sync) into the hub. A pack route on a path we serve is not added."""
    from nodes.custom_nodes import attach_pack_server, pack_prompt_handler

    hub = state.hub

    def taken(method: str, path: str) -> bool:
        return any(route.method in (method, "*") and route.resource is not None
                   and route.resource.canonical == path for route in app.router.routes())

    skipped = attach_pack_server(
        app, registry, send=lambda event, data, sid: hub.send(event, data, client_id=sid),
        send_preview=lambda preview, sid, metadata: hub.send_preview(preview, client_id=sid, metadata=metadata),
        client_ids=hub.clients, taken=taken, client_of=functools.partial(_client_of, state))
    for note in skipped:
        log.warning("custom node route not added: %s", note)
    handler = pack_prompt_handler(registry)
    if handler is not None:
        state.on_prompt = handler


def _client_of(state: AppState, prompt_id: str) -> str | None:
    """The client that queued a running prompt (a pack's PromptServer.instance.client_id)."""
    try:
        engine = state.engine
    except EngineNotStarted:
        return None
    return next((r.client_id for r in engine.worker.running_prompts() if r.prompt_id == prompt_id), None)


async def _lifecycle(state: AppState, app: web.Application) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()

    def start() -> Engine:
        state.folders.create_directories()
        state.folders.empty_temp()
        state.folders.install_examples(state.config.workflows_dir / "assets")
        state.users.create()
        engine = build_engine(state.runtime, state.hub)
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
