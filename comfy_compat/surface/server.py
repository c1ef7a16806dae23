"""ComfyUI's `server` module for custom node packs: `PromptServer.instance` and `BinaryEventTypes`.

Chisel's own `server` package is not ComfyUI's, so the loader adds these two names to it (comfy_compat.setup);
`from server import PromptServer` then works in a pack. The instance is created before packs load, as ComfyUI's:

    routes            an aiohttp RouteTableDef; its routes are added to the app (bare and under /api, as ComfyUI
                      does) after Chisel's own, so they pass the same middlewares: Host/Origin checks and the auth
                      token. A route whose path Chisel already serves never replaces Chisel's.
    app               the application's router, middlewares and add_routes, recorded while packs load and applied
                      when the app is built
    send_sync(event, data, sid=None) / send(...) / send_json(...)
                      a websocket message {"type": event, "data": data} to one client (sid) or all, through the
                      server's hub; BinaryEventTypes.UNENCODED_PREVIEW_IMAGE / PREVIEW_IMAGE send preview frames
    client_id, last_node_id, last_prompt_id
                      of the node run in progress
    add_on_prompt_handler(fn)
                      every POST /prompt body passes through them first, in order (ComfyUI's trigger_on_prompt)
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from comfy_compat import host

log = logging.getLogger("chisel.custom_nodes")


class BinaryEventTypes:
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class _Preview:
    """An encoded preview frame for the hub (`.data`, `.format`)."""

    def __init__(self, data: bytes, format: str):  # noqa: A002 - the hub's field name
        self.data, self.format = data, format


class _DeferredRouter:
    """`app.router` while packs load: add_* calls are recorded and replayed onto the real application."""

    def __init__(self, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]):
        self._calls = calls

    frozen = False

    def routes(self) -> list[Any]:
        return []

    def resources(self) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Callable[..., None]:
        if not name.startswith("add_"):
            raise AttributeError(f"the application's router has no {name!r} before the server starts")

        def record(*args: Any, **kwargs: Any) -> None:
            self._calls.append((name, args, kwargs))

        return record


class _DeferredApp:
    """`PromptServer.instance.app` before the aiohttp application exists."""

    def __init__(self) -> None:
        self.router_calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.router = _DeferredRouter(self.router_calls)
        self.middlewares: list[Any] = []
        self.route_lists: list[Any] = []
        self._state: dict[str, Any] = {}

    def add_routes(self, routes: Any) -> None:
        self.route_lists.append(list(routes))

    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self._state.get(key, default)


class PromptServer:
    """ComfyUI's PromptServer as packs use it (see the module docstring)."""

    instance: PromptServer

    def __init__(self) -> None:
        PromptServer.instance = self
        self.reset()

    def reset(self) -> None:
        """Forget the routes, handlers and app of an earlier server (packs are imported again for each one)."""
        self.routes = web.RouteTableDef()
        self.app: Any = _DeferredApp()
        self.on_prompt_handlers: list[Callable[[Any], Any]] = []
        self.supports = ["custom_nodes_from_web"]
        self.messages: Any = None
        self.number = 0
        self.sockets: dict[str, Any] = {}
        self.sockets_metadata: dict[str, Any] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.prompt_queue: Any = None
        self.user_manager: Any = None
        self.web_root = ""
        self._send: Callable[[str, Mapping[str, Any], str | None], None] | None = None
        self._send_preview: Callable[[Any, str | None, Mapping[str, Any]], None] | None = None
        self._client_ids: Callable[[], list[str]] = list
        self._client_of: Callable[[str], str | None] = lambda prompt_id: None

    # ---- the server's side --------------------------------------------------------------------------------------
    def attach(self, app: web.Application, *, send: Callable[[str, Mapping[str, Any], str | None], None],
               send_preview: Callable[[Any, str | None, Mapping[str, Any]], None],
               client_ids: Callable[[], list[str]], taken: Callable[[str, str], bool],
               client_of: Callable[[str], str | None] = lambda prompt_id: None) -> list[str]:
        """Add the packs' routes, router calls and middlewares to `app` and route messages to `send`. Routes whose
        method and path `taken` already are stay Chisel's; returns a note for each one skipped. `client_of(prompt
        id)` is the client that queued a running prompt (PromptServer.instance.client_id)."""
        deferred = self.app if isinstance(self.app, _DeferredApp) else None
        self._send, self._send_preview, self._client_ids = send, send_preview, client_ids
        self._client_of = client_of
        skipped: list[str] = []
        tables = [list(self.routes)] + (deferred.route_lists if deferred else [])
        added: set[tuple[str, str]] = set()
        for table in tables:
            for route in table:
                if isinstance(route, web.RouteDef):
                    for prefix in ("/api", ""):
                        path = prefix + route.path
                        if taken(route.method, path) or (route.method, path) in added:
                            skipped.append(f"{route.method} {path}: already served")
                            continue
                        added.add((route.method, path))
                        app.router.add_route(route.method, path, route.handler, **dict(route.kwargs))
                else:  # StaticDef and the like
                    route.register(app.router)
        if deferred is not None:
            for name, args, kwargs in deferred.router_calls:
                getattr(app.router, name)(*args, **kwargs)
            app.middlewares.extend(deferred.middlewares)
            for key, value in deferred._state.items():
                app[key] = value
        self.app = app
        return skipped

    # ---- messages -----------------------------------------------------------------------------------------------
    def send_sync(self, event: Any, data: Any, sid: str | None = None) -> None:
        if self._send is None:
            return  # no websocket clients without a server (chisel run)
        if isinstance(event, int):
            self._send_binary(event, data, sid)
            return
        self._send(str(event), data, sid)

    async def send(self, event: Any, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def send_progress_text(self, text: str, node_id: str, sid: str | None = None) -> None:
        self.send_sync("progress_text", {"text": text, "node": node_id}, sid)

    def _send_binary(self, event: int, data: Any, sid: str | None) -> None:
        if event in (BinaryEventTypes.UNENCODED_PREVIEW_IMAGE, BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA):
            metadata: dict[str, Any] = {}
            if event == BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA:
                data, metadata = data
            image_type, image = data[0], data[1]
            max_size = data[2] if len(data) > 2 else None
            preview = _encode(image_type, image, max_size)
        elif event == BinaryEventTypes.PREVIEW_IMAGE and isinstance(data, (bytes, bytearray)):
            kind = "PNG" if data[:4] == b"\x89PNG" else "JPEG"
            preview, metadata = _Preview(bytes(data), kind), {}
        else:
            log.warning("a custom node sent binary event %r, which is not supported", event)
            return
        ctx = host.current_run()
        metadata = {"node_id": getattr(ctx, "node_id", None), "prompt_id": getattr(ctx, "prompt_id", None),
                    "display_node_id": getattr(ctx, "node_id", None), "parent_node_id": None,
                    "real_node_id": getattr(ctx, "node_id", None), **dict(metadata)}
        if self._send_preview is not None:
            self._send_preview(preview, sid, metadata)

    # ---- state packs read ---------------------------------------------------------------------------------------
    @property
    def client_id(self) -> str | None:
        """The client that queued the prompt whose node is running (None outside a run, or without a client)."""
        ctx = host.current_run()
        return self._client_of(ctx.prompt_id) if ctx is not None else None

    @property
    def last_node_id(self) -> str | None:
        ctx = host.current_run()
        return ctx.node_id if ctx is not None else None

    @property
    def last_prompt_id(self) -> str | None:
        ctx = host.current_run()
        return ctx.prompt_id if ctx is not None else None

    def add_on_prompt_handler(self, handler: Callable[[Any], Any]) -> None:
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, json_data: Any) -> Any:
        for handler in self.on_prompt_handlers:
            try:
                json_data = handler(json_data)
            except Exception:  # a pack's handler: logged, the prompt goes on
                log.exception("an on_prompt handler of a custom node failed")
        return json_data

    def queue_updated(self) -> None:
        return None

    def add_routes(self) -> None:  # ComfyUI's server adds them itself; here attach() does
        return None


def _encode(image_type: str, image: Any, max_size: int | None) -> _Preview:
    kind = "PNG" if str(image_type).upper() == "PNG" else "JPEG"
    image = image.convert("RGB") if getattr(image, "mode", "RGB") not in ("RGB", "RGBA") else image
    if max_size:
        image = image.copy()
        image.thumbnail((int(max_size), int(max_size)))
    buffer = io.BytesIO()
    (image.convert("RGB") if kind == "JPEG" else image).save(buffer, format=kind, quality=95)
    return _Preview(buffer.getvalue(), kind)


PromptServer()
