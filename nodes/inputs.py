"""Input declarations of a node: one object per input, declared once on the node class.

Each declaration knows its ComfyUI type name, how it appears in `/object_info`, and how to check and cast a literal
value sent in a prompt. Validation, the `/object_info` schema and the editor's widgets all derive from it.
Nothing here imports torch: the server validates prompts with these objects alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

MAX_RESOLUTION = 16384
SEED_MAX = 0xFFFF_FFFF_FFFF_FFFF  # ComfyUI's seed range is 0..2^64-1


class InputError(ValueError):
    """A literal value that fails its declaration, in ComfyUI's error vocabulary.

    `kind` is ComfyUI's per-input error type (invalid_input_type, value_smaller_than_min, value_bigger_than_max,
    value_not_in_list, ...), `message` its short text and `details` the specific reason.
    """

    def __init__(self, kind: str, message: str, details: str, extra: Mapping[str, Any] | None = None):
        super().__init__(details)
        self.kind = kind
        self.message = message
        self.details = details
        self.extra = dict(extra or {})


@dataclass(frozen=True)
class Files:
    """Combo choices that are the files of a folder kind (`checkpoints`, `loras`, `input`...), listed at request time."""

    folder: str
    images_only: bool = False


ChoiceSource = Sequence[str] | Files | Callable[[], Sequence[str]]


class Input:
    """Base of every input declaration. Subclasses set `type_name` and widget behaviour."""

    type_name: ClassVar[str] = "*"
    is_widget: ClassVar[bool] = False  # can the value be a literal typed into the node (vs. only a link)?

    def __init__(self, *, optional: bool = False, tooltip: str | None = None, lazy: bool = False,
                 force_input: bool = False, advanced: bool = False):
        self.name = ""  # set by __set_name__ when declared on a node class, or by `named`
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.force_input = force_input
        self.advanced = advanced

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def named(self, name: str) -> Input:
        """Give the declaration its input name (for declarations built outside a class body)."""
        self.name = name
        return self

    # ---- /object_info -------------------------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The options dict of the `/object_info` entry (ComfyUI's key names)."""
        opts: dict[str, Any] = {}
        if self.tooltip:
            opts["tooltip"] = self.tooltip
        if self.lazy:
            opts["lazy"] = True
        if self.force_input:
            opts["forceInput"] = True
        if self.advanced:
            opts["advanced"] = True
        return opts

    def schema(self, choices: Sequence[str] | None = None) -> list[Any]:
        """The `[type, options]` pair `/object_info` shows for this input."""
        opts = self.options()
        return [self.type_name, opts] if opts else [self.type_name]

    # ---- validation ---------------------------------------------------------------------------------------------
    def coerce(self, value: Any, choices: Sequence[str] | None = None) -> Any:
        """Check a literal value and return it cast to the declared type; raise InputError otherwise."""
        raise InputError("invalid_input_type", "Input only accepts a link",
                         f"{self.name}: a {self.type_name} input must be linked to another node's output, "
                         f"got the literal {_show(value)}")

    def accepts_type(self, output_type: str) -> bool:
        """Can an output of `output_type` feed this input? ComfyUI: equal, '*' on either side, or overlapping sets."""
        return types_compatible(output_type, self.type_name)


MATCH_TYPE = "COMFY_MATCHTYPE_V3"
"""v3's match-type sockets: any type links to or from them (the node's own rules decide), as ComfyUI validates."""


def types_compatible(output_type: str, input_type: str) -> bool:
    if output_type == input_type or "*" in (output_type, input_type) or MATCH_TYPE in (output_type, input_type):
        return True
    outs = {t.strip() for t in output_type.split(",")}
    ins = {t.strip() for t in input_type.split(",")}
    return bool(outs & ins)


class Link(Input):
    """An input fed only by another node's output of a given type (MODEL, LATENT, IMAGE...)."""

    def __init__(self, type_name: str, **kw: Any):
        super().__init__(**kw)
        self.type_name = type_name  # type: ignore[misc]  # per-instance type name


class Int(Input):
    """A whole number. ``default=None`` declares none (the schema omits it; a missing value then reads 0, as in
    ComfyUI's editor); ``step`` appears in the schema only when declared (the editor steps INTs by 1 otherwise)."""

    type_name = "INT"
    is_widget = True

    def __init__(self, default: int | None = 0, *, min: int = -0x7FFF_FFFF_FFFF_FFFF,
                 max: int = 0x7FFF_FFFF_FFFF_FFFF, step: int | None = None, control_after_generate: bool = False,
                 display: str | None = None, **kw: Any):
        super().__init__(**kw)
        self.declares_default = default is not None
        self.default = 0 if default is None else default
        self.min, self.max, self.step = min, max, step
        self.control_after_generate = control_after_generate
        self.display = display

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default} if self.declares_default else {}
        opts.update(min=self.min, max=self.max)
        if self.step is not None:
            opts["step"] = self.step
        if self.control_after_generate:
            opts["control_after_generate"] = True
        if self.display:
            opts["display"] = self.display
        return {**opts, **super().options()}

    def coerce(self, value: Any, choices: Sequence[str] | None = None) -> int:
        number = _as_int(value)
        if number is None:
            raise InputError("invalid_input_type", "Failed to convert an input value to a INT value",
                             f"{self.name}, {_show(value)}: expected a whole number")
        return _check_range(self.name, number, self.min, self.max)


