"""Text and logic nodes (nodes/text.py, nodes/logic.py): ComfyUI's string results, regex flags and failures, and
the lazy Switch run through the real validator and executor (the branch not taken never runs)."""

import functools

import pytest
import torch

from nodes import logic, text
from nodes.context import RunContext
from nodes.inputs import InputError, String
from nodes.logic import CustomCombo, PreviewAny
from nodes.registry import Node, Output, Registry
from nodes.services import Services
from nodes.text import (CaseConverter, RegexExtract, RegexMatch, RegexReplace, StringCompare, StringConcatenate,
                        StringContains, StringLength, StringReplace, StringSubstring, StringTrim)
from server.engine.cache import OutputCache
from server.engine.executor import Executor
from server.engine.graph import validate_prompt
from tests.nodes.test_image import TmpFolders, make_ctx, run


def value(node, tmp_path, **inputs):
    return run(node, make_ctx(tmp_path), **inputs).values[0]


def test_string_basics(tmp_path):
    assert value(StringConcatenate, tmp_path, string_a="a", string_b="b", delimiter=", ") == "a, b"
    assert value(StringSubstring, tmp_path, string="abcdef", start=1, end=-1) == "bcde"
    assert value(StringLength, tmp_path, string="héllo") == 5
    assert value(StringReplace, tmp_path, string="a-b-c", find="-", replace="+") == "a+b+c"
    assert value(StringTrim, tmp_path, string="  x \n", mode="Left") == "x \n"
    assert value(StringTrim, tmp_path, string="  x \n", mode="Both") == "x"


@pytest.mark.parametrize("mode, expected", [("UPPERCASE", "HELLO WORLD"), ("lowercase", "hello world"),
                                            ("Capitalize", "Hello world"), ("Title Case", "Hello World")])
def test_case_converter(tmp_path, mode, expected):
    assert value(CaseConverter, tmp_path, string="hELLO wORLD", mode=mode) == expected


def test_contains_and_compare_honour_case_sensitivity(tmp_path):
    assert value(StringContains, tmp_path, string="Hello", substring="hell", case_sensitive=True) is False
    assert value(StringContains, tmp_path, string="Hello", substring="hell", case_sensitive=False) is True
    compare = functools.partial(value, StringCompare, tmp_path, string_a="Hello.png", case_sensitive=False)
    assert compare(string_b="HELLO", mode="Starts With") is True
    assert compare(string_b=".PNG", mode="Ends With") is True
    assert compare(string_b="hello.png", mode="Equal") is True
    assert value(StringCompare, tmp_path, string_a="a", string_b="A", mode="Equal", case_sensitive=True) is False


def test_regex_match_flags_and_a_bad_pattern_is_false(tmp_path):
    match = functools.partial(value, RegexMatch, tmp_path, multiline=False, dotall=False)
    assert match(string="Cat", regex_pattern="^cat$", case_insensitive=True) is True
    assert match(string="Cat", regex_pattern="^cat$", case_insensitive=False) is False
    assert value(RegexMatch, tmp_path, string="a\nb", regex_pattern="^b", case_insensitive=False, multiline=True,
                 dotall=False) is True
    assert match(string="x", regex_pattern="(", case_insensitive=True) is False


@pytest.mark.parametrize("mode, group, expected", [
    ("First Match", 1, "a1"), ("All Matches", 1, "a\nb"), ("First Group", 2, "1"), ("All Groups", 2, "1\n22"),
    ("First Group", 5, "")])
def test_regex_extract_modes(tmp_path, mode, group, expected):
    assert value(RegexExtract, tmp_path, string="a1 b22", regex_pattern=r"([a-z])(\d+)", mode=mode,
                 case_insensitive=True, multiline=False, dotall=False, group_index=group) == expected


def test_regex_extract_without_groups_and_with_a_bad_pattern(tmp_path):
    extract = functools.partial(value, RegexExtract, tmp_path, case_insensitive=False, multiline=False,
                                dotall=False, group_index=1)
    assert extract(string="a1 b22", regex_pattern=r"\d+", mode="All Matches") == "1\n22"
    assert extract(string="a1", regex_pattern="[", mode="First Match") == ""


def test_regex_replace_counts_and_flags_and_names_a_bad_pattern(tmp_path):
    assert value(RegexReplace, tmp_path, string="aAaA", regex_pattern="a", replace="x") == "xxxx"
    assert value(RegexReplace, tmp_path, string="aAaA", regex_pattern="a", replace="x", case_insensitive=False,
                 count=1) == "xAaA"
    assert value(RegexReplace, tmp_path, string="a.b", regex_pattern=r"(\w)\.(\w)", replace=r"\2\1") == "ba"
    with pytest.raises(ValueError, match="regex_pattern"):
        value(RegexReplace, tmp_path, string="a", regex_pattern="(", replace="")


def test_custom_combo_accepts_any_text_choice(tmp_path):
    assert CustomCombo.choice.coerce("whatever the user typed") == "whatever the user typed"
    with pytest.raises(InputError):
        CustomCombo.choice.coerce(3)
    assert value(CustomCombo, tmp_path, choice="b") == "b"


def test_preview_any_shows_values_as_text(tmp_path):
    preview = functools.partial(run, PreviewAny, make_ctx(tmp_path))
    assert preview(source="text").ui == {"text": ("text",)}
    assert preview(source=1.5).ui == {"text": ("1.5",)}
    assert preview(source={"a": [1, True]}).ui == {"text": ('{"a": [1, true]}',)}
    assert preview(source=None).ui == {"text": ("None",)}
    assert preview(source=torch.zeros(2)).ui == {"text": (str(torch.zeros(2)),)}


# ---- the lazy switch through the real executor --------------------------------------------------------------------
PROBE_CALLS: list[str] = []


class Probe(Node):
    """A test source: returns its text and notes that it ran."""

    text = String("")
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx, text):
        PROBE_CALLS.append(ctx.node_id)
        return (text,)


def switch_prompt(switch) -> dict:
    return {
        "1": {"class_type": "Probe", "inputs": {"text": "false branch"}},
        "2": {"class_type": "Probe", "inputs": {"text": "true branch"}},
        "3": {"class_type": "StringConcatenate", "inputs": {"string_a": ["2", 0], "string_b": "!", "delimiter": ""}},
        "4": {"class_type": "ComfySwitchNode", "inputs": {"switch": switch, "on_false": ["1", 0],
                                                          "on_true": ["3", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }


@pytest.fixture
def executor(tmp_path):
    registry = Registry()
    registry.add_all([*logic.NODES, *text.NODES, Probe])
    services = Services(folders=TmpFolders(tmp_path))
    return registry, Executor(registry, OutputCache(), functools.partial(RunContext, services=services))


def test_the_switch_runs_only_the_branch_it_picks(executor):
    registry, run_graph = executor
    PROBE_CALLS.clear()
    outcome = run_graph.execute(validate_prompt(switch_prompt(True), registry), prompt_id="p1")
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["5"] == {"text": ("true branch!",)}
    assert PROBE_CALLS == ["2"] and "1" not in outcome.executed
    PROBE_CALLS.clear()
    outcome = run_graph.execute(validate_prompt(switch_prompt(False), registry), prompt_id="p2")
    assert outcome.outputs["5"] == {"text": ("false branch",)}
    assert PROBE_CALLS == ["1"] and not {"2", "3"} & set(outcome.executed)


def test_the_switch_needs_both_branches_linked(executor):
    registry, _ = executor
    prompt = switch_prompt(True)
    del prompt["4"]["inputs"]["on_false"]
    with pytest.raises(Exception, match="on_false"):
        validate_prompt(prompt, registry)
