"""ComfyUI V3 nodes (comfy_api.latest io.ComfyNode classes) as Chisel NodeSpecs, and a pack's ComfyExtension.

A V3 class is described by its Schema; ComfyUI serves it in /object_info through the same V1 description a legacy
class has (INPUT_TYPES, RETURN_TYPES, ...), with the V3 extras (combos as ["COMBO", {"options": ...}], a null
display_name when none is declared, output_tooltips with nulls, output_matchtypes, deprecated / experimental /
api_node). So the adapter hands nodes/legacy.py a V1 class made from the schema (validation, LATENT / CONDITIONING
and the pack boundary come from there) whose calls go to the V3 classmethods:

    execute(**inputs)              on a copy of the class carrying the call's hidden values (cls.hidden.unique_id...)
    fingerprint_inputs(**inputs)   as IS_CHANGED, when the class defines it
    validate_inputs(**inputs)      as VALIDATE_INPUTS (with its own signature: `input_types` is passed if named)
    check_lazy_status(**inputs)    when the class defines it

`execute` may be `async def`. Its io.NodeOutput gives the values, the ui (a comfy_api ui object or a dict) and an
expansion graph (Schema(enable_expand=True)), which the executor runs in the node's place.

The V3 input kinds beyond plain sockets and widgets, as ComfyUI handles them:
    MatchType     a socket taking any of the template's allowed types (nodes.special_inputs.MatchType); a
                  MatchType output is served with its template id in output_matchtypes
    MultiType     a socket of several types ("IMAGE,MASK"), with the widget of the input it wraps, if any
    Autogrow      slots sent as "<id>.<slot>" keys (prefix0, prefix1... or the template's names); execute gets
                  <id>={slot: value} for the slots given
    DynamicCombo  a combo whose chosen option reveals its inputs, sent as "<id>.<name>" keys; execute gets
                  <id>={"<id>": chosen key, name: value (None when not given)...} for the chosen option's inputs
The dynamic ones are declared flat, one input per prompt key (as Chisel's own ResizeImageMaskNode), all optional
but the combo itself; validation requires the chosen option's required inputs and checks each against the chosen
option's own declaration. /object_info serves ComfyUI's compact entry (the schema's V1 description).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from comfy_compat.surface.comfy_api.latest._io import (
    Autogrow,
    ComfyNode,
    DynamicCombo,
    DynamicInput,
    Hidden,
    Input,
    MatchType,
    MultiType,
    NodeOutput,
    Schema,
    WidgetInput,
    _UIOutput,
    first_real_override,
    normalize_output,
)
from nodes import inputs as declarations
from nodes.legacy import PLAIN, Boundary, LegacyNodeError, _accepted, _await, _declaration, adapt_legacy_node
from nodes.registry import NodeSpec
from nodes.special_inputs import MatchType as MatchTypeLink


def is_v3_node(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, ComfyNode)


def v3_spec(cls: type[ComfyNode], *, python_module: str = "custom_nodes",
            boundary: Boundary = PLAIN) -> NodeSpec:
    """The NodeSpec of a V3 node class. Raises LegacyNodeError (naming the class) when its schema is unusable."""
    try:
        schema = cls.GET_SCHEMA()
    except Exception as error:  # a pack's own code
        raise LegacyNodeError(getattr(cls, "__name__", repr(cls)), f"define_schema failed: "
                                                                    f"{type(error).__name__}: {error}") from error
    cls.RELATIVE_PYTHON_MODULE = python_module
    try:
        layout = _Layout(schema)
    except Exception as error:  # a dynamic input declared in a way that cannot be laid out
        raise LegacyNodeError(schema.node_id, f"inputs: {type(error).__name__}: {error}") from error
    spec = adapt_legacy_node(schema.node_id, _v1_class(cls, schema, layout), display_name=schema.display_name,
                             python_module=python_module, boundary=boundary)
    outputs = schema.outputs or []
    changes: dict[str, Any] = dict(
        v3_schema=True, display_name_declared=schema.display_name is not None,
        output_tooltips=tuple(o.tooltip or None for o in outputs), deprecated=schema.is_deprecated,
        experimental=schema.is_experimental, search_aliases=tuple(str(a) for a in schema.search_aliases or ()))
    if layout.special:
        changes.update(inputs=tuple(layout.declaration(d) for d in spec.inputs),
                       raw_input_types=lambda: cls.INPUT_TYPES())  # ComfyUI's compact entry
    if layout.combos or (layout.special and spec.validate is not None):  # validate_inputs sees nested values
        changes["validate"] = layout.validator(schema.node_id, cls, spec)
    if any(isinstance(o, MatchType.Output) for o in outputs):
        spec = V3NodeSpec(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(NodeSpec) if f.init},
                          output_matchtypes=tuple(o.template.template_id if isinstance(o, MatchType.Output) else None
                                                  for o in outputs))
    return dataclasses.replace(spec, **changes)


@dataclasses.dataclass(frozen=True)
class V3NodeSpec(NodeSpec):
    """A V3 node with MatchType outputs: /object_info names their templates in output_matchtypes."""

    output_matchtypes: tuple[str | None, ...] | None = None

    def info(self, choices: Callable[[Any], Any]) -> dict[str, Any]:
        info = super().info(choices)
        info["output_matchtypes"] = list(self.output_matchtypes) if self.output_matchtypes else None
        return info


def extension_nodes(entrypoint: Callable[[], Any]) -> list[type[ComfyNode]]:
    """Run a pack's `comfy_entrypoint()` (and its extension's on_load and get_node_list) to completion."""

    async def load() -> list[type[ComfyNode]]:
        extension = entrypoint()
        if inspect.isawaitable(extension):
            extension = await extension
        on_load = getattr(extension, "on_load", None)
        if on_load is not None:
            loaded = on_load()
            if inspect.isawaitable(loaded):
                await loaded
        node_list = extension.get_node_list()
        if inspect.isawaitable(node_list):
            node_list = await node_list
        return list(node_list or ())

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(load())
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # called from a running loop (tests)
        return pool.submit(asyncio.run, load()).result()


def extension_specs(nodes: Iterable[Any], *, python_module: str, boundary: Boundary = PLAIN
                    ) -> tuple[list[NodeSpec], dict[str, str]]:
    """The specs of an extension's node classes, and {name: why} for those that could not be adapted."""
    specs: list[NodeSpec] = []
    skipped: dict[str, str] = {}
    for cls in nodes:
        if not is_v3_node(cls):
            skipped[repr(cls)] = "listed by get_node_list but not an io.ComfyNode subclass"
            continue
        try:
            specs.append(v3_spec(cls, python_module=python_module, boundary=boundary))
        except LegacyNodeError as error:
            skipped[error.node] = error.reason
    return specs, skipped


