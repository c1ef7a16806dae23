"""Input declarations a few nodes need beyond the kit's (nodes/inputs.py), in ComfyUI's schema shapes:

  MatchType      v3's COMFY_MATCHTYPE_V3 link: any of its allowed types, and the node's output takes the type fed in
  FreeCombo      a combo whose options the editor defines (CustomCombo): any text is accepted
  SuffixFiles    a combo of the files of a folder with one suffix (LoadLatent: `.latent` files of input/)
  RemoteImages   LoadImageOutput's combo, listed by the editor from a server route (ComfyUI's "remote" combo)
  PlainInt       an INT declared with no default and no range (StringSubstring's start and end)

and the flat form of v3's dynamic inputs: an Autogrow input (`images` growing image0, image1...) or a DynamicCombo
(`resize_type` revealing the inputs of the chosen option) arrives in a prompt as several dotted keys
(`images.image0`, `resize_type.multiplier`). Such a node declares one input per key (`with_inputs`) so validation
and the call see them, and serves ComfyUI's compact schema in /object_info (`with_input_schema`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from nodes.inputs import Combo, Files, Input, InputError, Int, Link, types_compatible
from nodes.registry import Node, NodeSpec, spec_of

MATCH_TYPE = "COMFY_MATCHTYPE_V3"
AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"

N = TypeVar("N", bound=type[Node])


class MatchType(Link):
    """A link of any of `allowed_types` ("*": any type, "IMAGE,MASK": either); the node's MatchType output has the
    type of what is fed in. As in ComfyUI, a MatchType end of a link matches any type (the editor resolves it)."""

    def __init__(self, template_id: str, allowed_types: str = "*", **kw: Any):
        super().__init__(MATCH_TYPE, **kw)
        self.template_id, self.allowed_types = template_id, allowed_types

    def options(self) -> dict[str, Any]:
        return {**super().options(), "template": {"template_id": self.template_id,
                                                  "allowed_types": self.allowed_types}}

    def accepts_type(self, output_type: str) -> bool:
        return output_type == MATCH_TYPE or types_compatible(output_type, self.allowed_types)


class FreeCombo(Combo):
    """A combo whose options live in the editor (ComfyUI's CustomCombo): any text is a valid choice."""

    def coerce(self, value: Any, choices: Sequence[str] | None = None) -> str:
        if not isinstance(value, str):
            raise InputError("invalid_input_type", "Failed to convert an input value to a STRING value",
                             f"{self.name}, {value!r}: expected text")
        return value


class SuffixFiles(Combo):
    """The files of a folder kind whose names end with `suffix` (the folder listing is filtered here)."""

    def __init__(self, folder: str, suffix: str, **kw: Any):
        super().__init__(Files(folder), **kw)
        self.suffix = suffix

    def _matching(self, choices: Sequence[str] | None) -> list[str]:
        return [name for name in choices or () if name.endswith(self.suffix)]

    def schema(self, choices: Sequence[str] | None = None) -> list[Any]:
        return super().schema(self._matching(choices))

    def coerce(self, value: Any, choices: Sequence[str] | None = None) -> str:
        return super().coerce(value, self._matching(choices))


class RemoteImages(Input):
    """LoadImageOutput's image: a COMBO the editor fills from `route` (names annotated like "x.png [output]"),
    with an upload button. Any name is accepted here; the node reports a file that cannot be read."""

    type_name = "COMBO"
    is_widget = True
    image_upload = True

    def __init__(self, *, folder: str, route: str, **kw: Any):
        super().__init__(**kw)
        self.folder, self.route = folder, route

    def options(self) -> dict[str, Any]:
        return {"image_upload": True, "image_folder": self.folder,
                "remote": {"route": self.route, "refresh_button": True, "control_after_refresh": "first"},
                **super().options()}

    def coerce(self, value: Any, choices: Sequence[str] | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise InputError("invalid_input_type", "Failed to convert an input value to a COMBO value",
                             f"{self.name}, {value!r}: expected an image name")
        return value

    def accepts_type(self, output_type: str) -> bool:
        return output_type in ("COMBO", "STRING", "*")


class PlainInt(Int):
    """An INT that declares no default and no range: its schema is ["INT", {}] (a 64-bit value is accepted)."""

    def __init__(self, **kw: Any):
        super().__init__(None, **kw)

    def options(self) -> dict[str, Any]:
        return {key: value for key, value in super().options().items() if key not in ("min", "max")}


# ---- dynamic inputs, flat ----------------------------------------------------------------------------------------
def with_inputs(inputs: Mapping[str, Input]) -> Callable[[N], N]:
    """Class decorator: the node with `inputs` declared after its own, under their names as given (dotted prompt
    keys such as "images.image0", which cannot be attribute names)."""

    def decorate(node: N) -> N:
        namespace = {"__module__": node.__module__, "__qualname__": node.__qualname__, "__doc__": node.__doc__,
                     **inputs}
        return type(node.__name__, (node,), namespace)  # type: ignore[return-value]

    return decorate


def with_input_schema(node: type[Node], schema: Mapping[str, Any]) -> NodeSpec:
    """The node's spec, serving ComfyUI's compact `schema` ({"required": {...}, ...}) as its /object_info inputs
    while validating and calling with the flat inputs it declares."""
    return dataclasses.replace(spec_of(node), raw_input_types=lambda: schema)


def autogrow_inputs(marker: str, link_type: str, *, prefix: str, minimum: int, maximum: int) -> dict[str, Link]:
    """The links an Autogrow input stands for, named as prompts send them: `marker.prefix0` ... `prefix{max-1}`,
    the first `minimum` of them required."""
    return {f"{marker}.{prefix}{i}": Link(link_type, optional=i >= minimum) for i in range(maximum)}


def autogrow_schema(link_type: str, *, name: str, prefix: str, minimum: int, maximum: int) -> list[Any]:
    """ComfyUI's /object_info entry of an Autogrow input whose slots are `name`-typed `link_type` links."""
    return [AUTOGROW, {"template": {"input": {"required": {name: [link_type, {}]}}, "prefix": prefix,
                                    "min": minimum, "max": maximum}}]


def autogrow_values(marker: str, inputs: Mapping[str, Any]) -> list[Any]:
    """The values given to an Autogrow input's slots, in slot order (gaps are allowed, as in ComfyUI)."""
    head = marker + "."
    slots = [(key, value) for key, value in inputs.items() if key.startswith(head) and value is not None]
    return [value for _, value in sorted(slots, key=lambda item: _slot_number(item[0]))]


def _slot_number(key: str) -> int:
    digits = len(key) - len(key.rstrip("0123456789"))
    return int(key[-digits:]) if digits else -1
