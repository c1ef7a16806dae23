"""The primitive value nodes: ComfyUI's names, one `value` widget, the same value out."""

import sys

import pytest

from nodes.primitives import NODES
from nodes.registry import Registry


@pytest.fixture
def info():
    registry = Registry()
    registry.add_all(NODES)
    return registry.object_info()


@pytest.mark.parametrize("name, display, kind, value", [
    ("PrimitiveString", "String", "STRING", "hello"),
    ("PrimitiveStringMultiline", "String (Multiline)", "STRING", "two\nlines"),
    ("PrimitiveInt", "Int", "INT", -12),
    ("PrimitiveFloat", "Float", "FLOAT", 2.5),
    ("PrimitiveBoolean", "Boolean", "BOOLEAN", True),
])
def test_each_primitive_passes_its_value_through(info, name, display, kind, value):
    entry = info[name]
    assert list(entry["input"]["required"]) == ["value"]
    assert entry["input"]["required"]["value"][0] == kind
    assert (entry["output"], entry["display_name"], entry["category"]) == ([kind], display, "utils/primitive")
    registry = Registry()
    registry.add_all(NODES)
    assert registry.get(name).call(None, {"value": value}).values == (value,)


def test_int_primitive_has_the_seed_control_and_the_full_range(info):
    options = info["PrimitiveInt"]["input"]["required"]["value"][1]
    assert options["control_after_generate"] is True
    assert (options["min"], options["max"]) == (-sys.maxsize, sys.maxsize)
    assert info["PrimitiveStringMultiline"]["input"]["required"]["value"][1]["multiline"] is True
