"""The import finder that gives custom node packs ComfyUI's module names.

`install()` puts a `sys.meta_path` finder in front that maps `folder_paths`, `comfy`, `comfy.*`, `comfy_extras.*`,
`comfy_api.*`, `comfy_execution.*`, `latent_preview`, `node_helpers`, `execution`, ... onto
`comfy_compat.surface.<same name>`. The alias is the same module object under both names (so `comfy.utils` and
`comfy_compat.surface.comfy.utils` are one module, with one state), imported on first use.

A ComfyUI module the surface does not implement (say `comfy.ldm.flux.math`) is a placeholder module
(comfy_compat.surface.unavailable: importable, failing when used, reported); a name ComfyUI does not have either
raises ModuleNotFoundError naming it. `server` and `nodes` are Chisel's
own packages and are not mapped here: comfy_compat.host adds ComfyUI's attributes to them instead.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType

SURFACE = "comfy_compat.surface"

# ComfyUI's top-level module names that the surface provides (the first part of a dotted name).
ROOTS = frozenset({
    "folder_paths", "comfy", "comfy_extras", "comfy_api", "comfy_execution", "comfy_config", "latent_preview",
    "node_helpers", "execution", "comfyui_version", "protocol",
})

_lock = threading.Lock()


def surface_name(fullname: str) -> str | None:
    """The surface module behind a ComfyUI module name, or None when the name is not one of ComfyUI's roots."""
    if fullname.split(".", 1)[0] not in ROOTS:
        return None
    return f"{SURFACE}.{fullname}"


class _AliasLoader(importlib.abc.Loader):
    """Loads a ComfyUI name as the already imported surface module (one module, two names)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.own_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The surface module ran when it was imported; importlib has just set its __spec__ to the alias's, so give
        # it back its own (its __name__, __package__ and relative imports stay those of comfy_compat.surface).
        module.__spec__ = self.own_spec


class _GeneratedLoader(importlib.abc.Loader):
    """Makes one of ComfyUI's comfy_extras node modules that has no file in the surface (comfy_compat.surface
    .comfy_extras.populate)."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        from comfy_compat.surface.comfy_extras import populate

        populate(module, module.__name__)


class _UnavailableLoader(importlib.abc.Loader):
    """Makes a ComfyUI module Chisel does not implement (comfy_compat.surface.unavailable)."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        from comfy_compat.surface.unavailable import make_module

        return make_module(spec.name)

    def exec_module(self, module: ModuleType) -> None:
        return None


class ComfySurfaceFinder(importlib.abc.MetaPathFinder):
    """Finds ComfyUI module names in comfy_compat.surface (see the module docstring)."""

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 - the MetaPathFinder signature
        target_name = surface_name(fullname)
        if target_name is None:
            return None
        try:
            real = importlib.util.find_spec(target_name)
        except (ModuleNotFoundError, ValueError):  # a parent of the name is missing, or not a surface module
            real = None
        if real is None:
            from comfy_compat.surface.comfy_extras import known
            from comfy_compat.surface.unavailable import is_comfy_module

            if known(fullname):
                return importlib.machinery.ModuleSpec(fullname, _GeneratedLoader())
            if is_comfy_module(fullname):
                return importlib.machinery.ModuleSpec(fullname, _UnavailableLoader())
            return None
        return importlib.machinery.ModuleSpec(
            fullname, _AliasLoader(target_name), origin=real.origin,
            is_package=real.submodule_search_locations is not None)


def installed() -> bool:
    return any(isinstance(finder, ComfySurfaceFinder) for finder in sys.meta_path)


def install() -> None:
    """Put the finder first on sys.meta_path (once; later calls do nothing)."""
    with _lock:
        if not installed():
            sys.meta_path.insert(0, ComfySurfaceFinder())