class Float(Input):
    """A number. ``default=None`` declares none (a missing value then reads 0.0); ``step`` and ``round`` appear in the
    schema only when declared."""

    type_name = "FLOAT"
    is_widget = True

    def __init__(self, default: float | None = 0.0, *, min: float = -1e18, max: float = 1e18,
                 step: float | None = None, round: float | bool | None = None, display: str | None = None, **kw: Any):
        super().__init__(**kw)
        self.declares_default = default is not None
        self.default = 0.0 if default is None else default
        self.min, self.max, self.step, self.round = min, max, step, round
        self.display = display

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default} if self.declares_default else {}
        opts.update(min=self.min, max=self.max)
        if self.step is not None:
            opts["step"] = self.step
        if self.round is not None:
            opts["round"] = self.round
        if self.display:
            opts["display"] = self.display
        return {**opts, **super().options()}

    def coerce(self, value: Any, choices: Sequence[str] | None = None) -> float:
        number = _as_float(value)
        if number is None:
            raise InputError("invalid_input_type", "Failed to convert an input value to a FLOAT value",
                             f"{self.name}, {_show(value)}: expected a finite number")
        return _check_range(self.name, number, self.min, self.max)


class String(Input):
    """Text. ``default=None`` declares none (a missing value then reads ""); ``multiline`` appears in the schema
    whenever it is given, False included (ComfyUI's PrimitiveString shows ``"multiline": false``)."""

    type_name = "STRING"
    is_widget = True

    def __init__(self, default: str | None = "", *, multiline: bool | None = None, dynamic_prompts: bool = False,
                 max_length: int = 1_000_000, **kw: Any):
        super().__init__(**kw)
        self.declares_default = default is not None
        self.default = "" if default is None else default
        self.multiline, self.dynamic_prompts = multiline, dynamic_prompts
        self.max_length = max_length

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default} if self.declares_default else {}
        if self.multiline is not None:
            opts["multiline"] = self.multiline
        if self.dynamic_prompts:
            opts["dynamicPrompts"] = True
        return {**opts, **super().options()}

    def coerce(self, value: Any, choices: Sequence[str] | None = None) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError("invalid_input_type", "Failed to convert an input value to a STRING value",
                             f"{self.name}, {_show(value)}: expected text")
        text = value if isinstance(value, str) else str(value)
        if len(text) > self.max_length:
            raise InputError("value_bigger_than_max", "Value bigger than max",
                             f"{self.name}: text of {len(text)} characters is longer than {self.max_length}")
        return text


class Boolean(Input):
    """True or false. ``default=None`` declares none (a missing value then reads False)."""

    type_name = "BOOLEAN"
    is_widget = True

    def __init__(self, default: bool | None = False, *, label_on: str | None = None, label_off: str | None = None,
                 **kw: Any):
        super().__init__(**kw)
        self.declares_default = default is not None
        self.default = False if default is None else default
        self.label_on, self.label_off = label_on, label_off

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"default": self.default} if self.declares_default else {}
        if self.label_on:
            opts["label_on"] = self.label_on
        if self.label_off:
            opts["label_off"] = self.label_off
        return {**opts, **super().options()}

    def coerce(self, value: Any, choices: Sequence[str] | None = None) -> bool:
        # Unlike ComfyUI (bool("false") is True), the strings are read for what they say.
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise InputError("invalid_input_type", "Failed to convert an input value to a BOOLEAN value",
                         f"{self.name}, {_show(value)}: expected true or false")


class Combo(Input):
    """A choice among strings: a fixed list, the files of a folder (`Files`), or a function giving the list."""

    type_name = "COMBO"
    is_widget = True

    def __init__(self, choices: ChoiceSource, *, default: str | None = None, image_upload: bool = False,
                 **kw: Any):
        super().__init__(**kw)
        self.source = choices if isinstance(choices, (Files,)) or callable(choices) else tuple(choices)
        self.default = default
        self.image_upload = image_upload

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.default is not None:
            opts["default"] = self.default
        if self.image_upload:
            opts["image_upload"] = True
        return {**opts, **super().options()}

    def schema(self, choices: Sequence[str] | None = None) -> list[Any]:
        # ComfyUI's v1 encoding: the list of choices in the type position.
        listed = list(choices if choices is not None else self.static_choices())
        opts = self.options()
        return [listed, opts] if opts else [listed]

    def static_choices(self) -> tuple[str, ...]:
        return self.source if isinstance(self.source, tuple) else ()

    def coerce(self, value: Any, choices: Sequence[str] | None = None) -> str:
        listed = choices if choices is not None else self.static_choices()
        if not isinstance(value, str) or value not in listed:
            shown = f"{list(listed)}" if len(listed) <= 20 else f"(list of length {len(listed)})"
            raise InputError("value_not_in_list", "Value not in list", f"{self.name}: {_show(value)} not in {shown}",
                             {"input_config": None if len(listed) > 20 else list(listed)})
        return value

    def accepts_type(self, output_type: str) -> bool:
        # A combo can be fed by a link from a node that outputs the same list or a generic COMBO/STRING value.
        return output_type in ("COMBO", "STRING", "*") or output_type.startswith("[")


# ---- helpers ----------------------------------------------------------------------------------------------------
def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value == int(value) else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            parsed = _as_float(value)
            return _as_int(parsed) if parsed is not None else None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        try:
            return _as_float(float(value.strip()))
        except ValueError:
            return None
    return None


def _check_range(name: str, number: Any, lo: Any, hi: Any) -> Any:
    if number < lo:
        raise InputError("value_smaller_than_min", f"Value {number} smaller than min of {lo}", f"{name}")
    if number > hi:
        raise InputError("value_bigger_than_max", f"Value {number} bigger than max of {hi}", f"{name}")
    return number
