"""ComfyUI's primitive value nodes (comfy_extras/nodes_primitive.py): one "value" widget in, the same value out.

These are real nodes that run on the server, unlike the editor-only "PrimitiveNode" whose value the UI -> API
converter pushes into its targets (server/workflow.py).
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

    display_name = "String"
    category = PRIMITIVE_CATEGORY
    value = String("")
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, value: str) -> tuple[str]:
        return (value,)


class PrimitiveStringMultiline(Node):
    """A text value edited in a multi-line box."""

    display_name = "String (Multiline)"
    category = PRIMITIVE_CATEGORY
    value = String("", multiline=True)
    outputs = (Output("STRING"),)

    @classmethod
    def run(cls, ctx: RunContext, value: str) -> tuple[str]:
        return (value,)


class PrimitiveInt(Node):
    """A whole number (with the editor's control-after-generate: fixed, increment, decrement, randomize)."""

    display_name = "Int"
    category = PRIMITIVE_CATEGORY
    value = Int(0, min=-sys.maxsize, max=sys.maxsize, control_after_generate=True)
    outputs = (Output("INT"),)

    @classmethod
    def run(cls, ctx: RunContext, value: int) -> tuple[int]:
        return (value,)


class PrimitiveFloat(Node):
    """A number."""

    display_name = "Float"
    category = PRIMITIVE_CATEGORY
    value = Float(0.0, min=-sys.maxsize, max=sys.maxsize)
    outputs = (Output("FLOAT"),)

    @classmethod
    def run(cls, ctx: RunContext, value: float) -> tuple[float]:
        return (value,)


class PrimitiveBoolean(Node):
    """True or false."""

    display_name = "Boolean"
    category = PRIMITIVE_CATEGORY
    value = Boolean(False)
    outputs = (Output("BOOLEAN"),)

    @classmethod
    def run(cls, ctx: RunContext, value: bool) -> tuple[bool]:
        return (value,)


NODES = (PrimitiveString, PrimitiveStringMultiline, PrimitiveInt, PrimitiveFloat, PrimitiveBoolean)
