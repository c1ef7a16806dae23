"""ComfyUI's `comfy_api.latest`: the V3 node API (io, ui), ComfyExtension, and ComfyAPI's execution helpers.

A pack's entry point:

    from comfy_api.latest import ComfyExtension, io

    class MyExtension(ComfyExtension):
        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            return [MyNode]

    async def comfy_entrypoint() -> MyExtension:
        return MyExtension()
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from typing import Any

from comfy_compat.surface.comfy_api.latest import _io, _ui

io = _io
ui = _ui
comfy_io = io
sys.modules.setdefault(__name__ + ".io", _io)  # `import comfy_api.latest.io` works too
sys.modules.setdefault(__name__ + ".ui", _ui)


class ComfyExtension(ABC):
    """What a pack's `comfy_entrypoint()` returns: its nodes, and a hook run once when it is loaded."""

    async def on_load(self) -> None:
        """Called once when the extension is loaded, before get_node_list."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The V3 node classes of the extension."""


class ComfyAPI_latest:  # noqa: N801 - ComfyUI's name
    """ComfyUI's API object (`ComfyAPI().execution.set_progress(...)`)."""

    VERSION = "latest"
    STABLE = False

    class Execution:
        async def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                               preview_image: Any = None, ignore_size_limit: bool = False) -> None:
            """Report the running node's progress (the node of this call unless `node_id` names it)."""
            set_progress(value, max_value, node_id)

    def __init__(self) -> None:
        self.execution = self.Execution()


def set_progress(value: float, max_value: float, node_id: str | None = None) -> None:
    from comfy_compat import host

    run = host.current_run()
    if run is None or (node_id is not None and node_id != run.node_id):
        raise ValueError("node_id must be provided if not in executing context" if run is None else
                         f"progress of node {node_id} can only be reported while it runs")
    run.progress(int(value), int(max_value))


class ComfyAPISync(ComfyAPI_latest):
    """The same API with plain (blocking) methods."""

    class Execution:
        def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                         preview_image: Any = None, ignore_size_limit: bool = False) -> None:
            set_progress(value, max_value, node_id)


ComfyAPI = ComfyAPI_latest


class Input:
    """Value types by name, as ComfyUI's comfy_api.latest.Input (IMAGE / MASK are tensors, LATENT a dict)."""

    Image = Any
    Audio = dict
    Mask = Any
    Latent = dict
    Video = Any


class InputImpl:
    pass


class Types:
    pass


__all__ = ["ComfyAPI", "ComfyAPISync", "Input", "InputImpl", "Types", "ComfyExtension", "io", "comfy_io", "ui"]
