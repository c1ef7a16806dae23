"""ComfyUI-style node classes (INPUT_TYPES / RETURN_TYPES / FUNCTION ...) adapted into NodeSpecs.

A custom node written for ComfyUI that does not import ComfyUI's internals runs here unchanged:
  - INPUT_TYPES() becomes nodes.inputs declarations (for validation) and is also served verbatim in /object_info;
    combo lists are re-read from INPUT_TYPES() each time they are needed, as ComfyUI does (file lists change).
  - The class is instantiated for each call (ComfyUI semantics) and the instance is dropped afterwards: no state
    survives from one prompt to the next.
  - Our typed LATENT and CONDITIONING values are converted to ComfyUI's dict / list-of-pairs shapes on the way in,
    and outputs declared LATENT or CONDITIONING are converted back.
  - IS_CHANGED becomes the cache fingerprint (a NaN is passed on: the executor then always re-runs the node),
    NOT_IDEMPOTENT keeps identical nodes of one prompt from sharing a result, and VALIDATE_INPUTS and
    check_lazy_status are called as ComfyUI calls them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import math
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ContextManager

import torch

from nodes.context import RunContext
from nodes.inputs import Boolean, Combo, Float, Input, InputError, Int, Link, String
from nodes.registry import HIDDEN_KINDS, NodeSpec, Output, Result
from nodes.types import Area, CondEntry, Conditioning, Latent

# The hidden input kinds ComfyUI passes to a node's function; an argument declared with any other kind is left out.
COMFY_HIDDEN_KINDS = ("PROMPT", "DYNPROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "AUTH_TOKEN_COMFY_ORG",
                      "API_KEY_COMFY_ORG")

# CondEntry fields <-> ComfyUI conditioning option keys.
_COND_KEYS = ("pooled_output", "area", "strength", "mask", "mask_strength", "set_area_to_bounds", "start_percent",
              "end_percent")


class LegacyNodeError(TypeError):
    """A ComfyUI-style class that cannot be adapted, or that misbehaved when called (names the node and why)."""

    def __init__(self, node: str, reason: str):
        super().__init__(f"{node}: {reason}")
        self.node, self.reason = node, reason


class LegacyCombo(Combo):
    """A ComfyUI combo: choices re-read from INPUT_TYPES() and not necessarily strings (e.g. [1, 2, 4])."""

    def coerce(self, value: Any, choices: Sequence[Any] | None = None) -> Any:
        listed = list(choices if choices is not None else self.static_choices())
        # `True in [1]` holds in Python: a boolean only matches a boolean choice.
        if any(value == choice and isinstance(value, bool) == isinstance(choice, bool) for choice in listed):
            return value
        shown = f"{listed}" if len(listed) <= 20 else f"(list of length {len(listed)})"
        raise InputError("value_not_in_list", "Value not in list", f"{self.name}: {value!r} not in {shown}",
                         {"input_config": None if len(listed) > 20 else listed})


@dataclass(frozen=True)
class Boundary:
    """What a custom node pack's functions see beyond LATENT and CONDITIONING (given by the custom-node loader):
    to_comfy(value)          one of our values as ComfyUI's object (a MODEL handle as a ModelPatcher, ...)
    from_comfy(kind, value)  a value a pack returned for an output of type `kind`, as ours
    running(ctx)             a context entered around every call of the pack's code (its node run in progress)"""

    to_comfy: Callable[[Any], Any] = lambda value: value
    from_comfy: Callable[[str, Any], Any] = lambda kind, value: value
    running: Callable[[RunContext], ContextManager[Any]] = lambda ctx: contextlib.nullcontext()


PLAIN = Boundary()


