"""The layers keep apart: every module's imports (read with ast, lazy imports inside functions included) obey the
rules docs/ARCHITECTURE.md states.

  diffusion/      the model library: imports neither nodes nor server (nor aiohttp)
  server/engine/  graph, executor, cache, queue, worker, events: the standard library, the engine itself and the
                  node kit (nodes.registry, nodes.inputs) only -- no aiohttp, no torch, no node modules, no web layer
  server/         never imports diffusion: model code is reached through nodes (the composition root uses
                  nodes.services to build the model manager)
  nodes/          never imports server
  safefiles/      the file helpers every layer uses: the standard library only
  server/cluster/ the cluster (scheduler, worker core, Ray actors): the engine, the composition root and config,
                  the node kit and services, safefiles and Ray -- no aiohttp, no torch, no model library, no routes,
                  hub or messages (the head's EventSink is handed to it)
  ray             imported only by server/cluster/ray_cluster.py, and only inside functions: a server without --ray
                  never loads it
  comfy_compat/   ComfyUI's Python surface for custom node packs: may use nodes, diffusion and aiohttp, never
                  server; and only the custom-node loader (nodes/custom_nodes.py) imports it
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = frozenset(sys.stdlib_module_names)
NODE_KIT = ("nodes.registry", "nodes.inputs")


@dataclass(frozen=True)
class Rule:
    """Modules under `package` may import nothing that `forbids` returns a reason for."""

    package: str

    def forbids(self, module: str) -> str | None:  # pragma: no cover - overridden
        raise NotImplementedError


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class DiffusionRule(Rule):
    def forbids(self, module: str) -> str | None:
        for banned in ("nodes", "server", "aiohttp"):
            if _within(module, banned):
                return f"the model library must not import {banned}"
        return None


class EngineRule(Rule):
    def forbids(self, module: str) -> str | None:
        top = module.split(".")[0]
        if top in STDLIB or _within(module, "server.engine") or any(_within(module, kit) for kit in NODE_KIT):
            return None
        if top == "nodes":
            return "the engine may use the node kit (nodes.registry, nodes.inputs), never node modules"
        if top == "server":
            return "the engine must not import the web layer"
        return f"the engine imports only the standard library, not {top}"


class NodesRule(Rule):
    def forbids(self, module: str) -> str | None:
        return "nodes must not import server" if _within(module, "server") else None


class ServerRule(Rule):
    def forbids(self, module: str) -> str | None:
        if _within(module, "diffusion"):
            return "the server reaches model code only through nodes (nodes.services), never diffusion directly"
        return None


class ClusterRule(Rule):
    ALLOWED = ("server.cluster", "server.engine", "server.compose", "server.config", "server.paths", "nodes.registry",
               "nodes.inputs", "nodes.services", "safefiles", "ray")

    def forbids(self, module: str) -> str | None:
        top = module.split(".")[0]
        if top in STDLIB or any(_within(module, allowed) for allowed in self.ALLOWED):
            return None
        if top == "server":
            return "the cluster must not import the web layer (routes, hub, messages, app, cli)"
        if top in ("nodes", "diffusion", "torch"):
            return "the cluster reaches model code only through compose() and nodes.services"
        return f"the cluster imports the standard library, the engine, safefiles and Ray, not {top}"


class SafeFilesRule(Rule):
    def forbids(self, module: str) -> str | None:
        top = module.split(".")[0]
        return None if top in STDLIB or top == "safefiles" else "safefiles uses the standard library only"


class CompatRule(Rule):
    def forbids(self, module: str) -> str | None:
        if _within(module, "server"):
            return "comfy_compat gets what it needs from the loader, never from the web layer"
        return None


RULES = (DiffusionRule("diffusion"), EngineRule("server.engine"), ServerRule("server"), NodesRule("nodes"),
         SafeFilesRule("safefiles"), ClusterRule("server.cluster"), CompatRule("comfy_compat"))
COMPAT_IMPORTERS = ("nodes.custom_nodes",)
RAY_MODULE = "server.cluster.ray_cluster"
LAYER_FOLDERS = ("server", "nodes", "diffusion", "safefiles", "train", "bench")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            if target in ("nodes", "server", "server.engine", "server.routes", "diffusion") or node.module is None:
                # `from nodes import image` imports the module nodes.image
                found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*")
            else:
                found.append((node.lineno, target))
    return found


def violations(root: Path, rules: tuple[Rule, ...] = RULES) -> list[str]:
    """Every broken rule under `root`, as 'path:line: module imports X (why)'."""
    broken: list[str] = []
    for rule in rules:
        folder = root.joinpath(*rule.package.split("."))
        for path in sorted(folder.rglob("*.py")):
            module = module_name(root, path)
            for line, target in imported_modules(path, module):
                why = rule.forbids(target)
                if why:
                    broken.append(f"{path.relative_to(root)}:{line}: {module} imports {target} ({why})")
    return broken


def ray_imports(root: Path) -> list[str]:
    """Imports of ray that break its rule: outside RAY_MODULE anywhere, or at module level (not lazily) there."""
    broken = []
    for folder in LAYER_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            module = module_name(root, path)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            lazy = {id(inner) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for inner in ast.walk(node)}
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                if not any(_within(name, "ray") for name in names):
                    continue
                where = f"{path.relative_to(root)}:{node.lineno}"
                if module != RAY_MODULE:
                    broken.append(f"{where}: {module} imports ray (only {RAY_MODULE} may)")
                elif id(node) not in lazy:
                    broken.append(f"{where}: {module} imports ray at module level (import it inside functions)")
    return broken


def test_ray_is_imported_only_by_the_cluster_and_only_lazily():
    broken = ray_imports(ROOT)
    assert not broken, "ray import rule broken:\n" + "\n".join(broken)


def test_ray_rule_reports_eager_and_foreign_imports(tmp_path):
    (tmp_path / "server" / "cluster").mkdir(parents=True)
    (tmp_path / "server" / "cluster" / "ray_cluster.py").write_text("import ray\ndef f():\n    import ray.util\n")
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "x.py").write_text("def f():\n    from ray import remote\n")
    broken = ray_imports(tmp_path)
    assert len(broken) == 2 and "module level" in broken[0] and "only server.cluster.ray_cluster" in broken[1], broken


def test_a_server_without_ray_never_loads_it(tmp_path):
    import subprocess

    code = ("import sys; from server.cli import main; from server.app import create_app; "
            "from server.config import ServerConfig; from server.compose import compose, build_engine; "
            "from server.engine.events import NullSink; "
            f"c = ServerConfig.create({str(tmp_path)!r}, load_custom_nodes=False); "
            "create_app(c); e = build_engine(compose(c), NullSink()); e.worker.start(); e.close(); "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_only_the_custom_node_loader_imports_comfy_compat():
    broken = []
    for folder in LAYER_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            module = module_name(ROOT, path)
            for line, target in imported_modules(path, module):
                if _within(target, "comfy_compat") and module not in COMPAT_IMPORTERS:
                    broken.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {target}")
    assert not broken, "comfy_compat is for the custom-node loader only:\n" + "\n".join(broken)


def test_every_layer_keeps_its_import_rules():
    broken = violations(ROOT)
    assert not broken, "layer rules broken:\n" + "\n".join(broken)


def test_the_layers_exist_where_the_rules_look():
    for rule in RULES:
        folder = ROOT.joinpath(*rule.package.split("."))
        assert any(folder.rglob("*.py")), f"{rule.package} has no modules: the rule would pass vacuously"


@pytest.mark.parametrize("package, source, fragment", [
    ("diffusion", "from nodes.types import Latent\n", "diffusion/bad.py:1: diffusion.bad imports nodes.types"),
    ("diffusion", "def f():\n    import server.app\n", "diffusion/bad.py:2: diffusion.bad imports server.app"),
    ("server/engine", "import torch\n", "imports torch (the engine imports only the standard library"),
    ("server/engine", "from aiohttp import web\n", "imports aiohttp"),
    ("server/engine", "from nodes import image\n", "imports nodes.image (the engine may use the node kit"),
    ("server/engine", "from server.routes import prompt\n", "imports server.routes.prompt (the engine must not"),
    ("server/engine", "from ..routes import ws\n", "imports server.routes.ws"),
    ("nodes", "from server.paths import ServerFolders\n", "nodes.bad imports server.paths"),
    ("server", "from diffusion.memory import ModelManager\n", "server.bad imports diffusion.memory"),
    ("safefiles", "import torch\n", "safefiles.bad imports torch"),
    ("server/cluster", "from aiohttp import web\n", "server.cluster.bad imports aiohttp"),
    ("server/cluster", "from server.hub import EventHub\n", "the cluster must not import the web layer"),
    ("server/cluster", "import torch\n", "the cluster reaches model code only through compose()"),
    ("server/cluster", "from nodes.image import SaveImage\n", "server.cluster.bad imports nodes.image"),
])
def test_a_deliberately_broken_import_is_reported(tmp_path, package, source, fragment):
    folder = tmp_path.joinpath(*package.split("/"))
    folder.mkdir(parents=True)
    for parent in [folder, *folder.relative_to(tmp_path).parents]:
        init = tmp_path / parent / "__init__.py"
        if parent != Path(".") and not init.exists():
            init.write_text("")
    (folder / "bad.py").write_text(source)
    (folder / "good.py").write_text("import json\nfrom nodes.registry import Registry\n" if package == "server/engine"
                                    else "import json\n")
    broken = violations(tmp_path)
    assert len(broken) == 1 and fragment in broken[0], broken


def test_allowed_imports_pass(tmp_path):
    engine = tmp_path / "server" / "engine"
    engine.mkdir(parents=True)
    (tmp_path / "server" / "__init__.py").write_text("")
    (engine / "__init__.py").write_text("")
    (engine / "ok.py").write_text("import sqlite3\nfrom nodes.inputs import InputError\nfrom .events import Event\n"
                                  "from server.engine.graph import Graph\n")
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "ok.py").write_text("import torch\nfrom diffusion.unet import UNetModel\n")
    assert violations(tmp_path) == []
