"""Flow and utility nodes with ComfyUI's names, inputs and behaviour: the lazy Switch (only the chosen branch is
evaluated), CustomCombo (a combo whose options the editor defines) and PreviewAny (shows any value as text).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from nodes.context import RunContext
from nodes.inputs import Boolean, Link
from nodes.registry import Node, Output, Result
from nodes.special_inputs import MATCH_TYPE, FreeCombo, MatchType


# Passes on_true or on_false on. Both are lazy: the executor evaluates only the branch the switch picks, so the
# nodes feeding the other branch do not run at all.
class ComfySwitchNode(Node):
    display_name = "Switch"
    category = "logic"
    v3_schema = True
    experimental = True
    switch = Boolean(None)
    on_false = MatchType("switch", lazy=True)
    on_true = MatchType("switch", lazy=True)
    outputs = (Output(MATCH_TYPE, name="output"),)

    @classmethod
    def check_lazy(cls, ctx: RunContext, switch: bool, on_false: Any = None, on_true: Any = None) -> Sequence[str]:
        if switch and on_true is None:
            return ["on_true"]
        if not switch and on_false is None:
            return ["on_false"]
        return []

    @classmethod
    def run(cls, ctx: RunContext, switch: bool, on_false: Any = None, on_true: Any = None) -> tuple[Any]:
        return (on_true if switch else on_false,)


# The chosen text; the options are whatever the user typed into the node in the editor.
class CustomCombo(Node):
    display_name = "Custom Combo"
    category = "utils"
    v3_schema = True
    experimental = True
    choice = FreeCombo(())
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, choice: str) -> tuple[str]:
        return (choice,)


# Shows its input as text in the editor: strings as they are, numbers and booleans with str(), anything else as
# JSON when it can be, else str().
class PreviewAny(Node):
    display_name = "Preview as Text"
    category = "utils"
    output_node = True
    source = Link("*")

    @classmethod
    def run(cls, ctx: RunContext, source: Any = None) -> Result:
        return Result(ui={"text": (preview_text(source),)})


def preview_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    if value is None:
        return "None"
    try:
        return json.dumps(value)
    except Exception:  # noqa: BLE001 - anything that is not JSON is shown with str(), as ComfyUI does
        try:
            return str(value)
        except Exception:  # noqa: BLE001
            return "source exists, but could not be serialized."


NODES = (ComfySwitchNode, CustomCombo, PreviewAny)