def adapt_legacy_node(name: str, cls: type, *, display_name: str | None = None,
                      python_module: str = "custom_nodes", boundary: Boundary = PLAIN) -> NodeSpec:
    """The NodeSpec of a ComfyUI-style class registered under `name`. Raises LegacyNodeError when malformed.

    A class whose FUNCTION names no method is still listed (ComfyUI lists it in /object_info); running it fails
    with an error naming the problem."""
    input_types = _input_types(name, cls)
    return_types = _tuple_attr(name, cls, "RETURN_TYPES", required=True)
    function_name = getattr(cls, "FUNCTION", None)
    function_problem = None
    if not isinstance(function_name, str) or not callable(getattr(cls, function_name, None)):
        function_problem = f"FUNCTION {function_name!r} does not name a method of {cls.__name__}"
    return_names = _tuple_attr(name, cls, "RETURN_NAMES")
    output_is_list = _tuple_attr(name, cls, "OUTPUT_IS_LIST")
    tooltips = _tuple_attr(name, cls, "OUTPUT_TOOLTIPS")
    outputs = tuple(
        Output(type=_output_type(kind), name=str(return_names[i]) if i < len(return_names) else None,
               is_list=bool(output_is_list[i]) if i < len(output_is_list) else False,
               tooltip=str(tooltips[i]) if i < len(tooltips) and tooltips[i] else None)
        for i, kind in enumerate(return_types))

    declared: list[Input] = []
    for section, optional in (("required", False), ("optional", True)):
        for input_name, entry in (input_types.get(section) or {}).items():
            declared.append(_declaration(name, cls, section, input_name, entry, optional=optional))
    hidden_all = {str(arg): _hidden_kind(kind) for arg, kind in (input_types.get("hidden") or {}).items()}
    hidden_all = {arg: kind for arg, kind in hidden_all.items() if kind in COMFY_HIDDEN_KINDS}
    hidden = {arg: kind for arg, kind in hidden_all.items() if kind in HIDDEN_KINDS}
    input_is_list = bool(getattr(cls, "INPUT_IS_LIST", False))
    convert_in = _converter(boundary)

    def call(ctx: RunContext, inputs: dict[str, Any]) -> Result | Awaitable[Result]:
        if function_problem is not None:
            raise LegacyNodeError(name, function_problem)
        arguments = {key: convert_in(value) for key, value in inputs.items()}
        _fill_hidden(arguments, hidden_all, ctx)
        with boundary.running(ctx):
            instance = _instantiate(name, cls)
            try:
                returned = getattr(instance, function_name)(**arguments)
            except SystemExit as error:  # a pack's exit() must fail its node, not end the worker thread
                raise LegacyNodeError(name, f"called exit({error.code!r})") from None
        if inspect.isawaitable(returned):  # an async function: the executor awaits it on the worker's loop
            return _finish(ctx, returned)
        return _result(name, returned, outputs, boundary)

    async def _finish(ctx: RunContext, pending: Any) -> Result:
        with boundary.running(ctx):
            try:
                returned = await pending
            except SystemExit as error:
                raise LegacyNodeError(name, f"called exit({error.code!r})") from None
        return _result(name, returned, outputs, boundary)

    fingerprint = _fingerprint(name, cls, hidden_all, input_is_list, boundary)
    check_lazy = _check_lazy(name, cls, declared, hidden_all, boundary) \
        if callable(getattr(cls, "check_lazy_status", None)) else None
    validate = _validate(name, cls) if callable(getattr(cls, "VALIDATE_INPUTS", None)) else None

    def raw_input_types() -> Mapping[str, Any]:
        return cls.INPUT_TYPES()

    return NodeSpec(
        name=name,
        display_name=display_name or name,
        category=str(getattr(cls, "CATEGORY", "sd")),
        description=str(getattr(cls, "DESCRIPTION", "") or ""),
        inputs=tuple(declared),
        outputs=outputs,
        hidden=hidden,
        output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
        always_run=False,
        input_is_list=input_is_list,
        call=call,
        fingerprint=fingerprint,
        check_lazy=check_lazy,
        validate=validate,
        **_validate_contract(cls),
        python_module=python_module,
        deprecated=bool(getattr(cls, "DEPRECATED", False)),
        experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
        search_aliases=tuple(str(a) for a in getattr(cls, "SEARCH_ALIASES", ()) or ()),
        raw_input_types=raw_input_types,
    )


