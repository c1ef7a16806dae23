"""What the route handlers share, stored on the aiohttp app under one typed key (no module globals).

create_app(config) (server/app.py) builds one AppState; handlers read it with `request.app[STATE]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from nodes.registry import Registry
from server.config import ServerConfig
from server.paths import ServerFolders
from server.userdata import UserStore


@dataclass
class AppState:
    """config, folders, registry, users: built by create_app. engine: the queue/worker/events (server.engine_wiring).
    sockets: the websocket clients (server/routes/ws.py). extension_dirs: custom node web folders by package name."""

    config: ServerConfig
    folders: ServerFolders
    registry: Registry
    users: UserStore
    engine: Any = None
    sockets: Any = None
    extension_dirs: dict[str, Path] = field(default_factory=dict)
    services: Any = None


STATE = web.AppKey("chisel_state", AppState)
