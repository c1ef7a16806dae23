"""What the surface modules know of the running server: its folders, services and registry, the node run in
progress, and the PromptServer packs talk to.

ComfyUI's modules are process-wide (folder_paths has module-level folders, PromptServer.instance is a singleton), and
packs import them as modules, so their state is one per process here too: `configure()` binds it to a server's
parts (the custom-node loader calls it before importing packs; a later server in the same process rebinds it).
Chisel's own code never reads it: only the surface modules do.

The node run in progress (for comfy.utils.ProgressBar and the interrupt check) is a context variable set around each
call of a pack's node (`running(ctx)`); a thread a pack starts itself sees the run in progress (the last one started).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodes.context import RunContext
    from nodes.registry import Registry
    from nodes.services import Services


@dataclass
class Host:
    """services  the server's Services (folders, model manager, settings); None until configured
    registry     the node registry (core nodes and packs), for nodes.NODE_CLASS_MAPPINGS
    base_dir     ComfyUI's base_path (the folder above models/, custom_nodes/ ...)
    allow_pickle whether comfy.utils.load_torch_file may unpickle arbitrary objects (off: weights_only=True)
    cli          the server's settings as ComfyUI's comfy.cli_args.args names them (listen, port, ...)"""

    services: Services | None = None
    registry: Registry | None = None
    base_dir: str = ""
    custom_nodes_dir: str = ""
    allow_pickle: bool = False
    cli: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    listeners: list[Any] = field(default_factory=list)


HOST = Host()
_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("comfy_compat_run", default=None)
_last_run: list[RunContext | None] = [None]
_lock = threading.Lock()


def configure(*, services: Services, registry: Registry | None, base_dir: str, custom_nodes_dir: str = "",
              allow_pickle: bool = False, cli: dict[str, Any] | None = None) -> None:
    """Bind the surface to one server's parts; modules that mirror them (folder_paths) are told to re-read."""
    with _lock:
        HOST.services, HOST.registry = services, registry
        HOST.base_dir, HOST.custom_nodes_dir, HOST.allow_pickle = base_dir, custom_nodes_dir, allow_pickle
        HOST.cli = dict(cli or {})
        HOST.generation += 1
        listeners = list(HOST.listeners)
    for listener in listeners:
        listener()


def on_configure(listener: Any) -> None:
    """Call `listener()` now (when configured) and after every later configure()."""
    with _lock:
        HOST.listeners.append(listener)
        configured = HOST.services is not None
    if configured:
        listener()


def services() -> Services:
    if HOST.services is None:
        raise RuntimeError("the ComfyUI compatibility layer is not bound to a server (comfy_compat.host.configure)")
    return HOST.services


@contextlib.contextmanager
def running(ctx: RunContext) -> Iterator[None]:
    """Mark `ctx` as the node run in progress for the duration (ProgressBar, interrupt checks, PromptServer's
    last_node_id)."""
    token = _current.set(ctx)
    previous, _last_run[0] = _last_run[0], ctx
    try:
        yield
    finally:
        _current.reset(token)
        if _last_run[0] is ctx:
            _last_run[0] = previous


def current_run() -> RunContext | None:
    """The node run in progress in this context (or the last one started, from a pack's own thread)."""
    return _current.get() or _last_run[0]
