"""Loading the custom node packs of tests/fixtures/custom_nodes into a registry that already holds core nodes."""

import shutil
from pathlib import Path

import pytest
import torch

from nodes.context import RunContext
from nodes.custom_nodes import load_custom_nodes
from nodes.image import NODES as IMAGE_NODES
from nodes.registry import Registry
from nodes.types import Latent

PACKS = Path(__file__).parent.parent / "fixtures" / "custom_nodes"


@pytest.fixture
def loaded():
    registry = Registry()
    registry.add_all(IMAGE_NODES)
    reports = {report.name: report for report in load_custom_nodes(PACKS, registry)}
    return registry, reports


def ctx():
    return RunContext(node_id="7", prompt_id="p", services=None)


def test_every_pack_is_reported_and_disabled_entries_are_skipped(loaded):
    _, reports = loaded
    assert sorted(reports) == ["broken_pack", "comfy_style_pack", "exits_pack", "override_pack", "typed_pack"]
    assert all(report.import_seconds >= 0 for report in reports.values())


def test_a_comfyui_style_package_pack_loads_with_display_names_and_its_web_folder(loaded):
    registry, reports = loaded
    report = reports["comfy_style_pack"]
    assert report.loaded and set(report.nodes) == {"ImageBrightness", "ShowSize", "LatentDouble"}
    assert "BrokenDeclaration" in report.skipped_nodes  # one bad node does not sink the pack
    assert report.web_directory == (PACKS / "comfy_style_pack" / "js").resolve()
    info = registry.object_info("ImageBrightness")["ImageBrightness"]
    assert (info["display_name"], info["category"], info["python_module"]) == \
        ("Image Brightness (pack)", "pack/image", "custom_nodes.comfy_style_pack")
    assert registry.source("ImageBrightness") == "comfy_style_pack"

    brightened = registry.get("ImageBrightness").call(ctx(), {"image": torch.zeros(1, 2, 2, 3), "amount": 0.25})
    assert torch.allclose(brightened.values[0], torch.full((1, 2, 2, 3), 0.25))
    shown = registry.get("ShowSize").call(ctx(), {"image": torch.zeros(1, 3, 5, 3)})
    assert shown.values == (5, 3) and shown.ui == {"text": ["5x3 at node 7"]}
    doubled = registry.get("LatentDouble").call(ctx(), {"samples": Latent(torch.ones(1, 4, 2, 2))})
    assert isinstance(doubled.values[0], Latent) and torch.equal(doubled.values[0].samples, torch.full((1, 4, 2, 2),
                                                                                                       2.0))


def test_a_typed_pack_registers_its_node_classes(loaded):
    registry, reports = loaded
    assert reports["typed_pack"].nodes == ("RepeatImage",)
    assert "'not a node'" in reports["typed_pack"].skipped_nodes
    result = registry.get("RepeatImage").call(ctx(), {"image": torch.zeros(1, 2, 2, 3), "times": 3})
    assert result.values[0].shape == (3, 2, 2, 3)
    assert registry.object_info("RepeatImage")["RepeatImage"]["python_module"] == "custom_nodes.typed_pack"


def test_broken_packs_are_reported_with_the_error_and_skipped(loaded):
    registry, reports = loaded
    broken = reports["broken_pack"]
    assert not broken.loaded and broken.nodes == ()
    assert broken.error.startswith("ModuleNotFoundError") and "comfy" in broken.error
    assert "broken_pack.py" in broken.traceback
    assert reports["exits_pack"].error == "SystemExit: this pack refuses to load"


def test_core_nodes_cannot_be_overridden_but_the_pack_keeps_its_other_nodes(loaded):
    registry, reports = loaded
    report = reports["override_pack"]
    assert report.loaded and report.nodes == ("OverridePackOwn",)
    assert "core" in report.skipped_nodes["SaveImage"]
    assert registry.source("SaveImage") == "core"
    assert registry.get("SaveImage").python_module == "nodes"


def test_later_packs_replace_earlier_custom_nodes_and_missing_folders_load_nothing(tmp_path):
    for name in ("a_pack.py", "b_pack.py"):
        (tmp_path / name).write_text(
            "class N:\n"
            "    @classmethod\n"
            "    def INPUT_TYPES(cls):\n"
            "        return {'required': {}}\n"
            "    RETURN_TYPES = ('STRING',)\n"
            "    FUNCTION = 'go'\n"
            f"    def go(self):\n        return ({name!r},)\n"
            "NODE_CLASS_MAPPINGS = {'Same': N}\n")
    registry = Registry()
    reports = load_custom_nodes(tmp_path, registry)
    assert [r.name for r in reports] == ["a_pack", "b_pack"]
    assert registry.get("Same").call(ctx(), {}).values == ("b_pack.py",)
    assert load_custom_nodes(tmp_path / "missing", Registry()) == []


def test_a_pack_loaded_twice_is_imported_afresh(tmp_path):
    shutil.copytree(PACKS / "comfy_style_pack", tmp_path / "comfy_style_pack")
    first, second = Registry(), Registry()
    load_custom_nodes(tmp_path, first)
    (tmp_path / "comfy_style_pack" / "latent_nodes.py").write_text(
        (tmp_path / "comfy_style_pack" / "latent_nodes.py").read_text().replace("* 2", "* 30"))
    load_custom_nodes(tmp_path, second)
    doubled = second.get("LatentDouble").call(ctx(), {"samples": Latent(torch.ones(1, 1, 1, 1))})
    assert doubled.values[0].samples.item() == 30.0
