"""ComfyUI names Chisel does not implement: importable, failing clearly when used.

Packs often import a ComfyUI internal at the top of a module for one node (`from comfy.ldm.modules.attention import
optimized_attention`, `class X(comfy.controlnet.ControlBase)`), so a missing module would sink the whole pack. Here
such a name is a placeholder: importing it works, subclassing it works, and calling or instantiating it raises
NotImplementedError naming it. Only names ComfyUI really has get one (core_functions.COMFY_MODULES / MODULE_NAMES):
`hasattr` and imports of names ComfyUI lacks answer as in ComfyUI. Every placeholder a pack reaches is reported.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from comfy_compat.surface.core_functions import COMFY_MODULES, MODULE_IMPORTS, MODULE_NAMES

# Modules of older ComfyUI versions that packs still import (before spandrel replaced chainner_models).
LEGACY_MODULES = frozenset({"comfy_extras.chainner_models", "comfy_extras.chainner_models.model_loading",
                            "comfy_extras.chainner_models.types"})
_lock = threading.Lock()
_placeholders: dict[str, type] = {}
listeners: list[Callable[[str], None]] = []  # told the qualified name of each placeholder module or name made


class NotInChisel(NotImplementedError):
    """A ComfyUI internal that Chisel does not implement was used by a custom node."""


def _report(qualified: str) -> None:
    for listener in list(listeners):
        listener(qualified)


def placeholder(qualified: str) -> type:
    """The placeholder class for ComfyUI's `qualified` name (one per name)."""
    with _lock:
        found = _placeholders.get(qualified)
        if found is not None:
            return found

        def refuse(cls: type, *args: Any, **kwargs: Any) -> Any:
            raise NotInChisel(f"ComfyUI's {qualified} is not available in Chisel, so the custom node that uses it "
                              f"cannot run here")

        module, _, name = qualified.rpartition(".")
        made = type(name, (), {"__new__": refuse, "__module__": module, "__qualname__": name,
                               "__doc__": f"ComfyUI's {qualified}, which Chisel does not implement."})
        _placeholders[qualified] = made
    _report(qualified)
    return made


def module_attribute(module: str, name: str) -> Any:
    """For a surface module's __getattr__: what ComfyUI's `module` binds `name` to at its top level: an imported
    module or name (`np` in comfy.sample), or a placeholder for its own functions and classes; else
    AttributeError."""
    imported = MODULE_IMPORTS.get(module, {}).get(name)
    if imported is not None:
        source, _, attribute = imported.partition(":")
        try:
            found = importlib.import_module(source)
            return getattr(found, attribute) if attribute else found
        except (ImportError, AttributeError):
            pass
    if name in MODULE_NAMES.get(module, ()):
        return placeholder(f"{module}.{name}")
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


class UnavailableModule(ModuleType):
    """A ComfyUI module Chisel does not implement: its submodules are modules, every other name a placeholder."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        child = f"{self.__name__}.{name}"
        if is_comfy_module(child):
            return importlib.import_module(child)
        return placeholder(child)


def is_comfy_module(fullname: str) -> bool:
    """One of ComfyUI's modules or packages (namespace packages such as comfy.ldm included)."""
    return fullname in COMFY_MODULES or fullname in LEGACY_MODULES or _is_package(fullname)


def _is_package(fullname: str) -> bool:
    prefix = fullname + "."
    return any(name.startswith(prefix) for name in COMFY_MODULES) or \
        any(name.startswith(prefix) for name in LEGACY_MODULES)


def make_module(fullname: str) -> UnavailableModule:
    module = UnavailableModule(fullname, f"ComfyUI's {fullname}, which Chisel does not implement (its names are "
                                         f"placeholders that fail when used).")
    if _is_package(fullname):
        module.__path__ = []  # a package: its submodules import
    _report(fullname)
    return module
