"""Loading custom node packs from a custom_nodes/ folder, ComfyUI's way, without letting one pack stop the server.

Each `*.py` file and each folder with an `__init__.py` is a pack (entries ending `.disabled`, `__pycache__` and
hidden entries are skipped). A pack is imported with importlib under a private module name and exports either
  - ComfyUI's NODE_CLASS_MAPPINGS (+ NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY): adapted by nodes/legacy.py, or
  - `NODES`, a tuple of typed nodes.registry.Node subclasses, or
  - ComfyUI's V3 `async def comfy_entrypoint() -> ComfyExtension` (its io.ComfyNode classes: comfy_compat.v3_nodes).
Core node names cannot be overridden; between packs the last one loaded wins (as ComfyUI). A pack that fails to
import is reported and skipped; a node that fails to adapt is reported and the rest of its pack still loads.

With a PackEnvironment (what the composition root passes), packs written for ComfyUI get its Python surface first
(comfy_compat: `folder_paths`, `comfy.*`, `nodes.X`, `server.PromptServer`, ...; docs/custom-nodes.md), their MODEL /
CLIP / VAE inputs as ComfyUI's objects, and a pack on the environment's disabled list is not imported at all. A pack
that fails names the module that really failed, even when it caught the ImportError itself: the modules no finder
could find while it was imported are listed in its report. Nothing here runs a pack's install or prestartup scripts.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from nodes.legacy import PLAIN, Boundary, LegacyNodeError, adapt_legacy_node
from nodes.registry import Node, Registry, spec_of

if TYPE_CHECKING:
    from nodes.services import Services

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
    missing_modules modules the pack tried to import that do not exist here (even ones it caught the error of)
    comfy_placeholders  ComfyUI internals the pack imported that Chisel does not implement (its nodes that use
                    them fail when run; first use in this process)
    disabled        not imported: on the disabled list (or all packs disabled)
    """

    name: str
    path: Path
    nodes: tuple[str, ...] = ()
    import_seconds: float = 0.0
    error: str | None = None
    traceback: str | None = None
    skipped_nodes: Mapping[str, str] = field(default_factory=dict)
    web_directory: Path | None = None
    missing_modules: tuple[str, ...] = ()
    disabled: bool = False
    comfy_placeholders: tuple[str, ...] = ()

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


@dataclass(frozen=True)
class PackEnvironment:
    """What packs written for ComfyUI are given (built by the composition root).

    services      the server's services (folders, model manager, settings): folder_paths, comfy.* work on them
    base_dir      ComfyUI's base path (folder_paths.base_path)
    disabled      pack names (entry names in custom_nodes/, a `.py` suffix optional) that are not imported
    allow_pickle  comfy.utils.load_torch_file may unpickle arbitrary objects (off: weights only)
    cli           the server's settings under comfy.cli_args.args names (listen, port, ...)
    host_modules  Chisel's packages that share a name with a ComfyUI module ({"server": the server package});
                  ComfyUI's names are added to them (`nodes` is always this package)
    """

    services: Services
    base_dir: Path
    disabled: frozenset[str] = frozenset()
    allow_pickle: bool = False
    cli: Mapping[str, Any] = field(default_factory=dict)
    host_modules: Mapping[str, ModuleType] = field(default_factory=dict)


def load_custom_nodes(directory: str | Path, registry: Registry, *,
                      environment: PackEnvironment | None = None) -> list[PackReport]:
    """Import every pack of `directory` into `registry`; one report per pack, in load order."""
    core = {name for name in registry.names() if registry.source(name) == "core"}
    boundary = PLAIN
    if environment is not None:
        boundary = _prepare(Path(directory), registry, environment)
    disabled = {n.removesuffix(".py") for n in environment.disabled} if environment is not None else set()
    reports = []
    for entry in pack_entries(Path(directory)):
        name = entry.stem if entry.is_file() else entry.name
        if name in disabled:
            reports.append(PackReport(name=name, path=entry, error="disabled", disabled=True))
            continue
        reports.append(load_pack(entry, registry, protected=core, boundary=boundary,
                                 compat=environment is not None))
    return reports


def _prepare(directory: Path, registry: Registry, environment: PackEnvironment) -> Boundary:
    """ComfyUI's surface bound to this server (comfy_compat.setup); the boundary packs' values cross."""
    import nodes as nodes_package
    from comfy_compat.setup import boundary, setup

    setup(services=environment.services, registry=registry, base_dir=str(environment.base_dir),
          custom_nodes_dir=str(directory), allow_pickle=environment.allow_pickle, cli=environment.cli,
          host_modules={"nodes": nodes_package, **environment.host_modules})
    return boundary()