def _hidden_kind(kind: Any) -> str:
    """A hidden input's kind: "PROMPT" or ("PROMPT",) or ("PROMPT", {...}) as packs write it."""
    if isinstance(kind, (tuple, list)) and kind:
        kind = kind[0]
    return str(kind)


def _converter(boundary: Boundary) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        value = to_comfy_value(value)
        if isinstance(value, list):
            return [boundary.to_comfy(item) for item in value]
        return boundary.to_comfy(value)

    return convert


# ---- input declarations -----------------------------------------------------------------------------------------
def _input_types(name: str, cls: type) -> Mapping[str, Any]:
    method = getattr(cls, "INPUT_TYPES", None)
    if not callable(method):
        raise LegacyNodeError(name, "has no INPUT_TYPES classmethod")
    try:
        types = method()
    except Exception as error:  # a pack's own code: report what it raised
        raise LegacyNodeError(name, f"INPUT_TYPES() raised {type(error).__name__}: {error}") from error
    if not isinstance(types, Mapping):
        raise LegacyNodeError(name, f"INPUT_TYPES() returned {type(types).__name__}, expected a dict")
    for section in ("required", "optional", "hidden"):
        if types.get(section) is not None and not isinstance(types[section], Mapping):
            raise LegacyNodeError(name, f"INPUT_TYPES()[{section!r}] is not a dict")
    return types


def _declaration(node: str, cls: type, section: str, input_name: str, entry: Any, *, optional: bool) -> Input:
    if isinstance(entry, str):
        entry = (entry,)
    if not isinstance(entry, (tuple, list)) or not entry:
        raise LegacyNodeError(node, f"input {input_name!r}: expected (type, options), got {entry!r}")
    kind = entry[0]
    options = entry[1] if len(entry) > 1 and isinstance(entry[1], Mapping) else {}
    common: dict[str, Any] = {
        "optional": optional, "tooltip": options.get("tooltip"), "lazy": bool(options.get("lazy")),
        "force_input": bool(options.get("forceInput")), "advanced": bool(options.get("advanced")),
    }
    if isinstance(kind, (list, tuple)) or kind == "COMBO":
        declared: Input = LegacyCombo(_live_choices(cls, section, input_name), default=options.get("default"),
                                      image_upload=bool(options.get("image_upload")), **common)
    elif kind == "INT":
        declared = Int(_number(options, "default", 0), **_limits(options, int), **common,
                       control_after_generate=bool(options.get("control_after_generate")),
                       display=options.get("display") if isinstance(options.get("display"), str) else None)
    elif kind == "FLOAT":
        rounding = options.get("round")
        declared = Float(_number(options, "default", 0.0), **_limits(options, float), **common,
                         round=rounding if isinstance(rounding, (int, float)) and rounding is not True else None)
    elif kind == "STRING":
        declared = String(str(options.get("default", "")), multiline=bool(options.get("multiline")),
                          dynamic_prompts=bool(options.get("dynamicPrompts")), **common)
    elif kind == "BOOLEAN":
        declared = Boolean(bool(options.get("default", False)), label_on=options.get("label_on"),
                           label_off=options.get("label_off"), **common)
    elif isinstance(kind, str):
        declared = Link(kind, **common)
    else:
        raise LegacyNodeError(node, f"input {input_name!r}: type {kind!r} is neither a type name nor a list")
    return declared.named(str(input_name))


def _live_choices(cls: type, section: str, input_name: str) -> Callable[[], list[Any]]:
    """Choices read from INPUT_TYPES() at the time they are needed (loader lists follow the folders)."""

    def choices() -> list[Any]:
        entry = cls.INPUT_TYPES()[section][input_name]
        kind = entry[0] if isinstance(entry, (tuple, list)) else entry
        if kind == "COMBO":
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], Mapping) else {}
            return list(options.get("options", []))
        return list(kind)

    return choices


