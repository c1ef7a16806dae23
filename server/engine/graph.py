"""Parse and validate an API prompt against a node registry, giving an immutable `Graph` or a `PromptError`.

An API prompt is `{node_id: {"class_type": str, "inputs": {name: literal | [source_id, slot]}, "_meta": {...}}}`.
A link is a list of length 2 holding a str node id and an int slot; a literal list must be wrapped as
`{"__value__": [...]}`. Errors use ComfyUI's exact shapes (`POST /prompt` answers 400 with `PromptError.payload`).

Our contract, stricter than ComfyUI's: ANY error rejects the whole prompt; outputs are never silently dropped.
Only the nodes the outputs need are validated (as ComfyUI: a broken node that feeds nothing being run does not block
the others; `partial_execution_targets` picks which outputs run). Everything is iterative: a 10,000-deep chain
validates in milliseconds.

This module imports neither torch nor the node implementations; it sees node types only through the registry's
`NodeSpec`s and their input declarations.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from nodes.inputs import InputError
from nodes.registry import NodeSpec, Registry

MAX_CYCLE_LISTED = 1000  # cycle_nodes listed in one dependency_cycle error


class Link(NamedTuple):
    """A linked input: output `slot` of node `source`."""

    source: str
    slot: int


class GraphNode(NamedTuple):
    """One validated node (a named tuple: immutable and cheap to build for graphs of thousands of nodes).

    literals   declared inputs given as values, cast to their declared types (Input.coerce)
    links      declared inputs fed by another node's output
    signature  digest of everything static about the node's cache key (type, literals, link slots, and its id
               when it reads UNIQUE_ID); the executor adds fingerprints and the ancestors' keys
    """

    id: str
    class_type: str
    spec: NodeSpec
    literals: Mapping[str, Any]
    links: Mapping[str, Link]
    title: str | None
    signature: bytes


@dataclass(frozen=True, eq=False)
class Graph:
    """A validated prompt: the nodes the outputs need, the outputs to execute, and a topological order of those
    nodes (every node after the nodes it links to), computed once. `prompt` is the prompt as submitted (the graph
    never mutates it; nodes receive it as the PROMPT hidden input)."""

    nodes: Mapping[str, GraphNode]
    outputs: tuple[str, ...]
    order: tuple[str, ...]
    prompt: Mapping[str, Any]

    def __len__(self) -> int:
        return len(self.nodes)


class PromptError(Exception):
    """A rejected prompt, in ComfyUI's shape: `error` {type, message, details, extra_info} and `node_errors`
    {node_id: {errors: [...], dependent_outputs: [...], class_type}}."""

    def __init__(self, error: Mapping[str, Any], node_errors: Mapping[str, Any] | None = None):
        super().__init__(f"{error['message']}: {error['details']}" if error.get("details") else error["message"])
        self.error = dict(error)
        self.node_errors = dict(node_errors or {})

    @property
    def type(self) -> str:
        return self.error["type"]

    @property
    def payload(self) -> dict[str, Any]:
        """The body of the 400 answer to `POST /prompt`."""
        return {"error": self.error, "node_errors": self.node_errors}


def is_link(value: Any) -> bool:
    """ComfyUI's link test: a list of length 2 with a str node id and a numeric slot."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool))


def validate_prompt(prompt: Any, registry: Registry, *,
                    partial_execution_targets: Sequence[str] | None = None) -> Graph:
    """Validate an API prompt; return its Graph or raise PromptError.

    partial_execution_targets  run only these node ids (and what they need) instead of every output node
    """
    validator, outputs = _prepare(prompt, registry, partial_execution_targets)
    return validator.run(outputs)


def check_prompt(prompt: Any, registry: Registry, *,
                 partial_execution_targets: Sequence[str] | None = None) -> tuple[str, ...]:
    """Validate an API prompt as validate_prompt does, without building its Graph: the outputs to execute, or
    PromptError. For POST /prompt, which only queues: the worker validates again and builds the graph when the
    prompt runs (files may have changed by then), so the cache signatures are not computed twice."""
    validator, outputs = _prepare(prompt, registry, partial_execution_targets)
    validator.check(outputs)
    return tuple(outputs)