def attach_pack_server(app: Any, registry: Registry, *, send: Callable[[str, Mapping[str, Any], str | None], None],
                       send_preview: Callable[[Any, str | None, Mapping[str, Any]], None],
                       client_ids: Callable[[], list[str]], taken: Callable[[str, str], bool],
                       client_of: Callable[[str], str | None] = lambda prompt_id: None) -> list[str]:
    """The routes packs added to PromptServer.instance.routes (and its app) into `app`, and their websocket
    messages into `send`/`send_preview`; returns a note per route not added (the path is served already).
    Nothing to do unless `registry`'s packs were loaded with an environment (the last ones in this process)."""
    if "comfy_compat.setup" not in sys.modules:
        return []
    from comfy_compat.setup import attach_server, bound_registry

    if bound_registry() is not registry:
        return []
    return attach_server(app, send=send, send_preview=send_preview, client_ids=client_ids, taken=taken,
                         client_of=client_of)


def pack_prompt_handler(registry: Registry) -> Callable[[Any], Any] | None:
    """What POST /prompt bodies pass through first when `registry`'s packs were loaded with the compatibility layer:
    the handlers packs gave PromptServer.instance.add_on_prompt_handler, in order (ComfyUI's trigger_on_prompt)."""
    if "comfy_compat.setup" not in sys.modules:
        return None
    from comfy_compat.setup import bound_registry
    from comfy_compat.surface.server import PromptServer

    return PromptServer.instance.trigger_on_prompt if bound_registry() is registry else None


def load_pack(path: Path, registry: Registry, *, protected: set[str], boundary: Boundary = PLAIN,
              compat: bool = False) -> PackReport:
    """Import one pack and register its nodes (names in `protected` are never replaced)."""
    name = path.stem if path.is_file() else path.name
    started = time.perf_counter()
    with _recording_missing_modules() as missing, _refusing_installs(name), \
            _recording_placeholders(compat) as placeholders:
        try:
            module = _import(path, name)
        except (Exception, SystemExit) as error:  # a pack's own code: anything it raises (even exit()) is reported
            return PackReport(name=name, path=path, import_seconds=time.perf_counter() - started,
                              error=_with_missing(f"{type(error).__name__}: {error}", missing, error),
                              traceback=_summary(error), missing_modules=tuple(missing),
                              comfy_placeholders=tuple(placeholders))
    elapsed = time.perf_counter() - started

    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    typed = getattr(module, "NODES", None)
    entrypoint = getattr(module, "comfy_entrypoint", None) if mappings is None else None  # ComfyUI's V3 packs
    if mappings is None and typed is None and not callable(entrypoint):
        why = "exports neither NODE_CLASS_MAPPINGS, NODES nor comfy_entrypoint"
        return PackReport(name=name, path=path, import_seconds=elapsed, error=_with_missing(why, missing),
                          missing_modules=tuple(missing), comfy_placeholders=tuple(placeholders))

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
                if _is_v3_node(cls):  # a V3 class listed the V1 way: its schema names it
                    from comfy_compat.v3_nodes import v3_spec

                    spec = v3_spec(cls, python_module=f"custom_nodes.{name}", boundary=boundary)
                else:
                    spec = adapt_legacy_node(str(node_name), cls, display_name=display.get(node_name),
                                             python_module=f"custom_nodes.{name}", boundary=boundary)
            except LegacyNodeError as error:
                skipped[str(node_name)] = error.reason
                continue
            register(spec.name, spec)
        if compat:
            from comfy_compat.setup import register_pack_classes

            register_pack_classes({k: v for k, v in mappings.items() if str(k) in registered},
                                  display if isinstance(display, Mapping) else None)
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

    if callable(entrypoint):
        from comfy_compat.v3_nodes import extension_nodes, extension_specs

        try:
            v3_nodes = extension_nodes(entrypoint)
        except (Exception, SystemExit) as error:  # the pack's own entry point
            return PackReport(name=name, path=path, import_seconds=time.perf_counter() - started,
                              error=f"comfy_entrypoint failed: {type(error).__name__}: {error}",
                              traceback=_summary(error), missing_modules=tuple(missing))
        specs, v3_skipped = extension_specs(v3_nodes, python_module=f"custom_nodes.{name}", boundary=boundary)
        skipped.update(v3_skipped)
        for spec in specs:
            register(spec.name, spec)

    web, web_problem = _web_directory(module, path)
    if web_problem:
        skipped["WEB_DIRECTORY"] = web_problem
    if web is None and compat:
        web = _registered_web_directory(name, path)
    return PackReport(name=name, path=path, nodes=tuple(registered), import_seconds=elapsed,
                      skipped_nodes=skipped, web_directory=web, missing_modules=tuple(missing),
                      comfy_placeholders=tuple(placeholders))


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


