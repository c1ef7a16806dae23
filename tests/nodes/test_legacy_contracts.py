"""ComfyUI's legacy node contracts through the validator and the executor: VALIDATE_INPUTS (the inputs it takes
skip the built-in checks; `input_types` gets the linked types), IS_CHANGED (NaN: always run), check_lazy_status,
async functions and graph expansion from a legacy class."""

from __future__ import annotations

import pytest

from nodes.legacy import adapt_legacy_node
from server.engine.graph import PromptError, validate_prompt
from tests.server import engine_nodes as E

LOG: list[str] = []


class Pick:
    """Accepts any `mode` (its own list is only a suggestion) and checks the type linked to `value` itself."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT,FLOAT",), "mode": (["a", "b"],), "times": ("INT", {"min": 1, "max": 3})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    @classmethod
    def VALIDATE_INPUTS(cls, mode, input_types):
        if input_types.get("value") not in ("INT", "FLOAT"):
            return f"value must be a number, got {input_types.get('value')}"
        return True if mode != "forbidden" else "forbidden mode"

    def go(self, value, mode, times):
        LOG.append(f"pick:{mode}")
        return (value * times,)


class Stamp:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "volatile": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    @classmethod
    def IS_CHANGED(cls, volatile, **kwargs):  # linked inputs are not passed (ComfyUI: IS_CHANGED sees widgets)
        return float("nan") if volatile else "same"

    def go(self, value, volatile):
        LOG.append("stamp")
        return (value,)


class Choose:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"first": ("BOOLEAN", {"default": True}),
                             "a": ("INT", {"lazy": True}), "b": ("INT", {"lazy": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    def check_lazy_status(self, first, a=None, b=None):
        return ["a"] if first else ["b"]

    def go(self, first, a=None, b=None):
        return (a if first else b,)


class Repeat:
    """Expands into `count` Add nodes after its input (ComfyUI's {"result", "expand"} dict), async."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT",), "count": ("INT", {"default": 2, "min": 1, "max": 50})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    async def go(self, value, count, unique_id):
        graph, last = {}, None
        for i in range(count):
            node_id = f"{unique_id}.0.0.{i}"
            source = [last, 0] if last else ["src", 0]
            graph[node_id] = {"class_type": "Add", "inputs": {"a": source, "b": 1}}
            last = node_id
        return {"result": ([last, 0],), "expand": graph}


@pytest.fixture
def reg():
    registry = E.registry()
    for name, cls in (("LPick", Pick), ("LStamp", Stamp), ("LChoose", Choose), ("LRepeat", Repeat)):
        registry.add(adapt_legacy_node(name, cls), source="pack")
    LOG.clear()
    return registry


def prompt(**pick):
    return {"src": {"class_type": "Const", "inputs": {"value": 2}},
            "p": {"class_type": "LPick", "inputs": {"value": ["src", 0], "mode": "z", "times": 2, **pick}},
            "out": {"class_type": "Show", "inputs": {"value": ["p", 0]}}}


def test_validate_inputs_takes_over_the_checks_of_the_inputs_it_names(reg):
    graph = validate_prompt(prompt(), reg)  # "z" is not in the list, but VALIDATE_INPUTS takes `mode`
    assert graph.nodes["p"].literals["mode"] == "z"
    with pytest.raises(PromptError) as err:  # `times` is not taken: its range is still checked
        validate_prompt(prompt(times=9), reg)
    assert err.value.node_errors["p"]["errors"][0]["type"] == "value_bigger_than_max"
    with pytest.raises(PromptError) as err:
        validate_prompt(prompt(mode="forbidden"), reg)
    assert err.value.node_errors["p"]["errors"][0]["type"] == "custom_validation_failed"


def test_input_types_receives_the_linked_types_and_replaces_the_link_type_check(reg):
    linked_text = {"t": {"class_type": "ToText", "inputs": {"a": ["src", 0]}},
                   **prompt(value=["t", 0])}
    with pytest.raises(PromptError) as err:  # STRING does not match INT,FLOAT: the node's own check says so
        validate_prompt(linked_text, reg)
    error = err.value.node_errors["p"]["errors"][0]
    assert error["type"] == "custom_validation_failed" and "got STRING" in error["details"]


def test_is_changed_nan_always_runs_and_a_stable_value_is_cached(reg):
    calls = E.Calls()
    ex = E.executor(reg, calls)
    for volatile, runs in ((False, 1), (True, 2)):
        LOG.clear()
        stamp = {"src": {"class_type": "Const", "inputs": {"value": 1}},
                 "s": {"class_type": "LStamp", "inputs": {"value": ["src", 0], "volatile": volatile}},
                 "out": {"class_type": "Show", "inputs": {"value": ["s", 0]}}}
        for attempt in range(2):
            assert ex.execute(validate_prompt(stamp, reg), prompt_id=f"{volatile}{attempt}").ok
        assert LOG == ["stamp"] * runs


def test_check_lazy_status_runs_only_the_branch_asked_for(reg):
    calls = E.Calls()
    choose = {"a": {"class_type": "Const", "inputs": {"value": 1}},
              "b": {"class_type": "Const", "inputs": {"value": 2}},
              "c": {"class_type": "LChoose", "inputs": {"first": False, "a": ["a", 0], "b": ["b", 0]}},
              "out": {"class_type": "Show", "inputs": {"value": ["c", 0]}}}
    outcome = E.executor(reg, calls).execute(validate_prompt(choose, reg), prompt_id="lazy")
    assert outcome.outputs["out"] == {"values": [2]} and calls.ids("Const") == ["b"]


def test_an_async_legacy_node_can_expand_its_graph(reg):
    calls = E.Calls()
    ex = E.executor(reg, calls)
    repeat = {"src": {"class_type": "Const", "inputs": {"value": 10}},
              "r": {"class_type": "LRepeat", "inputs": {"value": ["src", 0], "count": 4}},
              "out": {"class_type": "Show", "inputs": {"value": ["r", 0]}}}
    outcome = ex.execute(validate_prompt(repeat, reg), prompt_id="x")
    assert outcome.ok, outcome.error
    assert outcome.outputs["out"] == {"values": [14]}
    assert calls.ids("Add") == ["r.0.0.0", "r.0.0.1", "r.0.0.2", "r.0.0.3"]  # ComfyUI's ids are kept