def validate_expansion(expansion: Any, registry: Registry, outer: Mapping[str, GraphNode]
                       ) -> tuple[dict[str, GraphNode], tuple[str, ...]]:
    """Validate the nodes a node added while it ran (ComfyUI's graph expansion): `expansion` is a prompt whose links
    may also name nodes of the running graph (`outer`). Returns the new GraphNodes and their topological order, or
    raises PromptError.

    As ComfyUI treats these ephemeral nodes: an input fed by a link may instead be given any value (a tensor, a
    list...), which reaches the node as it is, and VALIDATE_INPUTS is not called; declared widget values are cast
    and checked as in a prompt."""
    if not isinstance(expansion, Mapping):
        raise PromptError(_top("invalid_prompt", "Invalid graph expansion",
                               f"a node's 'expand' must be an object of nodes by id, got {type(expansion).__name__}"))
    specs = _check_nodes(expansion, registry)
    validator = _Validator(expansion, specs, registry, outer=outer)
    order = validator.check(list(expansion))
    return {node_id: validator._node(node_id) for node_id in order}, tuple(order)


def _prepare(prompt: Any, registry: Registry,
             partial_execution_targets: Sequence[str] | None) -> tuple[_Validator, list[str]]:
    if prompt is None:
        raise PromptError(_top("no_prompt", "No prompt provided", "The request has no 'prompt'"))
    if not isinstance(prompt, Mapping):
        raise PromptError(_top("invalid_prompt", "Invalid prompt",
                               f"the prompt must be an object of nodes by id, got {type(prompt).__name__}"))
    specs = _check_nodes(prompt, registry)
    outputs = _outputs(prompt, specs, partial_execution_targets)
    return _Validator(prompt, specs, registry), outputs


# ---- structure and node types -----------------------------------------------------------------------------------
def _check_nodes(prompt: Mapping[Any, Any], registry: Registry) -> dict[str, NodeSpec]:
    specs: dict[str, NodeSpec] = {}
    for node_id, node in prompt.items():
        if not isinstance(node_id, str):
            raise PromptError(_top("invalid_prompt", "Invalid prompt",
                                   f"node ids must be strings, got {node_id!r} ({type(node_id).__name__})"))
        if not isinstance(node, dict) and not isinstance(node, Mapping):
            raise PromptError(_top("invalid_prompt", "Invalid prompt",
                                   f"node '{node_id}' must be an object with class_type and inputs, "
                                   f"got {type(node).__name__}", {"node_id": node_id}))
        class_type = node.get("class_type")
        if class_type is None:
            raise PromptError(_top("missing_node_type",
                                   "Cannot execute because a node is missing the class_type property.",
                                   f"Node ID '#{node_id}'",
                                   {"node_id": node_id, "class_type": None, "node_title": _title(node)}))
        spec = registry.get(class_type) if isinstance(class_type, str) else None
        if spec is None:
            raise PromptError(_top("missing_node_type", f"Cannot execute because node {class_type} does not exist.",
                                   f"Node ID '#{node_id}'",
                                   {"node_id": node_id, "class_type": class_type, "node_title": _title(node)}))
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict) and not isinstance(inputs, Mapping):
            raise PromptError(_top("invalid_prompt", "Invalid prompt",
                                   f"the inputs of node '{node_id}' ({class_type}) must be an object, "
                                   f"got {type(inputs).__name__}", {"node_id": node_id}))
        specs[node_id] = spec
    return specs