def _limits(options: Mapping[str, Any], cast: type) -> dict[str, Any]:
    return {key: cast(options[key]) for key in ("min", "max", "step")
            if isinstance(options.get(key), (int, float)) and not isinstance(options.get(key), bool)
            and math.isfinite(options[key])}


def _number(options: Mapping[str, Any], key: str, fallback: Any) -> Any:
    value = options.get(key, fallback)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else fallback


def _tuple_attr(node: str, cls: type, attr: str, *, required: bool = False) -> tuple[Any, ...]:
    value = getattr(cls, attr, None)
    if value is None:
        if required:
            raise LegacyNodeError(node, f"has no {attr}")
        return ()
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise LegacyNodeError(node, f"{attr} must be a tuple, got {value!r}")
    return tuple(value)


def _output_type(kind: Any) -> str:
    # An output declared as a list of choices feeds combo inputs.
    return "COMBO" if isinstance(kind, (list, tuple)) else str(kind)


# ---- calling ------------------------------------------------------------------------------------------------------
def _instantiate(name: str, cls: type) -> Any:
    try:
        return cls()
    except Exception as error:
        raise LegacyNodeError(name, f"{cls.__name__}() raised {type(error).__name__}: {error}") from error


def _fill_hidden(arguments: dict[str, Any], hidden: Mapping[str, str], ctx: RunContext | None) -> None:
    """ComfyUI's hidden inputs by argument name, from the run context, unless the executor already passed them."""
    values = dict(getattr(ctx, "hidden", None) or {})
    if ctx is not None:
        values.setdefault("UNIQUE_ID", getattr(ctx, "node_id", None))
    for argument, kind in hidden.items():
        if argument not in arguments:
            arguments[argument] = values.get(kind)


def _await(value: Any) -> Any:
    """Custom nodes may define `async def` functions; run them to completion on a fresh event loop: in this thread
    (the worker's, which has none), or in a helper thread when the caller already runs a loop."""
    if not inspect.isawaitable(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_as_coroutine(value))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _as_coroutine(value)).result()


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable


def _result(name: str, returned: Any, outputs: tuple[Output, ...], boundary: Boundary = PLAIN) -> Result:
    ui = expand = None
    if isinstance(returned, Mapping):
        ui = returned.get("ui")
        expand = returned.get("expand")  # a graph that runs in the node's place (the executor's expansion)
        returned = returned.get("result", ())
    if returned is None:
        returned = ()
    if not isinstance(returned, (tuple, list)):
        raise LegacyNodeError(name, f"returned {type(returned).__name__}; expected a tuple or "
                                    f"{{'ui': ..., 'result': ...}}")
    if returned and len(returned) < len(outputs):  # as ComfyUI: the missing outputs are None
        returned = (*returned, *[None] * (len(outputs) - len(returned)))
    values = tuple(value if expand is not None and _is_link(value)  # a link into the expansion stays one
                   else _from_comfy_output(name, output, value, boundary) for output, value in zip(outputs, returned))
    return Result(values=values, ui=ui, expand=expand)


