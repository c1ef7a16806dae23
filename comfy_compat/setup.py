"""Binding ComfyUI's surface to one server, before its custom node packs are imported (called by the loader).

    setup(services=..., registry=..., base_dir=..., host_modules={"nodes": nodes, "server": server})

installs the import finder (comfy_compat.finder), binds the surface modules' state (comfy_compat.host), starts a
fresh PromptServer.instance, builds the core node classes of `nodes.X`, and adds ComfyUI's names to Chisel's own
`nodes` and `server` packages (the two ComfyUI module names that are also Chisel's: `import nodes` and
`from server import PromptServer` in a pack get Chisel's package with ComfyUI's names added). A name Chisel's
package already has is never replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from comfy_compat import finder, host

if TYPE_CHECKING:
    from nodes.registry import Registry
    from nodes.services import Services

_injected: dict[str, set[str]] = {}  # module name -> the names comfy_compat added to it
_lock = threading.Lock()
SERVER_NAMES = ("PromptServer", "BinaryEventTypes")


def setup(*, services: Services, registry: Registry, base_dir: str, custom_nodes_dir: str = "",
          allow_pickle: bool = False, cli: Mapping[str, Any] | None = None,
          host_modules: Mapping[str, ModuleType] | None = None) -> None:
    finder.install()
    host.configure(services=services, registry=registry, base_dir=base_dir, custom_nodes_dir=custom_nodes_dir,
                   allow_pickle=allow_pickle, cli=dict(cli or {}))
    from comfy_compat.surface import nodes as comfy_nodes
    from comfy_compat.surface import server as comfy_server

    comfy_server.PromptServer.instance.reset()
    classes = comfy_nodes.rebuild()
    modules = dict(host_modules or {})
    if "nodes" in modules:
        names = {name: getattr(comfy_nodes, name) for name in comfy_nodes.__all__}
        names.update(classes)
        _add_names(modules["nodes"], names)
    if "server" in modules:
        _add_names(modules["server"], {name: getattr(comfy_server, name) for name in SERVER_NAMES})


def _add_names(module: ModuleType, names: Mapping[str, Any]) -> None:
    with _lock:
        ours = _injected.setdefault(module.__name__, set())
        for name, value in names.items():
            if name in module.__dict__ and name not in ours:
                continue  # Chisel's own attribute (or submodule) of that name stays
            setattr(module, name, value)
            ours.add(name)


def register_pack_classes(mappings: Mapping[str, type], display: Mapping[str, str] | None = None) -> None:
    """A loaded pack's classes join nodes.NODE_CLASS_MAPPINGS (other packs look each other's nodes up there)."""
    from comfy_compat.surface import nodes as comfy_nodes

    for name, cls in mappings.items():
        comfy_nodes.NODE_CLASS_MAPPINGS[str(name)] = cls
    for name, title in (display or {}).items():
        comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS[str(name)] = str(title)


def extension_web_dirs() -> dict[str, str]:
    """Web folders packs registered through nodes.EXTENSION_WEB_DIRS."""
    from comfy_compat.surface import nodes as comfy_nodes

    return dict(comfy_nodes.EXTENSION_WEB_DIRS)


def boundary() -> Any:
    from comfy_compat.values import BOUNDARY

    return BOUNDARY


def bound_registry() -> Any:
    """The registry the surface is bound to (the last server set up in this process)."""
    return host.HOST.registry


def attach_server(app: Any, **channels: Any) -> list[str]:
    """PromptServer.instance.attach(app, ...): the packs' routes into the app, their messages into the hub."""
    from comfy_compat.surface.server import PromptServer

    return PromptServer.instance.attach(app, **channels)