def _outputs(prompt: Mapping[str, Any], specs: Mapping[str, NodeSpec], targets: Sequence[str] | None) -> list[str]:
    if targets is not None:
        if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence) or \
                not all(isinstance(t, str) for t in targets):
            raise PromptError(_top("invalid_prompt", "Invalid prompt",
                                   "partial_execution_targets must be a list of node ids"))
        missing = [t for t in targets if t not in prompt]
        if missing:
            raise PromptError(_top("invalid_prompt", "Invalid prompt",
                                   f"partial_execution_targets names nodes not in the prompt: {missing[:10]}"))
        outputs = list(dict.fromkeys(targets))
    else:
        outputs = [node_id for node_id, spec in specs.items() if spec.output_node]
    if not outputs:
        raise PromptError(_top("prompt_no_outputs", "Prompt has no outputs",
                               "no node of the prompt is an output node (SaveImage, PreviewImage...)"))
    return outputs


# ---- inputs, links and order ------------------------------------------------------------------------------------
class _Validator:
    def __init__(self, prompt: Mapping[str, Any], specs: Mapping[str, NodeSpec], registry: Registry, *,
                 outer: Mapping[str, GraphNode] | None = None):
        self.prompt = prompt
        self.specs = specs
        self.registry = registry
        self.outer = outer  # an expansion's: the running graph's nodes, which its links may name
        self.errors: dict[str, list[dict[str, Any]]] = {}
        self.checked: dict[str, tuple[dict[str, Any], dict[str, Link]]] = {}
        self._choices: dict[int, Any] = {}

    def check(self, outputs: list[str]) -> list[str]:
        """Validate every node the outputs need; their topological order, or PromptError."""
        order = self._order(outputs)
        if self.errors:
            raise self._failure(outputs)
        return order

    def run(self, outputs: list[str]) -> Graph:
        order = self.check(outputs)
        nodes = {node_id: self._node(node_id) for node_id in order}
        return Graph(nodes=MappingProxyType(nodes), outputs=tuple(outputs), order=tuple(order), prompt=self.prompt)

    def _order(self, outputs: list[str]) -> list[str]:
        """Post-order DFS from the outputs (iterative): validates each reached node once, finds cycles."""
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        path_index: dict[str, int] = {}
        order: list[str] = []
        for output in outputs:
            if output in state:
                continue
            state[output] = 1
            stack = [(output, iter(self._check(output).items()))]
            path_index[output] = 0
            while stack:
                node_id, pending = stack[-1]
                for name, link in pending:
                    if link.source not in self.prompt:  # a node of the running graph (expansions): done
                        continue
                    seen = state.get(link.source)
                    if seen is None:
                        state[link.source] = 1
                        path_index[link.source] = len(stack)
                        stack.append((link.source, iter(self._check(link.source).items())))
                        break
                    if seen == 1:
                        self._cycle(node_id, name, [n for n, _ in stack[path_index[link.source]:]])
                else:
                    state[node_id] = 2
                    del path_index[node_id]
                    order.append(node_id)
                    stack.pop()
        return order

    def _check(self, node_id: str) -> dict[str, Link]:
        """Validate one node's inputs; returns its valid links (the edges to follow)."""
        spec = self.specs[node_id]
        given = self.prompt[node_id].get("inputs") or {}
        literals: dict[str, Any] = {}
        links: dict[str, Link] = {}
        errors: list[dict[str, Any]] = []
        received: dict[str, str] = {}  # linked input -> the type it receives (VALIDATE_INPUTS' input_types)
        for declared in spec.inputs:
            name = declared.name
            if name not in given:
                if not declared.optional:
                    errors.append(_input_error("required_input_missing", "Required input is missing", name,
                                               name=name))
                continue
            value = given[name]
            if self.outer is not None and not declared.is_widget and not is_link(value):
                literals[name] = value  # an expansion hands a value straight to a linked input
                continue
            if isinstance(value, list):
                link = self._link(node_id, declared, value, errors, received)
                if link is not None:
                    links[name] = link
                continue
            if type(value) is dict and "__value__" in value:
                value = value["__value__"]
            try:
                literals[name] = declared.coerce(value, self._choices_of(declared))
            except InputError as err:
                if err.kind in _RANGE_KINDS and spec.validate is not None and \
                        (spec.validate_takes_all or name in spec.validate_takes):
                    literals[name] = _cast(declared, value)  # VALIDATE_INPUTS judges this one (ComfyUI)
                    continue
                config = err.extra.get("input_config", _NOT_SET)
                errors.append(_input_error(err.kind, err.message, err.details, name=name, value=value,
                                           config=self._config(declared) if config is _NOT_SET else config))
            except Exception as err:  # a faulty declaration must not take the server down
                errors.append(_input_error("exception_during_inner_validation", "Exception when validating inner node",
                                           f"{name}: {type(err).__name__}: {err}", name=name, value=value))
        if spec.validate is not None and not errors and self.outer is None:
            arguments = {**literals, **{name: None for name in links}}
            if spec.validate_types:
                arguments["input_types"] = received
            try:
                verdict = spec.validate(arguments)
            except Exception as err:
                errors.append(_input_error("exception_during_validation", "Exception when validating node",
                                           f"{type(err).__name__}: {err}"))
            else:
                if verdict is not None and verdict is not True:
                    errors.append(_input_error("custom_validation_failed", "Custom validation failed for node",
                                               str(verdict)))
        if errors:
            self.errors.setdefault(node_id, []).extend(errors)
        self.checked[node_id] = (literals, links)
        return links

    def _link(self, node_id: str, declared: Any, value: list[Any], errors: list[dict[str, Any]],
              received_types: dict[str, str] | None = None) -> Link | None:
        name = declared.name
        if not is_link(value):
            errors.append(_input_error("bad_linked_input", "Bad linked input, must be a length-2 list of [string, int]",
                                       f"{name}: {_show(value)} is neither a link [node_id, slot] nor a value "
                                       f"(wrap literal lists as {{\"__value__\": [...]}})",
                                       name=name, value=value, config=self._config(declared)))
            return None
        source, slot = value
        if source in self.prompt:
            source_spec = self.specs[source]
        elif self.outer is not None and source in self.outer:
            source_spec = self.outer[source].spec
        else:
            errors.append(_input_error("bad_linked_input", "Bad linked input",
                                       f"{name}: links to node '{source}', which is not in the prompt",
                                       name=name, value=value, config=self._config(declared)))
            return None
        if not _whole(slot) or not 0 <= slot < len(source_spec.outputs):
            count = len(source_spec.outputs)
            errors.append(_input_error("bad_linked_input", "Bad linked input",
                                       f"{name}: node '{source}' ({source_spec.name}) has no output slot {slot}; "
                                       f"it has {count} output{'s' if count != 1 else ''}",
                                       name=name, value=value, config=self._config(declared)))
            return None
        slot = int(slot)
        received = source_spec.outputs[slot].type
        if received_types is not None:
            received_types[name] = received
        if not declared.accepts_type(received) and not self.specs[node_id].validate_types:
            error = _input_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                 f"{name}, received_type({received}) mismatch input_type({declared.type_name})",
                                 name=name, config=self._config(declared))
            error["extra_info"].pop("received_value", None)
            error["extra_info"].update(received_type=received, linked_node=value)
            errors.append(error)
            return None
        return Link(source, slot)

    def _cycle(self, node_id: str, name: str, cycle: list[str]) -> None:
        listed = cycle[:MAX_CYCLE_LISTED]
        shown = " -> ".join(listed[:8]) + (" -> ..." if len(listed) > 8 else "")
        error = _input_error("dependency_cycle", "Dependency cycle detected",
                             f"{name}: node '{node_id}' depends on itself through {shown} -> {cycle[0]}", name=name)
        error["extra_info"].update(node_id=node_id, cycle_nodes=listed)
        self.errors.setdefault(node_id, []).append(error)

    def _node(self, node_id: str) -> GraphNode:
        spec = self.specs[node_id]
        literals, links = self.checked[node_id]
        # repr of str/int/float/bool literals is exact and unambiguous (floats round-trip, True != 1); the dicts
        # are filled in the spec's input order, so their order is the same on every run
        values = tuple(literals.items()) if self.outer is None else tuple(_static(item) for item in literals.items())
        static: tuple[Any, ...] = (spec.python_module, spec.name, values,
                                   tuple((name, link.slot) for name, link in links.items()))
        if "UNIQUE_ID" in spec.hidden.values():
            static += (node_id,)  # its output depends on its id (ComfyUI adds the id for UNIQUE_ID too)
        return GraphNode(node_id, spec.name, spec, MappingProxyType(literals), MappingProxyType(links),
                         _title(self.prompt[node_id]), hashlib.blake2b(repr(static).encode(), digest_size=16).digest())

    def _choices_of(self, declared: Any) -> Any:
        if getattr(declared, "source", None) is None:
            return None
        key = id(declared)
        if key not in self._choices:  # once per declaration per prompt: file listings are not free
            self._choices[key] = self.registry.choices(declared)
        return self._choices[key]

    def _config(self, declared: Any) -> Any:
        try:
            return declared.schema(self._choices_of(declared))
        except Exception:
            return None

    def _failure(self, outputs: list[str]) -> PromptError:
        dependents = self._dependent_outputs(outputs)
        node_errors = {node_id: {"errors": errors, "dependent_outputs": dependents.get(node_id, []),
                                 "class_type": self.specs[node_id].name}
                       for node_id, errors in self.errors.items()}
        lines = [f"{e['message']}: {e['details']}" for errors in self.errors.values() for e in errors]
        details = "\n".join(lines[:50]) + (f"\n... and {len(lines) - 50} more" if len(lines) > 50 else "")
        return PromptError(_top("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
                           node_errors)

    def _dependent_outputs(self, outputs: list[str]) -> dict[str, list[str]]:
        """For each node with errors, the outputs that need it (one iterative walk per output)."""
        found: dict[str, list[str]] = {}
        for output in outputs:
            seen = {output}
            stack = [output]
            while stack:
                node_id = stack.pop()
                if node_id in self.errors:
                    found.setdefault(node_id, []).append(output)
                for link in self.checked.get(node_id, ({}, {}))[1].values():
                    if link.source not in seen:
                        seen.add(link.source)
                        stack.append(link.source)
        return found


# ---- error shapes -----------------------------------------------------------------------------------------------
_NOT_SET = object()


def _top(kind: str, message: str, details: str, extra_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": dict(extra_info or {})}


def _input_error(kind: str, message: str, details: str, *, name: str | None = None, value: Any = _NOT_SET,
                 config: Any = None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if name is not None:
        extra["input_name"] = name
        extra["input_config"] = config
        if value is not _NOT_SET:
            # NaN/inf are not JSON: echo them as text so the 400 body stays parseable by browsers
            extra["received_value"] = repr(value) if isinstance(value, float) and not math.isfinite(value) else value
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _title(node: Mapping[str, Any]) -> str | None:
    meta = node.get("_meta")
    if meta is None:
        return None
    title = meta.get("title") if isinstance(meta, Mapping) else None
    return title if isinstance(title, str) else None


_RANGE_KINDS = ("value_smaller_than_min", "value_bigger_than_max", "value_not_in_list")


def _cast(declared: Any, value: Any) -> Any:
    """A literal cast to its declared type without the range and list checks (ComfyUI's casts: int(), float(),
    str(), bool()); combo values stay as given."""
    cast = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(declared.type_name)
    return cast(value) if cast is not None else value


def _static(item: tuple[str, Any]) -> tuple[str, Any]:
    """A literal as it enters the signature: values a prompt can hold as they are; an object an expansion handed to
    a linked input by identity (the executor never caches such a node: ComfyUI's unhashable inputs)."""
    name, value = item
    if value is None or isinstance(value, (str, int, float, bool)):
        return item
    return name, ("object", type(value).__qualname__, id(value))


def _whole(number: int | float) -> bool:
    return isinstance(number, int) or number.is_integer()


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