# ---- the dynamic inputs, flat -------------------------------------------------------------------------------------
_DEFERRED = "COMFY_V3_DEFERRED"  # a combo option input declared differently by two options: checked per option


class _AnyValue(declarations.Input):
    """A value or link checked later, against the chosen option's own declaration."""

    is_widget = True

    def coerce(self, value: Any, choices: Any = None) -> Any:
        return value

    def accepts_type(self, output_type: str) -> bool:
        return True


def _entry(declared: Input) -> tuple[Any, dict[str, Any]]:
    options = declared.as_dict()
    options.pop("optional", None)
    return declared.get_io_type(), options


class _Layout:
    """A schema's inputs as prompts send them: the flat V1 description (one entry per key), what the adapted
    declarations need changed, and how the flat values nest into execute's arguments."""

    def __init__(self, schema: Schema):
        self.flat: dict[str, dict[str, Any]] = {"required": {}}
        self.matchtypes: dict[str, MatchType.Template] = {}
        self.multitypes: dict[str, str] = {}
        self.deferred: set[str] = set()
        # (combo key, {option key: [(flat key, entry, required)]})
        self.combos: list[tuple[str, dict[str, list[tuple[str, Any, bool]]]]] = []
        self.special = False
        self.plan = self._lay(schema.inputs or (), "", top=True)
        self.dynamic_keys = {key for section in self.flat.values() for key in section if "." in key}
        for hidden in schema.hidden or ():
            self.flat.setdefault("hidden", {})[hidden.name] = (hidden.value,)

    def _put(self, key: str, entry: Any, optional: bool) -> None:
        self.flat.setdefault("optional" if optional else "required", {})[key] = entry

    def _plain(self, declared: Input, key: str, optional: bool) -> None:
        kind, options = _entry(declared)
        if isinstance(declared, MatchType.Input):
            self.matchtypes[key] = declared.template
            self.special = True
        elif isinstance(declared, MultiType.Input):
            self.multitypes[key] = kind
            self.special = True
            override = declared.input_override
            if isinstance(override, WidgetInput):  # a widget of the wrapped input's kind
                kind = override.get_io_type()
        self._put(key, (kind, options), optional)

    def _lay(self, inputs: Any, prefix: str, *, top: bool) -> list[tuple[Any, ...]]:
        plan: list[tuple[Any, ...]] = []
        for declared in inputs:
            key = prefix + declared.id
            optional = bool(declared.optional) or not top
            if isinstance(declared, Autogrow.Input):
                self.special = True
                template = declared.template
                slots = []
                for name, slot in template.cached_inputs.items():
                    self._plain(slot, f"{key}.{name}", True)  # ComfyUI requires only the slots given
                    slots.append((name, f"{key}.{name}"))
                plan.append(("autogrow", declared.id, slots))
            elif isinstance(declared, DynamicCombo.Input):
                self.special = True
                self._put(key, ("COMBO", {**declared.as_dict(), "options": [o.key for o in declared.options]}),
                          optional)
                self.flat.get("optional" if optional else "required", {})[key][1].pop("optional", None)
                options: dict[str, list[tuple[str, Any, bool]]] = {}
                subplans: dict[str, list[tuple[Any, ...]]] = {}
                seen: dict[str, Any] = {}
                for option in declared.options:
                    subplans[option.key] = self._lay(option.inputs, key + ".", top=False)
                    listed = options.setdefault(option.key, [])
                    for sub in option.inputs:
                        sub_key = f"{key}.{sub.id}"
                        entry = None if isinstance(sub, DynamicInput) else _entry(sub)
                        listed.append((sub_key, entry, not sub.optional))
                        if entry is not None:
                            if sub_key in seen and seen[sub_key] != entry:
                                self.deferred.add(sub_key)
                            seen.setdefault(sub_key, entry)
                for sub_key in self.deferred & set(seen):
                    self._put(sub_key, (_DEFERRED, {}), True)
                self.combos.append((key, options))
                plan.append(("combo", declared.id, key, subplans))
            elif isinstance(declared, DynamicInput):
                raise TypeError(f"{declared.id}: {type(declared).__qualname__} is not supported")
            else:
                if key not in self.deferred:
                    self._plain(declared, key, optional)
                plan.append(("plain", declared.id, key))
        return plan

    def input_types(self) -> dict[str, Any]:
        return self.flat

    # -- the adapted declarations
    def declaration(self, declared: declarations.Input) -> declarations.Input:
        name = declared.name
        common = dict(optional=declared.optional, tooltip=declared.tooltip, lazy=declared.lazy)
        if name in self.deferred:
            return _AnyValue(**common).named(name)
        if name in self.matchtypes:
            template = self.matchtypes[name]
            return MatchTypeLink(template.template_id, template.as_dict()["allowed_types"], **common).named(name)
        if name in self.multitypes and declared.is_widget:
            declared.type_name = self.multitypes[name]  # type: ignore[misc]  # links of any of the types
        return declared

    # -- execute's arguments
    def nest(self, flat: dict[str, Any]) -> dict[str, Any]:
        if not self.dynamic_keys and not any(step[0] != "plain" for step in self.plan):
            return flat
        nested = {key: value for key, value in flat.items() if key not in self.dynamic_keys}
        self._nest(self.plan, flat, nested, fill=False)
        return nested

    def _nest(self, plan: list[tuple[Any, ...]], flat: dict[str, Any], out: dict[str, Any], *, fill: bool) -> None:
        for step in plan:
            if step[0] == "plain":
                _, name, key = step
                if fill:
                    out[name] = flat.get(key)
            elif step[0] == "autogrow":
                _, name, slots = step
                out[name] = {slot: flat[key] for slot, key in slots if key in flat}
            else:
                _, name, key, subplans = step
                chosen = flat.get(key)
                value: dict[str, Any] = {name: chosen}
                if isinstance(chosen, str) and chosen in subplans:
                    self._nest(subplans[chosen], flat, value, fill=True)
                out[name] = value

    # -- validation: the chosen options' inputs, then the node's own validate_inputs
    def validator(self, node: str, cls: type[ComfyNode], spec: NodeSpec) -> Callable[[dict[str, Any]], Any]:
        own = first_real_override(cls, "validate_inputs")
        checks: dict[tuple[str, str], declarations.Input] = {}
        for combo_key, options in self.combos:
            for option_key, subs in options.items():
                for sub_key, entry, _ in subs:
                    if sub_key in self.deferred and entry is not None:
                        holder = type("Option", (), {"INPUT_TYPES": classmethod(
                            lambda _, k=sub_key, e=entry: {"optional": {k: e}})})
                        checks[(option_key, sub_key)] = _declaration(node, holder, "optional", sub_key, entry,
                                                                     optional=True)

        def validate(arguments: dict[str, Any]) -> str | None:
            problems = []
            for combo_key, options in self.combos:
                chosen = arguments.get(combo_key)
                for sub_key, _, required in options.get(chosen, ()) if isinstance(chosen, str) else ():
                    if sub_key not in arguments:
                        if required:
                            problems.append(f"{sub_key} is required by {combo_key} {chosen!r}")
                        continue
                    check = checks.get((chosen, sub_key))
                    if check is not None and arguments[sub_key] is not None:  # a link is None here
                        try:
                            check.coerce(arguments[sub_key])
                        except declarations.InputError as error:
                            problems.append(f"{error.message}: {error.details} ({combo_key} {chosen!r})")
            if problems:
                return "; ".join(problems)
            if own is None:
                return None
            method = cls.validate_inputs
            nested = self.nest(dict(arguments))
            if "input_types" in inspect.signature(method).parameters:
                nested.setdefault("input_types", {})
            verdict = _await(method(**_accepted(method, nested)))
            return None if verdict is True else str(verdict)

        return validate