def _is_link(value: Any) -> bool:
    """ComfyUI's link test (an expansion's outputs are links into it)."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool))


def _from_comfy_output(name: str, output: Output, value: Any, boundary: Boundary = PLAIN) -> Any:
    if output.type not in ("LATENT", "CONDITIONING"):
        if boundary is PLAIN or value is None:
            return value
        try:
            if output.is_list and isinstance(value, list):
                return [boundary.from_comfy(output.type, item) for item in value]
            return boundary.from_comfy(output.type, value)
        except (TypeError, ValueError) as error:
            raise LegacyNodeError(name, f"output {output.name or output.type}: {error}") from error
    convert = from_comfy_latent if output.type == "LATENT" else from_comfy_conditioning
    try:
        if output.is_list:
            return [convert(item) for item in value]
        return convert(value)
    except (TypeError, ValueError, KeyError) as error:
        raise LegacyNodeError(name, f"output {output.name or output.type}: {error}") from error


def _fingerprint(name: str, cls: type, hidden: Mapping[str, str], input_is_list: bool, boundary: Boundary = PLAIN
                 ) -> Callable[[RunContext, dict[str, Any]], Hashable] | None:
    is_changed = getattr(cls, "IS_CHANGED", None)
    not_idempotent = bool(getattr(cls, "NOT_IDEMPOTENT", False))
    if not callable(is_changed) and not not_idempotent:
        return None

    def fingerprint(ctx: RunContext, literals: dict[str, Any]) -> Hashable:
        parts: list[Hashable] = []
        if callable(is_changed):
            arguments = {key: to_comfy_value(value) for key, value in literals.items()}
            _fill_hidden(arguments, hidden, ctx)
            if input_is_list:
                arguments = {key: [value] for key, value in arguments.items()}
            with boundary.running(ctx):
                changed = _await(is_changed(**_accepted(is_changed, arguments)))
            if isinstance(changed, float) and math.isnan(changed):
                return changed  # ComfyUI's "always changed": the executor re-runs the node every time
            parts.append(_hashable(changed))
        if not_idempotent:
            parts.append(("node", getattr(ctx, "node_id", None)))  # identical nodes of one prompt stay distinct
        return tuple(parts)

    return fingerprint


def _hashable(value: Any) -> Hashable:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _check_lazy(name: str, cls: type, declared: Sequence[Input], hidden: Mapping[str, str],
                boundary: Boundary = PLAIN) -> Callable[[RunContext, dict[str, Any]], Sequence[str]]:
    lazy_names = [i.name for i in declared if i.lazy]

    def check_lazy(ctx: RunContext, available: dict[str, Any]) -> Sequence[str]:
        convert = _converter(boundary)
        arguments = {key: convert(value) for key, value in available.items()}
        for lazy in lazy_names:
            arguments.setdefault(lazy, None)  # ComfyUI passes None for lazy inputs not evaluated yet
        _fill_hidden(arguments, hidden, ctx)
        with boundary.running(ctx):
            needed = _await(_instantiate(name, cls).check_lazy_status(**arguments))
        if needed is None:
            return []
        return [needed] if isinstance(needed, str) else [str(n) for n in needed]

    return check_lazy


def _validate(name: str, cls: type) -> Callable[[dict[str, Any]], str | None]:
    method = cls.VALIDATE_INPUTS

    def validate(literals: dict[str, Any]) -> str | None:
        arguments = dict(literals)
        if "input_types" in inspect.signature(method).parameters:
            arguments.setdefault("input_types", {})  # {linked input: its type}, from the validator
        verdict = _await(method(**_accepted(method, arguments)))
        return None if verdict is True else str(verdict)

    return validate


def _validate_contract(cls: type) -> dict[str, Any]:
    """What VALIDATE_INPUTS takes over from the built-in checks (NodeSpec.validate_takes...), from its signature."""
    method = getattr(cls, "VALIDATE_INPUTS", None)
    if not callable(method):
        return {}
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return {}
    return {"validate_takes": frozenset(parameters),
            "validate_takes_all": any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()),
            "validate_types": "input_types" in parameters}


def _accepted(function: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Only the arguments a function names (all of them if it takes **kwargs), as ComfyUI filters them."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return arguments
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return arguments
    return {key: value for key, value in arguments.items() if key in parameters}


# ---- value conversion at the boundary ---------------------------------------------------------------------------
def to_comfy_value(value: Any) -> Any:
    """Our Latent / Conditioning (or lists of them) in ComfyUI's shapes; other values unchanged."""
    if isinstance(value, Latent):
        return to_comfy_latent(value)
    if isinstance(value, Conditioning):
        return to_comfy_conditioning(value)
    if isinstance(value, list) and any(isinstance(v, (Latent, Conditioning)) for v in value):
        return [to_comfy_value(v) for v in value]
    return value