_installs = threading.local()
_audit_lock = threading.Lock()
_audit_installed = False


def _refuse_install(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: while a pack is imported (in this thread), installing packages (pip, by subprocess, os.system
    or `import pip`) is refused, so a pack cannot change the Python environment by being loaded."""
    pack = getattr(_installs, "pack", None)
    if pack is None:
        return
    if event == "import" and args and str(args[0]).split(".")[0] == "pip":
        raise ImportError(f"custom node pack {pack} tried to run pip while being imported; Chisel does not let "
                          f"packs install packages (install its requirements yourself)", name="pip")
    if event in ("subprocess.Popen", "os.system", "os.posix_spawn", "os.exec"):
        words = " ".join(str(a) for a in (args[1] if event == "subprocess.Popen" and len(args) > 1 else args))
        if "pip" in words and "install" in words:
            raise PermissionError(f"custom node pack {pack} tried to install packages while being imported "
                                  f"({words[:200]}); Chisel does not let packs install packages (install its "
                                  f"requirements yourself)")


@contextmanager
def _refusing_installs(pack: str) -> Iterator[None]:
    global _audit_installed
    with _audit_lock:
        if not _audit_installed:
            sys.addaudithook(_refuse_install)
            _audit_installed = True
    previous = getattr(_installs, "pack", None)
    _installs.pack = pack
    try:
        yield
    finally:
        _installs.pack = previous


class _MissingModuleRecorder(importlib.abc.MetaPathFinder):
    """Last on sys.meta_path while a pack is imported: a name that reaches it was found by no other finder, so
    the import will fail; the name is recorded (a pack that catches its own ImportError still gets it reported)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.thread = threading.get_ident()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.startswith("comfy_compat."):
            return None  # the surface probing its own modules
        if threading.get_ident() == self.thread and fullname not in self.names:
            self.names.append(fullname)
        return None


@contextmanager
def _recording_missing_modules() -> Iterator[list[str]]:
    recorder = _MissingModuleRecorder()
    sys.meta_path.append(recorder)
    try:
        yield recorder.names
    finally:
        try:
            sys.meta_path.remove(recorder)
        except ValueError:
            pass


@contextmanager
def _recording_placeholders(compat: bool) -> Iterator[list[str]]:
    """The ComfyUI internals Chisel lacks that a pack reaches while it is imported (comfy_compat placeholders)."""
    names: list[str] = []
    if not compat:
        yield names
        return
    from comfy_compat.surface import unavailable

    thread = threading.get_ident()

    def seen(qualified: str) -> None:
        if threading.get_ident() == thread and qualified not in names:
            names.append(qualified)

    unavailable.listeners.append(seen)
    try:
        yield names
    finally:
        unavailable.listeners.remove(seen)


def _with_missing(message: str, missing: list[str], error: BaseException | None = None) -> str:
    """The failure message, naming the modules that could not be found (unless the message already does)."""
    if isinstance(error, ModuleNotFoundError) and error.name and len(missing) <= 1:
        return message
    shown = [m for m in missing if f"'{m}'" not in message]
    if not shown:
        return message
    listed = ", ".join(shown[:8]) + (f" and {len(shown) - 8} more" if len(shown) > 8 else "")
    return f"{message} (while importing it, these modules could not be found: {listed})"


def _registered_web_directory(name: str, path: Path) -> Path | None:
    """A web folder the pack registered in nodes.EXTENSION_WEB_DIRS under its own name, when inside the pack."""
    from comfy_compat.setup import extension_web_dirs

    folder = extension_web_dirs().get(name)
    if folder is None or not path.is_dir():
        return None
    root, web = path.resolve(), Path(folder).resolve()
    return web if web.is_dir() and (web == root or root in web.parents) else None


def _is_v3_node(cls: Any) -> bool:
    """A ComfyUI V3 node class (comfy_api io.ComfyNode: a schema instead of INPUT_TYPES / RETURN_TYPES)."""
    v3 = sys.modules.get("comfy_compat.surface.comfy_api.latest._io")
    return v3 is not None and isinstance(cls, type) and issubclass(cls, v3.ComfyNode)


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
