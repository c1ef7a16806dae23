"""The editor stores and reads widgets_values in the layout ComfyUI's editor writes and the server reads
(server/workflow.py): every registered node's widgets in /object_info's input_order, control_after_generate
after its number, the upload button after the last required widget. Checked for every registered node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from nodes.catalog import core_nodes
from nodes.registry import Registry
from server.workflow import _CONTROL, _UPLOAD, _compact_schema, _widget_layout
from server.workflow_dynamic import has_dynamic_combo, stored_order

WEB = Path(__file__).resolve().parents[2] / "web"


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry(list_files=lambda files: ["a.png"])
    reg.add_all(core_nodes())
    return reg


def editor_layouts(object_info: dict, tmp_path: Path) -> dict[str, list[str]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed")
    path = tmp_path / "object_info.json"
    path.write_text(json.dumps(object_info))
    result = subprocess.run([node, str(Path(__file__).with_name("widget_layout.mjs")), str(path)], capture_output=True,
                            text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def test_every_registered_nodes_widget_order_matches_the_server_and_input_order(registry, tmp_path) -> None:
    info = registry.object_info()
    editor = editor_layouts(info, tmp_path)
    assert len([k for k in editor if "#" not in k]) == len(info) > 100
    wrong = {}
    dynamic = 0
    for name in registry.names():
        spec = registry.get(name)
        widgets = [i for i in spec.inputs if i.is_widget and not i.force_input]
        schema = _compact_schema(spec)
        if has_dynamic_combo(schema):  # a v3 DynamicCombo: the layout follows the option chosen, for each option
            dynamic += 1
            for key in [k for k in editor if k.startswith(f"{name}#")]:
                combo, option = key.split("#", 1)[1].split("=", 1)
                server = stored_order(schema, {combo: option})
                if editor[key] != server:
                    wrong[key] = {"editor": editor[key], "server": server}
            continue
        server = [{_CONTROL: "control_after_generate", _UPLOAD: "upload"}.get(s, s) for s in _widget_layout(widgets)]
        if editor[name] != server:
            wrong[name] = {"editor": editor[name], "server": server}
        order = info[name].get("input_order", {})
        declared = [n for section in ("required", "optional") for n in order.get(section, [])]
        named = [w for w in editor[name] if w not in ("control_after_generate", "upload")]
        assert named == [n for n in declared if n in named], f"{name}: widgets out of input_order"
    assert dynamic >= 1 and any("#" in k for k in editor)
    assert not wrong, json.dumps(wrong, indent=1)[:4000]


def test_load_image_mask_reads_the_shipped_inpaint_workflows_values(registry, tmp_path) -> None:
    editor = editor_layouts(registry.object_info("LoadImageMask"), tmp_path)
    workflow = json.loads((WEB.parent / "workflows" / "inpaint.json").read_text())
    node = next(n for n in workflow["nodes"] if n["type"] == "LoadImageMask")
    values = dict(zip(editor["LoadImageMask"], node["widgets_values"]))
    assert values["channel"] in ("alpha", "red", "green", "blue")
    assert values["upload"] == "image"
