"""Regenerate comfy_compat/surface/core_functions.py from a ComfyUI source tree (names only, no code).

    python scripts/comfy_core_functions.py PATH/TO/ComfyUI > comfy_compat/surface/core_functions.py

For every node class in ComfyUI's nodes.py and comfy_extras/*.py: the method a pack calls to run it (FUNCTION, or
`execute` for V3 classes) and that method's parameter names, in order, and the class's plain constant attributes
(`ImageScale.upscale_methods`); and the names of ComfyUI's Python modules under comfy/, comfy_extras/ and
comfy_execution/. comfy_compat builds the `nodes.X` classes that packs subclass and call
(`nodes.CLIPTextEncode().encode(clip, text)`) from this table and Chisel's own node specs, and knows which module
names are ComfyUI's.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


SKIPPED_ATTRIBUTES = {"FUNCTION", "RETURN_TYPES", "RETURN_NAMES", "CATEGORY", "OUTPUT_NODE", "DESCRIPTION",
                      "OUTPUT_TOOLTIPS", "OUTPUT_IS_LIST", "INPUT_IS_LIST", "DEPRECATED", "EXPERIMENTAL",
                      "SEARCH_ALIASES"}


def constants(node: ast.ClassDef) -> dict[str, object]:
    """The class's attributes assigned a literal (lists of method names and the like)."""
    found: dict[str, object] = {}
    for item in node.body:
        if isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name):
            name = item.targets[0].id
            if name in SKIPPED_ATTRIBUTES or name.startswith("_"):
                continue
            try:
                found[name] = ast.literal_eval(item.value)
            except ValueError:
                continue
    return found


def classes(path: Path) -> dict[str, tuple[str, tuple[str, ...], bool]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, tuple[str, tuple[str, ...], bool]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        function = None
        for item in node.body:
            if isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "FUNCTION" for t in item.targets):
                if isinstance(item.value, ast.Constant) and isinstance(item.value.value, str):
                    function = item.value.value
        methods = {m.name: m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
        v3 = function is None and "execute" in methods and "define_schema" in methods
        name = "execute" if v3 else function
        if name is None or name not in methods:
            continue
        args = methods[name].args
        params = [a.arg for a in args.posonlyargs + args.args][1:] + [a.arg for a in args.kwonlyargs]
        found[node.name] = (name, tuple(params), v3)
        attributes = constants(node)
        if attributes:
            CLASS_CONSTANTS[node.name] = attributes
    return found


CLASS_CONSTANTS: dict[str, dict[str, object]] = {}
# The modules comfy_compat implements: their top-level names are listed, so a name ComfyUI has and the surface does
# not is a clear error when used (and hasattr answers as in ComfyUI).
IMPLEMENTED = ("folder_paths", "latent_preview", "node_helpers", "execution", "comfy.utils", "comfy.model_management",
               "comfy.samplers", "comfy.sample", "comfy.sd", "comfy.model_patcher", "comfy.cli_args",
               "comfy.latent_formats", "comfy.model_base", "comfy.sampler_helpers", "comfy.k_diffusion.sampling",
               "comfy.comfy_types.node_typing", "comfy_execution.graph", "comfy_execution.graph_utils")


def top_level_imports(path: Path) -> dict[str, str]:
    """{name: what it is bound to} for a module's top-level imports: "numpy" (import numpy as np) or
    "comfy.utils:common_upscale" (from comfy.utils import common_upscale)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    found[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    found[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if alias.name != "*":
                    found[alias.asname or alias.name] = f"{node.module}:{alias.name}"
    return found


def top_level_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return sorted(n for n in names if not n.startswith("_"))


def module_names(base: Path) -> list[str]:
    names = []
    for top in ("comfy", "comfy_extras", "comfy_execution"):
        for path in sorted((base / top).rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return sorted(set(names))


def main(root: str) -> None:
    base = Path(root)
    table: dict[str, dict[str, tuple[str, tuple[str, ...], bool]]] = {"nodes": classes(base / "nodes.py")}
    for path in sorted((base / "comfy_extras").glob("nodes_*.py")):
        table[f"comfy_extras.{path.stem}"] = classes(path)
    print('"""ComfyUI\'s node classes by module: {class name: (method packs call, its parameters, is a V3 classmethod)}.')
    print()
    print("Generated by scripts/comfy_core_functions.py from ComfyUI's source (names only).")
    print('"""')
    print()
    print("CORE_FUNCTIONS: dict[str, dict[str, tuple[str, tuple[str, ...], bool]]] = {")
    for module, entries in table.items():
        print(f"    {module!r}: {{")
        for name, (function, params, v3) in sorted(entries.items()):
            print(f"        {name!r}: ({function!r}, {params!r}, {v3}),")
        print("    },")
    print("}")
    print()
    print("# Plain constant class attributes of those classes ({class name: {attribute: value}}).")
    print("CLASS_CONSTANTS: dict[str, dict[str, object]] = {")
    for name, attributes in sorted(CLASS_CONSTANTS.items()):
        print(f"    {name!r}: {attributes!r},")
    print("}")
    print()
    print("# The public top-level names of the ComfyUI modules comfy_compat implements.")
    print("MODULE_NAMES: dict[str, frozenset[str]] = {")
    for module in IMPLEMENTED:
        path = base / (module.replace(".", "/") + ".py")
        if not path.is_file():
            path = base / module.replace(".", "/") / "__init__.py"
        if path.is_file():
            print(f"    {module!r}: frozenset({top_level_names(path)!r}),")
    print("}")
    print()
    print("# The top-level imports of those modules (packs import e.g. `np` from comfy.sample).")
    print("MODULE_IMPORTS: dict[str, dict[str, str]] = {")
    for module in IMPLEMENTED:
        path = base / (module.replace(".", "/") + ".py")
        if not path.is_file():
            path = base / module.replace(".", "/") / "__init__.py"
        if path.is_file():
            print(f"    {module!r}: {top_level_imports(path)!r},")
    print("}")
    print()
    print("# ComfyUI's Python modules under comfy/, comfy_extras/ and comfy_execution/ (packages included).")
    print("COMFY_MODULES: frozenset[str] = frozenset({")
    for name in module_names(base):
        print(f"    {name!r},")
    print("})")


if __name__ == "__main__":
    main(sys.argv[1])
