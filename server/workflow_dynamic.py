"""Widget values of nodes with v3 DynamicCombo inputs, in the order ComfyUI's frontend stores them.

A DynamicCombo (`COMFY_DYNAMICCOMBO_V3`, e.g. ResizeImageMaskNode's `resize_type`) reveals the inputs of the option
chosen; the frontend stores the combo's value followed by the revealed widgets' values, then the node's other
widgets:

    "widgets_values": ["scale dimensions", 2048, 2048, "center", "lanczos"]
    -> resize_type="scale dimensions", resize_type.width=2048, resize_type.height=2048, resize_type.crop="center",
       scale_method="lanczos"

so the flat declaration order (every option's inputs) cannot name them: the layout depends on the values. The
compact schema (`NodeSpec.raw_input_types`, what /object_info serves) says which option reveals what.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
_WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
_CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})


def has_dynamic_combo(schema: Mapping[str, Any] | None) -> bool:
    return schema is not None and any(_kind(entry) == DYNAMIC_COMBO for _, entry in _entries(schema))


def _entries(schema: Mapping[str, Any]) -> Iterator[tuple[str, Sequence[Any]]]:
    for section in ("required", "optional"):
        for name, entry in (schema.get(section) or {}).items():
            if isinstance(entry, Sequence) and not isinstance(entry, str) and entry:
                yield str(name), entry


def _kind(entry: Sequence[Any]) -> str:
    return "COMBO" if isinstance(entry[0], list) else str(entry[0])


def _options(entry: Sequence[Any]) -> Mapping[str, Any]:
    return entry[1] if len(entry) > 1 and isinstance(entry[1], Mapping) else {}


def _has_control(entry: Sequence[Any]) -> bool:
    return _kind(entry) == "INT" and bool(_options(entry).get("control_after_generate"))


def _revealed(entry: Sequence[Any], chosen: Any) -> Mapping[str, Any]:
    for option in _options(entry).get("options", []) or []:
        if isinstance(option, Mapping) and option.get("key") == chosen:
            return option.get("inputs") or {}
    return {}


def name_values(schema: Mapping[str, Any], values: Sequence[Any], prefix: str = "") -> dict[str, Any]:
    """Name the stored `values` of a node whose compact input schema is `schema`; revealed inputs get dotted names.
    Values beyond the layout are ignored; a layout longer than the values stops where they end."""
    named: dict[str, Any] = {}
    position = 0

    def walk(schema: Mapping[str, Any], prefix: str) -> None:
        nonlocal position
        for name, entry in _entries(schema):
            kind = _kind(entry)
            if kind != DYNAMIC_COMBO and kind not in _WIDGET_TYPES or position >= len(values):
                continue
            named[prefix + name] = values[position]
            position += 1
            if _has_control(entry) and position < len(values) and values[position] in _CONTROL_VALUES:
                position += 1
            if kind == DYNAMIC_COMBO:
                walk(_revealed(entry, named[prefix + name]), prefix + name + ".")

    walk(schema, prefix)
    return named


def stored_order(schema: Mapping[str, Any], inputs: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The names whose values the frontend stores, in its order, for a node whose prompt inputs are `inputs`
    (a DynamicCombo's revealed inputs follow it, for the option `inputs` chose)."""
    order: list[str] = []

    def walk(schema: Mapping[str, Any], prefix: str) -> None:
        for name, entry in _entries(schema):
            kind = _kind(entry)
            if kind != DYNAMIC_COMBO and kind not in _WIDGET_TYPES:
                continue
            order.append(prefix + name)
            if kind == DYNAMIC_COMBO:
                chosen = inputs.get(prefix + name)
                if chosen is None:
                    options = _options(entry).get("options") or [{}]
                    chosen = options[0].get("key") if isinstance(options[0], Mapping) else None
                walk(_revealed(entry, chosen), prefix + name + ".")

    walk(schema, prefix)
    return order