def to_comfy_latent(latent: Latent) -> dict[str, Any]:
    """Latent -> {"samples", "noise_mask"?, "batch_index"?} (a fresh dict: the node may modify it freely)."""
    out: dict[str, Any] = {"samples": latent.samples}
    if latent.noise_mask is not None:
        out["noise_mask"] = latent.noise_mask
    if latent.batch_index is not None:
        out["batch_index"] = list(latent.batch_index)
    return out


def from_comfy_latent(value: Any) -> Latent:
    if isinstance(value, Latent):
        return value
    if not isinstance(value, Mapping) or not isinstance(value.get("samples"), torch.Tensor):
        raise TypeError(f"expected a LATENT dict with a 'samples' tensor, got {type(value).__name__}")
    batch_index = value.get("batch_index")
    return Latent(samples=value["samples"], noise_mask=value.get("noise_mask"),
                  batch_index=tuple(int(i) for i in batch_index) if batch_index is not None else None)


def to_comfy_conditioning(conditioning: Conditioning) -> list[list[Any]]:
    """Conditioning -> [[cross_attn, {"pooled_output": ..., "area": ..., ...}], ...] with ComfyUI's key names."""
    return [[entry.cross_attn, _cond_options(entry)] for entry in conditioning.entries]


def _cond_options(entry: CondEntry) -> dict[str, Any]:
    options: dict[str, Any] = dict(entry.extra)
    options["pooled_output"] = entry.pooled
    if entry.area is not None:
        box = (entry.area.height, entry.area.width, entry.area.y, entry.area.x)
        options["area"] = ("percentage", *box) if entry.area.unit == "percent" else box
    if entry.strength != 1.0 or entry.area is not None:
        options["strength"] = entry.strength
    if entry.mask is not None:
        options["mask"] = entry.mask
        options["mask_strength"] = entry.mask_strength
    if entry.area is not None or entry.mask is not None or entry.set_area_to_bounds:
        options["set_area_to_bounds"] = entry.set_area_to_bounds
    if entry.start_percent != 0.0 or entry.end_percent != 1.0:
        options["start_percent"] = entry.start_percent
        options["end_percent"] = entry.end_percent
    return options


def from_comfy_conditioning(value: Any) -> Conditioning:
    if isinstance(value, Conditioning):
        return value
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"expected a CONDITIONING list of [tensor, dict] pairs, got {type(value).__name__}")
    entries = []
    for index, pair in enumerate(value):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], torch.Tensor)
                and isinstance(pair[1], Mapping)):
            raise TypeError(f"conditioning entry {index} is not a [tensor, dict] pair")
        tensor, options = pair
        entries.append(CondEntry(
            cross_attn=tensor,
            pooled=options.get("pooled_output"),
            area=_area(options.get("area")),
            strength=float(options.get("strength", 1.0)),
            mask=options.get("mask"),
            mask_strength=float(options.get("mask_strength", 1.0)),
            set_area_to_bounds=bool(options.get("set_area_to_bounds", False)),
            start_percent=float(options.get("start_percent", 0.0)),
            end_percent=float(options.get("end_percent", 1.0)),
            extra={k: v for k, v in options.items() if k not in _COND_KEYS},
        ))
    return Conditioning(tuple(entries))


def _area(value: Any) -> Area | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 5 and value[0] == "percentage":
        return Area(*value[1:], unit="percent")
    if isinstance(value, (list, tuple)) and len(value) == 4:
        return Area(*value, unit="latent")
    raise ValueError(f"conditioning area {value!r} is neither (h, w, y, x) nor ('percentage', h, w, y, x)")


__all__ = ["COMFY_HIDDEN_KINDS", "Boundary", "LegacyCombo", "LegacyNodeError", "adapt_legacy_node",
           "from_comfy_conditioning", "from_comfy_latent", "to_comfy_conditioning", "to_comfy_latent", "to_comfy_value"]
