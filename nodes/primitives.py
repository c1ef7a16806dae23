"""ComfyUI's primitive value nodes (comfy_extras/nodes_primitive.py): one "value" widget in, the same value out.

These are real nodes that run on the server, unlike the editor-only "PrimitiveNode" whose value the UI -> API
converter pushes into its targets (server/workflow.py). ComfyUI declares them with its V3 schema and no defaults: a
new node's widget starts at 0, "" or false, as ComfyUI's editor does.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from nodes.inputs import Boolean, Float, Int, String
from nodes.registry import Node, Output

if TYPE_CHECKING:
    from nodes.context import RunContext

PRIMITIVE_CATEGORY = "utils/primitive"


class PrimitiveString(Node):
    """A text value."""

    description = ""
    v3_schema = True
    display_name = "String"
    category = PRIMITIVE_CATEGORY
    value = String(None, multiline=False)
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, value: str) -> tuple[str]:
        return (value,)


class PrimitiveStringMultiline(Node):
    """A text value edited in a multi-line box."""

    description = ""
    v3_schema = True
    display_name = "String (Multiline)"
    category = PRIMITIVE_CATEGORY
    value = String(None, multiline=True)
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, value: str) -> tuple[str]:
        return (value,)


class PrimitiveInt(Node):
    """A whole number (with the editor's control-after-generate: fixed, increment, decrement, randomize)."""

    description = ""
    v3_schema = True
    display_name = "Int"
    category = PRIMITIVE_CATEGORY
    value = Int(None, min=-sys.maxsize, max=sys.maxsize, control_after_generate=True)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx: RunContext, value: int) -> tuple[int]:
        return (value,)


class PrimitiveFloat(Node):
    """A number."""

    description = ""
    v3_schema = True
    display_name = "Float"
    category = PRIMITIVE_CATEGORY
    value = Float(None, min=-sys.maxsize, max=sys.maxsize, step=0.1)
    outputs = (Output("FLOAT"),)

    @classmethod
    def run(cls, ctx: RunContext, value: float) -> tuple[float]:
        return (value,)


class PrimitiveBoolean(Node):
    """True or false."""

    description = ""
    v3_schema = True
    display_name = "Boolean"
    category = PRIMITIVE_CATEGORY
    value = Boolean(None)
    outputs = (Output("BOOLEAN"),)

    @classmethod
    def run(cls, ctx: RunContext, value: bool) -> tuple[bool]:
        return (value,)


NODES = (PrimitiveString, PrimitiveStringMultiline, PrimitiveInt, PrimitiveFloat, PrimitiveBoolean)
