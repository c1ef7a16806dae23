"""The core node classes a server registers (the app factory calls `core_nodes()`).

Minimal version written by the server helper: the image and primitive nodes that exist so far, found in their
modules in declaration order. The coordinator extends it with the diffusion nodes.
"""

from __future__ import annotations

from types import ModuleType

from nodes.registry import Node


def core_nodes() -> list[type[Node]]:
    from nodes import image, primitives

    found: list[type[Node]] = []
    for module in (image, primitives):
        found.extend(_declared_nodes(module))
    return found


def _declared_nodes(module: ModuleType) -> list[type[Node]]:
    """Node subclasses defined in `module` itself (not imported into it), in source order."""
    return [value for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Node) and value is not Node
            and value.__module__ == module.__name__]
