"""Prompt validation: ComfyUI's error shapes, our stricter contract (any error rejects), and iterative scaling."""

import time

import pytest

from server.engine.graph import PromptError, check_prompt, validate_prompt
from tests.server import engine_nodes as E


@pytest.fixture
def reg():
    return E.registry()


def rejected(prompt, reg, **kw) -> PromptError:
    with pytest.raises(PromptError) as err:
        validate_prompt(prompt, reg, **kw)
    return err.value


def only_error(err: PromptError, node_id: str) -> dict:
    errors = err.node_errors[node_id]["errors"]
    assert len(errors) == 1, errors
    return errors[0]


def pick(**inputs):
    base = {"number": 5, "ratio": 0.5, "mode": "fast", "label": "x"}
    return {"p": {"class_type": "Pick", "inputs": {**base, **inputs}},
            "out": {"class_type": "Show", "inputs": {"value": ["p", 0]}}}


def test_valid_prompt_gives_graph_with_cast_literals_links_and_topological_order(reg):
    graph = validate_prompt(pick(number="7", ratio=1, flag="false"), reg)
    assert graph.outputs == ("out",)
    assert graph.order == ("p", "out")
    p = graph.nodes["p"]
    assert dict(p.literals) == {"number": 7, "ratio": 1.0, "mode": "fast", "label": "x", "flag": False}
    assert graph.nodes["out"].links["value"] == ("p", 0)
    with pytest.raises(TypeError):
        p.literals["number"] = 3  # immutable


def test_missing_prompt_is_no_prompt(reg):
    err = rejected(None, reg)
    assert err.payload == {"error": {"type": "no_prompt", "message": "No prompt provided",
                                     "details": "The request has no 'prompt'", "extra_info": {}}, "node_errors": {}}


@pytest.mark.parametrize("prompt", [[1, 2], "text", 5, {"a": 5}, {"a": {"class_type": "Const", "inputs": [1]}},
                                    {3: {"class_type": "Const", "inputs": {}}}])
def test_malformed_prompts_are_rejected_with_a_clear_message(reg, prompt):
    err = rejected(prompt, reg)
    assert err.type == "invalid_prompt" and err.error["details"]


def test_unknown_class_is_missing_node_type_with_title(reg):
    prompt = {**pick(), "9": {"class_type": "Nope", "inputs": {}, "_meta": {"title": "My node"}}}
    err = rejected(prompt, reg)
    assert err.error["type"] == "missing_node_type"
    assert err.error["extra_info"] == {"node_id": "9", "class_type": "Nope", "node_title": "My node"}
    assert err.node_errors == {}


def test_node_without_class_type_is_missing_node_type(reg):
    err = rejected({**pick(), "9": {"inputs": {}}}, reg)
    assert err.type == "missing_node_type" and err.error["extra_info"]["class_type"] is None


def test_prompt_without_output_nodes_is_prompt_no_outputs(reg):
    assert rejected({"1": {"class_type": "Const", "inputs": {"value": 1}}}, reg).type == "prompt_no_outputs"


def test_required_input_missing(reg):
    prompt = pick()
    del prompt["p"]["inputs"]["mode"]
    err = rejected(prompt, reg)
    assert err.type == "prompt_outputs_failed_validation"
    error = only_error(err, "p")
    assert error["type"] == "required_input_missing" and error["extra_info"]["input_name"] == "mode"
    assert err.node_errors["p"]["dependent_outputs"] == ["out"]
    assert err.node_errors["p"]["class_type"] == "Pick"


def test_optional_input_may_be_absent(reg):
    validate_prompt(pick(), reg)


@pytest.mark.parametrize("value", [["p", 0, 1], ["p"], [1, 0], ["p", "0"], ["p", True]])
def test_malformed_link_is_bad_linked_input(reg, value):
    prompt = pick()
    prompt["out"]["inputs"]["value"] = value
    error = only_error(rejected(prompt, reg), "out")
    assert error["type"] == "bad_linked_input" and error["extra_info"]["received_value"] == value