# ---- the V1 class legacy.py adapts ------------------------------------------------------------------------------
def _v1_class(cls: type[ComfyNode], schema: Schema, layout: _Layout) -> type:
    hidden_names = {hidden.name: hidden for hidden in schema.hidden or ()}
    outputs = schema.outputs or []

    def split(kwargs: dict[str, Any]) -> tuple[type[ComfyNode], dict[str, Any]]:
        """The class copy carrying the call's hidden values, and the node's own inputs (dynamic ones nested)."""
        hidden = {hidden_names[name]: kwargs.pop(name) for name in list(kwargs) if name in hidden_names}
        return cls.PREPARE_CLASS_CLONE(hidden), layout.nest(kwargs)

    def result(clone: type[ComfyNode], returned: Any) -> Any:
        output = normalize_output(clone, returned)
        if output.block_execution is not None:
            raise RuntimeError(f"Execution Blocked: {output.block_execution}")
        ui = output.ui.as_dict() if isinstance(output.ui, _UIOutput) else output.ui
        return {"result": output.result or (), "ui": ui, **({"expand": output.expand} if output.expand else {})}

    namespace: dict[str, Any] = {
        "INPUT_TYPES": classmethod(lambda _: _Layout(cls.FINALIZE_SCHEMA()).input_types()),
        "RETURN_TYPES": tuple(o.io_type for o in outputs),
        "RETURN_NAMES": tuple(o.display_name or o.io_type for o in outputs),
        "OUTPUT_IS_LIST": tuple(o.is_output_list for o in outputs),
        "CATEGORY": schema.category,
        "DESCRIPTION": schema.description,
        "OUTPUT_NODE": schema.is_output_node,
        "INPUT_IS_LIST": schema.is_input_list,
        "NOT_IDEMPOTENT": schema.not_idempotent,
        "FUNCTION": "run",
        "__module__": cls.__module__,
    }
    if inspect.iscoroutinefunction(cls.execute):
        async def run(self: Any, **kwargs: Any) -> Any:
            clone, inputs = split(kwargs)
            return result(clone, await clone.execute(**inputs))
    else:
        def run(self: Any, **kwargs: Any) -> Any:
            clone, inputs = split(kwargs)
            return result(clone, clone.execute(**inputs))
    namespace["run"] = run

    if first_real_override(cls, "fingerprint_inputs") is not None:
        def is_changed(**kwargs: Any) -> Any:
            clone, inputs = split(kwargs)
            return clone.fingerprint_inputs(**inputs)
        namespace["IS_CHANGED"] = staticmethod(is_changed)

    if first_real_override(cls, "validate_inputs") is not None:
        def validate_inputs(**kwargs: Any) -> Any:
            return cls.validate_inputs(**kwargs)
        validate_inputs.__signature__ = inspect.signature(cls.validate_inputs)  # type: ignore[attr-defined]
        namespace["VALIDATE_INPUTS"] = staticmethod(validate_inputs)

    if first_real_override(cls, "check_lazy_status") is not None:
        def check_lazy_status(self: Any, **kwargs: Any) -> Any:
            clone, inputs = split(kwargs)
            return clone.check_lazy_status(**inputs)
        namespace["check_lazy_status"] = check_lazy_status

    return type(cls.__name__, (), namespace)


__all__ = ["NodeOutput", "extension_nodes", "extension_specs", "is_v3_node", "v3_spec", "Hidden"]
