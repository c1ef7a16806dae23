"""Our /object_info equals ComfyUI 0.8.0's for every node of the core set we implement: the same inputs in the same
order (saved workflows store widget values by position), types, defaults, ranges, options, tooltips, outputs,
category, description. Combos that list a user's folder are compared by kind only (the fixture's installation had
other files).

`tests/fixtures/comfyui_object_info/` holds ComfyUI's entries; `schema_differences` is also handy while porting a
node: `python -m tests.nodes.test_object_info_parity NodeName`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from nodes.catalog import core_nodes
from nodes.inputs import Combo, Files
from nodes.registry import Registry

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui_object_info"
REFERENCE: Mapping[str, Any] = json.loads((FIXTURES / "object_info.json").read_text())
CORE_SET = tuple(line for line in (FIXTURES / "core-set.txt").read_text().split("\n") if line)
DIT_SET = tuple(line for line in (FIXTURES / "dit-set.txt").read_text().split("\n") if line)
ENTRY_KEYS = ("input_order", "output", "output_is_list", "output_name", "output_tooltips", "name", "display_name",
              "description", "category", "output_node", "deprecated", "experimental")


def _registry() -> Registry:
    registry = Registry()
    registry.add_all(core_nodes())
    return registry


def schema_differences(name: str, registry: Registry) -> list[str]:
    """Every way our entry for `name` differs from ComfyUI's (empty when equal)."""
    ours, ref = registry.object_info()[name], REFERENCE[name]
    spec = registry.get(name)
    folder_inputs = {i.name for i in spec.inputs if isinstance(i, Combo) and isinstance(i.source, Files)}
    found = [f"{key}: ours {ours.get(key)!r}, ComfyUI {ref.get(key)!r}" for key in ENTRY_KEYS
             if _normal(ours.get(key)) != _normal(ref.get(key))]
    for section in ("required", "optional"):
        mine, theirs = ours["input"].get(section) or {}, ref["input"].get(section) or {}
        for extra in sorted(set(mine) - set(theirs)):
            found.append(f"input {section}.{extra}: not in ComfyUI's schema")
        for input_name, their_spec in theirs.items():
            if input_name not in mine:
                found.append(f"input {section}.{input_name}: missing")
                continue
            found.extend(f"input {input_name}: {why}"
                         for why in _input_differences(mine[input_name], their_spec, input_name in folder_inputs))
    return found


def _input_differences(mine: list[Any], theirs: list[Any], from_folder: bool) -> list[str]:
    my_type, my_opts = mine[0], mine[1] if len(mine) > 1 else {}
    their_type, their_opts = theirs[0], theirs[1] if len(theirs) > 1 else {}
    found = []
    if isinstance(their_type, list):
        if not isinstance(my_type, list):
            found.append(f"type {my_type!r}, ComfyUI a combo")
        elif not from_folder and my_type != their_type:
            found.append(f"options {my_type}, ComfyUI {their_type}")
    elif my_type != their_type:
        found.append(f"type {my_type!r}, ComfyUI {their_type!r}")
    for key in sorted(set(my_opts) | set(their_opts)):
        if from_folder and key == "options" and their_type == "COMBO":
            continue  # a V3 combo's choices are among its options: the installation's files again
        if _normal(my_opts.get(key)) != _normal(their_opts.get(key)):
            found.append(f"{key} {my_opts.get(key)!r}, ComfyUI {their_opts.get(key)!r}")
    return found


def _normal(value: Any) -> Any:
    """JSON's view of a value (tuples are lists; 1 and 1.0 stay distinct only through their JSON text)."""
    return json.loads(json.dumps(value))


REGISTRY = _registry()
IMPLEMENTED = tuple(name for name in (*CORE_SET, *DIT_SET) if REGISTRY.get(name) is not None)


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_schema_equals_comfyui(name):
    differences = schema_differences(name, REGISTRY)
    assert not differences, f"{name}:\n  " + "\n  ".join(differences)


def test_coverage_of_the_core_set_is_reported():
    """Not a target, a record: how many of ComfyUI's core nodes exist here (the closing notes quote it)."""
    covered = [name for name in CORE_SET if REGISTRY.get(name) is not None]
    assert len(covered) >= 38
    print(f"\ncore-set coverage: {len(covered)}/{len(CORE_SET)}")


if __name__ == "__main__":
    for node in sys.argv[1:] or IMPLEMENTED:
        print(node, *schema_differences(node, REGISTRY) or ["equal"], sep="\n  ")
