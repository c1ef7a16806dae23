"""ComfyUI's `comfy_extras` package: the extra node modules (nodes_mask, nodes_custom_sampler, ...) packs import
node classes from.

Each `comfy_extras.nodes_*` module ComfyUI has is made when first imported (comfy_compat.finder): it holds
ComfyUI's classes of that module, built like `nodes.X` (comfy_compat/surface/nodes.py) over Chisel's nodes of the
same names, and its NODE_CLASS_MAPPINGS. A module file here with the same name takes precedence.
"""

from __future__ import annotations

from types import ModuleType

from comfy_compat import host
from comfy_compat.surface.core_functions import CORE_FUNCTIONS


def known(fullname: str) -> bool:
    """Whether `comfy_extras.<name>` is one of ComfyUI's node modules."""
    return fullname in CORE_FUNCTIONS and fullname.startswith("comfy_extras.")


def populate(module: ModuleType, fullname: str) -> None:
    """Fill a comfy_extras node module with its classes, now and whenever the surface is bound to a server."""

    def fill() -> None:
        from comfy_compat.surface.nodes import core_classes

        classes = core_classes(fullname)
        module.__dict__.update(classes)
        module.NODE_CLASS_MAPPINGS = dict(classes)  # type: ignore[attr-defined]

    def missing(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        from comfy_compat.surface.unavailable import placeholder

        return placeholder(f"{fullname}.{name}")  # a helper of ComfyUI's module: fails clearly when used

    module.__doc__ = f"ComfyUI's {fullname}: its node classes, run by Chisel's nodes of the same names."
    module.__getattr__ = missing  # type: ignore[attr-defined]
    host.on_configure(fill)
    if host.HOST.services is None:
        fill()


def __getattr__(name: str):  # noqa: ANN202 - `from comfy_extras import nodes_mask` for ComfyUI's node modules
    import importlib

    from comfy_compat.surface.unavailable import is_comfy_module

    if not name.startswith("__") and (known(f"comfy_extras.{name}") or is_comfy_module(f"comfy_extras.{name}")):
        return importlib.import_module(f"comfy_extras.{name}")
    raise AttributeError(f"module 'comfy_extras' has no attribute {name!r}")