def test_link_to_missing_node_or_slot_is_bad_linked_input(reg):
    prompt = pick()
    prompt["out"]["inputs"]["value"] = ["ghost", 0]
    assert "not in the prompt" in only_error(rejected(prompt, reg), "out")["details"]
    prompt["out"]["inputs"]["value"] = ["p", 1]
    error = only_error(rejected(prompt, reg), "out")
    assert error["type"] == "bad_linked_input" and "no output slot 1" in error["details"]
    prompt["out"]["inputs"]["value"] = ["p", 0.5]
    assert only_error(rejected(prompt, reg), "out")["type"] == "bad_linked_input"


def test_linking_wrong_type_is_return_type_mismatch(reg):
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 1}},
              "2": {"class_type": "ToText", "inputs": {"a": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    error = only_error(rejected(prompt, reg), "3")
    assert error["type"] == "return_type_mismatch"
    assert error["extra_info"]["received_type"] == "STRING" and error["extra_info"]["linked_node"] == ["2", 0]


@pytest.mark.parametrize("inputs, kind", [
    ({"number": "many"}, "invalid_input_type"),
    ({"number": -1}, "value_smaller_than_min"),
    ({"number": 11}, "value_bigger_than_max"),
    ({"ratio": 1.5}, "value_bigger_than_max"),
    ({"mode": "medium"}, "value_not_in_list"),
    ({"flag": "maybe"}, "invalid_input_type"),
    ({"label": [1, 2]}, "bad_linked_input"),
])
def test_bad_literals_have_comfyui_error_types(reg, inputs, kind):
    error = only_error(rejected(pick(**inputs), reg), "p")
    assert error["type"] == kind
    name = next(iter(inputs))
    assert error["extra_info"]["input_name"] == name
    assert error["extra_info"]["received_value"] == inputs[name]


def test_wrapped_literal_list_is_unwrapped_then_checked(reg):
    error = only_error(rejected(pick(label={"__value__": [1, 2]}), reg), "p")
    assert error["type"] == "invalid_input_type"
    assert validate_prompt(pick(label={"__value__": "ok"}), reg).nodes["p"].literals["label"] == "ok"


def test_combo_error_lists_choices(reg):
    error = only_error(rejected(pick(mode="medium"), reg), "p")
    assert error["extra_info"]["input_config"] == ["fast", "slow"]


def test_custom_validation_failed_and_exception_during_validation(reg):
    prompt = {"1": {"class_type": "Even", "inputs": {"value": 3}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    error = only_error(rejected(prompt, reg), "1")
    assert error["type"] == "custom_validation_failed" and "odd" in error["details"]
    prompt["1"] = {"class_type": "Broken", "inputs": {"value": 3}}
    error = only_error(rejected(prompt, reg), "1")
    assert error["type"] == "exception_during_validation" and "validator bug" in error["details"]


def test_cycle_is_dependency_cycle_with_cycle_nodes(reg):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": ["3", 0], "b": 1}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
              "3": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
              "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}}}
    err = rejected(prompt, reg)
    cycles = [e for errors in err.node_errors.values() for e in errors["errors"] if e["type"] == "dependency_cycle"]
    assert len(cycles) == 1
    assert sorted(cycles[0]["extra_info"]["cycle_nodes"]) == ["1", "2", "3"]


def test_self_link_is_a_cycle(reg):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    assert only_error(rejected(prompt, reg), "1")["type"] == "dependency_cycle"


def test_any_failing_output_rejects_the_whole_prompt(reg):
    prompt = {**E.chain(2, prefix="ok"), **pick(mode="medium")}
    err = rejected(prompt, reg)
    assert set(err.node_errors) == {"p"} and err.node_errors["p"]["dependent_outputs"] == ["out"]


def test_partial_execution_targets_validate_only_what_they_need(reg):
    prompt = {**E.chain(2, prefix="ok"), **pick(mode="medium")}
    graph = validate_prompt(prompt, reg, partial_execution_targets=["okout"])
    assert graph.outputs == ("okout",) and "p" not in graph.nodes
    assert rejected(prompt, reg, partial_execution_targets=["ghost"]).type == "invalid_prompt"
    assert rejected(prompt, reg, partial_execution_targets="okout").type == "invalid_prompt"


def test_check_prompt_accepts_and_refuses_exactly_as_validate_prompt(reg):
    prompt = {**E.chain(2, prefix="ok"), **pick(mode="medium")}
    assert check_prompt(prompt, reg, partial_execution_targets=["okout"]) == ("okout",)
    with pytest.raises(PromptError) as checked:
        check_prompt(prompt, reg)
    assert checked.value.payload == rejected(prompt, reg).payload
    assert check_prompt(E.chain(3), reg) == validate_prompt(E.chain(3), reg).outputs


def test_undeclared_inputs_are_ignored(reg):
    prompt = pick(upload="image", extra=["p", 0])
    assert "upload" not in validate_prompt(prompt, reg).nodes["p"].literals


def test_all_errors_of_all_nodes_are_reported_at_once(reg):
    prompt = pick(number=-5, mode="x")
    err = rejected(prompt, reg)
    assert {e["type"] for e in err.node_errors["p"]["errors"]} == {"value_smaller_than_min", "value_not_in_list"}
    assert err.error["details"].count("\n") == 1


def test_ten_thousand_deep_chain_validates_fast_without_recursion(reg):
    prompt = E.chain(10_000)
    started = time.perf_counter()
    graph = validate_prompt(prompt, reg)
    assert time.perf_counter() - started < 2.0
    assert len(graph.order) == 10_002 and graph.order[0] == "n0" and graph.order[-1] == "nout"


def test_validation_does_not_mutate_the_prompt(reg):
    prompt = pick(number="7")
    validate_prompt(prompt, reg)
    assert prompt["p"]["inputs"]["number"] == "7" and "is_changed" not in prompt["p"]


def test_signature_depends_on_literals_not_on_node_ids(reg):
    a = validate_prompt(E.chain(2, prefix="a"), reg)
    b = validate_prompt(E.chain(2, prefix="b"), reg)
    c = validate_prompt(E.chain(2, prefix="a", start=1), reg)
    assert a.nodes["a1"].signature == b.nodes["b1"].signature
    assert a.nodes["a0"].signature != c.nodes["a0"].signature


def test_faulty_input_declaration_is_exception_during_inner_validation():
    from nodes.inputs import Int
    from nodes.registry import Node, Output, Registry

    class Fragile(Int):
        def coerce(self, value, choices=None):
            raise RuntimeError("declaration bug")

    class UsesFragile(Node):
        output_node = True
        value = Fragile(0)
        outputs = (Output("INT"),)

        @classmethod
        def run(cls, ctx, value):
            return (value,)

    reg = Registry()
    reg.add(UsesFragile)
    err = rejected({"1": {"class_type": "UsesFragile", "inputs": {"value": 1}}}, reg)
    error = only_error(err, "1")
    assert error["type"] == "exception_during_inner_validation" and "declaration bug" in error["details"]


def test_seeded_malformed_prompts_only_ever_raise_prompt_error(reg):
    import random

    rng = random.Random(1234)
    atoms = [None, True, 0, -1, 2**70, 1.5, float("nan"), float("inf"), "", "x", "fast", [], {}, ["1", 0],
             ["1", 5], ["9", 0], [1, 0], ["1", "0"], ["1", 0.5], ["1", float("nan")], {"__value__": [1]},
             {"__value__": {"a": 1}}, [["1", 0]], {"class_type": "Const"}]
    classes = ["Const", "Add", "Show", "Pick", "Switch", "Range", "Sum", "Even", "Broken", "Nope", None, 5, ["x"]]
    names = ["value", "a", "b", "number", "ratio", "mode", "label", "flag", "choose_a", "count", "values", 7]

    def value(depth=0):
        if depth < 2 and rng.random() < 0.2:
            return {rng.choice(["inputs", "class_type", "_meta", "x"]): value(depth + 1)}
        return rng.choice(atoms)

    for _ in range(500):
        prompt = {}
        for node in range(rng.randint(0, 5)):
            entry = {"class_type": rng.choice(classes), "inputs": {rng.choice(names): value() for _ in range(3)}}
            if rng.random() < 0.1:
                entry["inputs"] = value()
            if rng.random() < 0.1:
                entry["_meta"] = value()
            prompt[str(node) if rng.random() < 0.95 else node] = entry if rng.random() < 0.95 else value()
        targets = rng.choice([None, None, ["1"], ["x"], "1", [1]])
        try:
            validate_prompt(prompt, reg, partial_execution_targets=targets)
        except PromptError as err:
            assert err.error["type"] and isinstance(err.node_errors, dict)
            import json
            json.dumps(err.payload, allow_nan=True)  # the 400 body serialises
