"""Nodes with v3 DynamicCombo inputs: the frontend stores the chosen option's revealed widgets right after the combo
(ResizeImageMaskNode as ComfyUI's templates save it), and the converter names them by the option, both ways."""

from __future__ import annotations

import pytest

from nodes.catalog import core_nodes
from nodes.registry import Registry
from server.workflow import api_to_workflow, convert_workflow


@pytest.fixture(scope="module")
def registry() -> Registry:
    registry = Registry()
    registry.add_all(core_nodes())
    return registry


def _workflow(values: list) -> dict:
    load = {"id": 1, "type": "LoadImage", "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
            "widgets_values": ["x.png", "image"], "mode": 0}
    resize = {"id": 2, "type": "ResizeImageMaskNode", "mode": 0, "widgets_values": values,
              "inputs": [{"name": "input", "type": "IMAGE,MASK", "link": 1}],
              "outputs": [{"name": "resized", "type": "IMAGE", "links": []}]}
    return {"nodes": [load, resize], "links": [[1, 1, 0, 2, 0, "IMAGE"]], "version": 0.4}


@pytest.mark.parametrize("values, expected", [
    (["scale dimensions", 2048, 1024, "center", "lanczos"],
     {"resize_type": "scale dimensions", "resize_type.width": 2048, "resize_type.height": 1024,
      "resize_type.crop": "center", "scale_method": "lanczos"}),
    (["scale by multiplier", 1.5, "area"],
     {"resize_type": "scale by multiplier", "resize_type.multiplier": 1.5, "scale_method": "area"}),
    (["scale total pixels", 2.0, "bicubic"],
     {"resize_type": "scale total pixels", "resize_type.megapixels": 2.0, "scale_method": "bicubic"}),
])
def test_the_chosen_options_widgets_are_read_by_the_option(values, expected, registry):
    prompt = convert_workflow(_workflow(values), registry)
    inputs = {k: v for k, v in prompt["2"]["inputs"].items() if not isinstance(v, list)}
    assert {k: inputs[k] for k in expected} == expected
    for other in ("resize_type.multiplier", "resize_type.width", "resize_type.megapixels"):
        if other not in expected:  # the other options' inputs are not set from these values
            assert inputs.get(other) != values[1]


def test_api_to_workflow_stores_the_frontends_order(registry):
    prompt = convert_workflow(_workflow(["scale dimensions", 640, 480, "crop", "bilinear"]), registry)
    ui = api_to_workflow(prompt, registry)
    node = next(n for n in ui["nodes"] if n["type"] == "ResizeImageMaskNode")
    assert node["widgets_values"] == ["scale dimensions", 640, 480, "crop", "bilinear"]
    assert convert_workflow(ui, registry)["2"]["inputs"]["resize_type.height"] == 480
