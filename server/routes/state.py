"""What the route handlers share, stored on the aiohttp app under one typed key (no module globals).

create_app(config) (server/app.py) builds one AppState; handlers read it with `request.app[STATE]`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from nodes.registry import Registry
from nodes.services import Services
from server.compose import Runtime
from server.config import ServerConfig
from server.engine.engine import Engine
from server.hub import EventHub
from server.paths import ServerFolders
from server.userdata import UserStore


def _unchanged(body: Any) -> Any:
    return body


class EngineNotStarted(RuntimeError):
    """A route needed the engine before the app's startup built it."""


@dataclass
class AppState:
    """config and runtime (folders, registry, services, executor): built by create_app; users: the userdata store;
    hub: the websocket hub the engine emits into; engine: the queue and worker, set when the app starts;
    on_prompt: what every POST /prompt body passes through first (custom node packs' PromptServer
    add_on_prompt_handler handlers; the body unchanged without packs)."""

    config: ServerConfig
    runtime: Runtime
    users: UserStore
    hub: EventHub
    _engine: Engine | None = None
    on_prompt: Callable[[Any], Any] = _unchanged

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise EngineNotStarted("the server is still starting")
        return self._engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def folders(self) -> ServerFolders:
        return self.runtime.folders

    @property
    def registry(self) -> Registry:
        return self.runtime.registry

    @property
    def services(self) -> Services:
        return self.runtime.services

    @property
    def extension_dirs(self) -> Mapping[str, Path]:
        return self.runtime.extension_dirs


STATE = web.AppKey("chisel_state", AppState)
