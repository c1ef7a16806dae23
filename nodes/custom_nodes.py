"""Loading custom node packs from a custom_nodes/ folder, ComfyUI's way, without letting one pack stop the server.

Each `*.py` file and each folder with an `__init__.py` is a pack (entries ending `.disabled`, `__pycache__` and
hidden entries are skipped). A pack is imported with importlib under a private module name and exports either
  - ComfyUI's NODE_CLASS_MAPPINGS (+ NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY): adapted by nodes/legacy.py, or
  - `NODES`, a tuple of typed nodes.registry.Node subclasses.
Core node names cannot be overridden; between packs the last one loaded wins (as ComfyUI). A pack that fails to
import is reported and skipped; a node that fails to adapt is reported and the rest of its pack still loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodes.legacy import LegacyNodeError, adapt_legacy_node
from nodes.registry import Node, Registry, spec_of

TRACEBACK_FRAMES = 6  # frames kept in a failed pack's traceback summary


@dataclass(frozen=True)
class PackReport:
    """What loading one pack did.

    name            the entry name in custom_nodes/ (file stem or folder name)
    nodes           the node types it registered
    import_seconds  time spent importing it
    error           why the whole pack was skipped (None when it loaded)
    traceback       the last frames of the failure, for the log
    skipped_nodes   {node name: why it was not registered} (core name, failed to adapt, not a node)
    web_directory   its front-end extension folder (WEB_DIRECTORY), resolved, when it has one
    """

    name: str
    path: Path
    nodes: tuple[str, ...] = ()
    import_seconds: float = 0.0
    error: str | None = None
    traceback: str | None = None
    skipped_nodes: Mapping[str, str] = field(default_factory=dict)
    web_directory: Path | None = None

    @property
    def loaded(self) -> bool:
        return self.error is None


def pack_entries(directory: Path) -> list[Path]:
    """The pack candidates of a custom_nodes folder, sorted by name."""
    if not directory.is_dir():
        return []
    entries = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".disabled") or entry.name == "__pycache__" or entry.name.startswith("."):
            continue
        if (entry.is_file() and entry.suffix == ".py") or (entry.is_dir() and (entry / "__init__.py").is_file()):
            entries.append(entry)
    return entries


def load_custom_nodes(directory: str | Path, registry: Registry) -> list[PackReport]:
    """Import every pack of `directory` into `registry`; one report per pack, in load order."""
    core = {name for name in registry.names() if registry.source(name) == "core"}
    return [load_pack(entry, registry, protected=core) for entry in pack_entries(Path(directory))]


def load_pack(path: Path, registry: Registry, *, protected: set[str]) -> PackReport:
    """Import one pack and register its nodes (names in `protected` are never replaced)."""
    name = path.stem if path.is_file() else path.name
    started = time.perf_counter()
    try:
        module = _import(path, name)
    except (Exception, SystemExit) as error:  # a pack's own code: anything it raises (even exit()) is reported
        return PackReport(name=name, path=path, import_seconds=time.perf_counter() - started,
                          error=f"{type(error).__name__}: {error}", traceback=_summary(error))
    elapsed = time.perf_counter() - started

    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    typed = getattr(module, "NODES", None)
    if mappings is None and typed is None:
        why = ("is a ComfyUI V3 extension (comfy_entrypoint), which is not supported"
               if hasattr(module, "comfy_entrypoint") else "exports neither NODE_CLASS_MAPPINGS nor NODES")
        return PackReport(name=name, path=path, import_seconds=elapsed, error=why)

    registered: list[str] = []
    skipped: dict[str, str] = {}
    source = name

    def register(node_name: str, node: Any) -> None:
        if node_name in protected:
            skipped[node_name] = "a core node has this name; core nodes cannot be overridden"
            return
        registry.add(node, source=source, replace=True)
        registered.append(node_name)

    if isinstance(mappings, Mapping):
        display = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
        for node_name, cls in mappings.items():
            try:
                spec = adapt_legacy_node(str(node_name), cls, display_name=display.get(node_name),
                                         python_module=f"custom_nodes.{name}")
            except LegacyNodeError as error:
                skipped[str(node_name)] = error.reason
                continue
            register(spec.name, spec)
    elif mappings is not None:
        skipped["NODE_CLASS_MAPPINGS"] = f"is a {type(mappings).__name__}, not a dict"

    for node in typed or ():
        if not (isinstance(node, type) and issubclass(node, Node)):
            skipped[repr(node)] = "listed in NODES but not a nodes.registry.Node subclass"
            continue
        try:
            spec = spec_of(node, python_module=f"custom_nodes.{name}")
        except TypeError as error:
            skipped[node.node_type] = str(error)
            continue
        register(spec.name, spec)

    web, web_problem = _web_directory(module, path)
    if web_problem:
        skipped["WEB_DIRECTORY"] = web_problem
    return PackReport(name=name, path=path, nodes=tuple(registered), import_seconds=elapsed,
                      skipped_nodes=skipped, web_directory=web)


def _import(path: Path, name: str) -> Any:
    """Execute a pack under a private module name (so packs cannot shadow real modules or each other)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    module_name = "chisel_custom_nodes_" + re.sub(r"\W", "_", name) + "_" + digest
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(module_name, path / "__init__.py",
                                                      submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    _forget(module_name)
    sys.modules[module_name] = module  # relative imports inside a package pack resolve through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:  # leave no half-imported module behind, whatever went wrong
        _forget(module_name)
        raise
    return module


def _forget(module_name: str) -> None:
    for key in [k for k in sys.modules if k == module_name or k.startswith(module_name + ".")]:
        del sys.modules[key]


def _summary(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=-TRACEBACK_FRAMES))


def _web_directory(module: Any, path: Path) -> tuple[Path | None, str | None]:
    """(the pack's WEB_DIRECTORY when it is a folder inside the pack, or why it is not used)."""
    relative = getattr(module, "WEB_DIRECTORY", None)
    if relative is None:
        return None, None
    if not isinstance(relative, str) or not path.is_dir():
        return None, f"{relative!r} is not a folder name inside a package pack"
    root = path.resolve()
    web = (root / relative).resolve()
    if web != root and root not in web.parents:
        return None, f"{relative!r} points outside the pack"
    if not web.is_dir():
        return None, f"{relative!r} is not a folder"
    return web, None
