"""The editor's UI workflow -> the executor's API prompt (and back), shared by the web editor and the CLI.

`convert_workflow` does on the server what ComfyUI's frontend does in `graphToPrompt`:
  - reads UI workflow version 0.4 (links as arrays) and schema version 1 (links as objects, `state`), with native
    reroutes (links keep their real ends; reroutes are only drawing points) and subgraphs (`definitions.subgraphs`,
    flattened as the frontend does, inner ids "outer:inner": server/workflow_subgraphs.py);
  - maps `widgets_values` onto the node's widget inputs (INT/FLOAT/STRING/BOOLEAN/COMBO, in declaration order,
    `forceInput` ones excepted), skipping the editor-only values stored after some widgets: control_after_generate
    after seeds ("fixed", "randomize"... or `true` in 2023 files) and the upload button after LoadImage's image;
    a `widgets_values` object or `widgets_values_named` is read by name;
  - drops muted nodes (mode 2) and passes links through bypassed ones (mode 4: the first input of the wanted type,
    same slot index first), Reroute nodes, and PrimitiveNode (its value becomes the target's literal);
  - skips Note / MarkdownNote, drops inputs whose source is gone, wraps literal lists as {"__value__": [...]};
  - knows a few popular front-end extensions' editor-only nodes (rgthree's reroute/labels/group togglers, KJNodes'
    SetNode/GetNode named links) as long as no server-side node claims their names.
Unknown node types are kept with their widget values; prompt validation then reports them (missing_node_type).
A malformed workflow raises WorkflowError, whose `to_response()` is the body of /prompt's 400 answer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Literal

from nodes.inputs import Input, types_compatible
from nodes.png_metadata import read_png_metadata
from nodes.registry import NodeSpec, Registry
from server.workflow_dynamic import has_dynamic_combo, name_values, stored_order

MODE_MUTED = 2
MODE_BYPASS = 4
VirtualRole = Literal["reroute", "primitive", "ui_only", "set", "get"]
# Editor-only node types: never sent to the server, resolved (or skipped) by the converter.
CORE_VIRTUAL_NODES: Mapping[str, VirtualRole] = {
    "Reroute": "reroute", "PrimitiveNode": "primitive", "Note": "ui_only", "MarkdownNote": "ui_only"}
# Popular front-end extensions' editor-only nodes; virtual only while no server-side node has the name.
EXTENSION_VIRTUAL_NODES: Mapping[str, VirtualRole] = {
    "Reroute (rgthree)": "reroute", "Label (rgthree)": "ui_only", "Bookmark (rgthree)": "ui_only",
    "Fast Groups Bypasser (rgthree)": "ui_only", "Fast Groups Muter (rgthree)": "ui_only",
    "Note Plus (mtb)": "ui_only",
    "SetNode": "set", "GetNode": "get",  # KJNodes: a named wireless link, GetNode reads the SetNode of its name
}
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
LEGACY_SEED_NAMES = frozenset({"seed", "noise_seed"})  # the 2023 frontend gave these a control without a flag
GROUP_NODE_PREFIXES = ("workflow>", "workflow/")  # legacy group nodes (extra.groupNodes), not expanded here
SUBGRAPH_INPUT = "-10"  # the id of a subgraph's input node in its inner links
SUBGRAPH_OUTPUT = "-20"

__all__ = ["WorkflowError", "NodeProblem", "convert_workflow", "api_to_workflow", "detect_format", "to_api_prompt",
           "prompt_from_png", "read_png_metadata"]


# ---- errors -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeProblem:
    """One thing wrong with a workflow: which node (None for the document itself), what kind, and the details."""

    node_id: str | None
    class_type: str | None
    kind: str
    details: str


class WorkflowError(ValueError):
    """A workflow that cannot be converted. `to_response()` gives /prompt's error body (node_errors per node)."""

    def __init__(self, message: str, problems: Sequence[NodeProblem] = (), *, kind: str = "invalid_workflow"):
        self.message, self.kind, self.problems = message, kind, tuple(problems)
        details = "; ".join(f"node {p.node_id}: {p.details}" if p.node_id is not None else p.details
                            for p in self.problems)
        super().__init__(f"{message}: {details}" if details else message)
        self.details = details

    def to_response(self) -> dict[str, Any]:
        node_errors: dict[str, dict[str, Any]] = {}
        for problem in self.problems:
            if problem.node_id is None:
                continue
            entry = node_errors.setdefault(problem.node_id, {"errors": [], "dependent_outputs": [],
                                                             "class_type": problem.class_type})
            entry["errors"].append({"type": problem.kind, "message": _KIND_MESSAGES.get(problem.kind, problem.kind),
                                    "details": problem.details, "extra_info": {}})
        return {"error": {"type": self.kind, "message": self.message, "details": self.details, "extra_info": {}},
                "node_errors": node_errors}


_KIND_MESSAGES = {
    "invalid_node": "Malformed node",
    "invalid_link": "Malformed link",
    "invalid_widgets_values": "Malformed widget values",
    "link_cycle": "Links form a cycle through reroutes or bypassed nodes",
    "invalid_subgraph": "Malformed subgraph",
    "unsupported_group_node": "Legacy group nodes are not supported",
}


# ---- the parsed graph -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Link:
    origin: str
    origin_slot: int
    target: str
    target_slot: int
    type: str


@dataclass(frozen=True)
class _InSlot:
    name: str
    type: str
    link: str | None
    widget: str | None

    @property
    def key(self) -> str:
        return self.widget or self.name


@dataclass
class _Node:
    id: str
    type: str
    mode: int
    title: str | None
    inputs: list[_InSlot]
    output_types: list[str]
    widgets_values: Any
    widgets_values_named: Mapping[str, Any] | None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Graph:
    nodes: dict[str, _Node]  # in document order
    links: dict[str, _Link]
    subgraphs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    roles: Mapping[str, VirtualRole] = field(default_factory=dict)  # the editor-only node types in play

    def setter(self, name: Any) -> _Node | None:
        """The SetNode publishing `name` (the first one, if several)."""
        for node in self.nodes.values():
            if self.roles.get(node.type) == "set" and _first_widget_value(node) == name:
                return node
        return None


@dataclass(frozen=True)
class _Source:
    node: str
    slot: int


@dataclass(frozen=True)
class _Literal:
    value: Any


# ---- UI -> API ----------------------------------------------------------------------------------------------------
def convert_workflow(workflow: Mapping[str, Any], registry: Registry) -> dict[str, dict[str, Any]]:
    """The API prompt {id: {"inputs", "class_type", "_meta": {"title"}}} of a UI workflow (0.4 or schema 1)."""
    if detect_format(workflow) != "ui":
        raise WorkflowError("This is an API prompt, not a UI workflow", kind="api_format")
    from server.workflow_subgraphs import expand_subgraphs, subgraph_definitions  # it builds on this module

    problems: list[NodeProblem] = []
    graph = _parse_graph(workflow, problems)
    graph = expand_subgraphs(graph, subgraph_definitions(workflow, problems), registry, problems)
    graph.roles = {**{t: r for t, r in EXTENSION_VIRTUAL_NODES.items() if t not in registry}, **CORE_VIRTUAL_NODES}
    prompt: dict[str, dict[str, Any]] = {}
    for node in graph.nodes.values():
        if node.type in graph.roles or node.mode in (MODE_MUTED, MODE_BYPASS):
            continue
        spec = registry.get(node.type)
        if spec is None and node.type.startswith(GROUP_NODE_PREFIXES):
            problems.append(NodeProblem(node.id, node.type, "unsupported_group_node",
                                        "a legacy group node: convert it to a subgraph or ungroup it in the editor"))
            continue
        inputs = _widget_inputs(node, registry, problems)
        for slot in node.inputs:
            if slot.link is None:
                continue
            source = _resolve_link(graph, slot.link, set(), node, problems)
            if source is None:
                inputs.pop(slot.key, None)  # the source is muted, missing or unconnected
            elif isinstance(source, _Literal):
                inputs[slot.key] = _wrap(source.value)
            else:
                inputs[slot.key] = [source.node, source.slot]
        title = node.title or (spec.display_name if spec else node.type)
        prompt[node.id] = {"inputs": inputs, "class_type": node.type, "_meta": {"title": title}}
    if problems:
        raise WorkflowError("Workflow could not be converted", problems)
    return prompt


def detect_format(document: Any) -> Literal["ui", "api"]:
    """"ui" for an editor workflow (has a `nodes` list), "api" for a prompt ({id: {class_type, inputs}})."""
    if not isinstance(document, Mapping):
        raise WorkflowError(f"A workflow must be a JSON object, got {type(document).__name__}")
    if isinstance(document.get("nodes"), list):
        return "ui"
    if document and all(isinstance(v, Mapping) and "class_type" in v for v in document.values()):
        return "api"
    raise WorkflowError("Neither a UI workflow (no 'nodes' list) nor an API prompt (entries without 'class_type')",
                        kind="unknown_format")


def to_api_prompt(document: Mapping[str, Any], registry: Registry) -> dict[str, dict[str, Any]]:
    """An API prompt from either format: UI workflows are converted, API prompts are returned as a copy."""
    if detect_format(document) == "ui":
        return convert_workflow(document, registry)
    return {str(node_id): dict(node) for node_id, node in document.items()}


def prompt_from_png(source: bytes | str | PathLike[str], registry: Registry) -> dict[str, dict[str, Any]]:
    """The prompt that made a saved image: its "prompt" chunk, else its converted "workflow" chunk."""
    metadata = read_png_metadata(source)
    if metadata["prompt"] is not None:
        return to_api_prompt(metadata["prompt"], registry)
    if metadata["workflow"] is not None:
        return convert_workflow(metadata["workflow"], registry)
    raise WorkflowError("The image carries no prompt or workflow metadata", kind="no_metadata")


# ---- parsing ------------------------------------------------------------------------------------------------------
def _parse_graph(document: Mapping[str, Any], problems: list[NodeProblem], prefix: str = "") -> _Graph:
    nodes: dict[str, _Node] = {}
    for raw in _items(document, "nodes", problems):
        node = _parse_node(raw, problems, prefix)
        if node is None:
            continue
        if node.id in nodes:
            problems.append(NodeProblem(node.id, node.type, "invalid_node", "two nodes have this id"))
            continue
        nodes[node.id] = node
    links: dict[str, _Link] = {}
    for raw in _items(document, "links", problems):
        parsed = _parse_link(raw, problems, prefix)
        if parsed is not None:
            links[parsed[0]] = parsed[1]
    definitions = document.get("definitions")
    definitions = _items(definitions, "subgraphs", problems) if isinstance(definitions, Mapping) else []
    subgraphs = {str(d["id"]): d for d in definitions if isinstance(d, Mapping) and "id" in d}
    return _Graph(nodes, links, subgraphs)


def _parse_node(raw: Any, problems: list[NodeProblem], prefix: str) -> _Node | None:
    if not isinstance(raw, Mapping) or "id" not in raw:
        problems.append(NodeProblem(None, None, "invalid_node", f"a node without an id: {_show(raw)}"))
        return None
    node_id = prefix + str(raw["id"])
    node_type = raw.get("type")
    if not isinstance(node_type, str) or not node_type:
        problems.append(NodeProblem(node_id, None, "invalid_node", "the node has no type"))
        return None
    inputs = []
    for index, slot in enumerate(_items(raw, "inputs", problems, node_id, node_type)):
        if not isinstance(slot, Mapping):
            problems.append(NodeProblem(node_id, node_type, "invalid_node", f"input {index} is not an object"))
            continue
        link = slot.get("link")
        if link is not None and (isinstance(link, bool) or not isinstance(link, (int, str))):
            problems.append(NodeProblem(node_id, node_type, "invalid_link",
                                        f"input {slot.get('name')!r} has link {link!r}, expected a link id"))
            link = None
        widget = slot.get("widget")
        inputs.append(_InSlot(name=str(slot.get("name", "")), type=str(slot.get("type", "*")),
                              link=None if link is None else prefix + str(link),
                              widget=str(widget["name"]) if isinstance(widget, Mapping) and "name" in widget
                              else None))
    outputs = [str(o.get("type", "*")) if isinstance(o, Mapping) else "*"
               for o in _items(raw, "outputs", problems, node_id, node_type)]
    mode = raw.get("mode", 0)
    named = raw.get("widgets_values_named")
    title = raw.get("title")
    properties = raw.get("properties")
    return _Node(id=node_id, type=node_type, mode=mode if isinstance(mode, int) else 0,
                 title=title if isinstance(title, str) and title else None, inputs=inputs, output_types=outputs,
                 widgets_values=raw.get("widgets_values"),
                 widgets_values_named=named if isinstance(named, Mapping) else None,
                 properties=properties if isinstance(properties, Mapping) else {})


def _parse_link(raw: Any, problems: list[NodeProblem], prefix: str) -> tuple[str, _Link] | None:
    try:
        if isinstance(raw, Mapping):  # schema 1
            fields = (raw["id"], raw["origin_id"], raw["origin_slot"], raw["target_id"], raw["target_slot"],
                      raw.get("type", "*"))
        elif isinstance(raw, (list, tuple)) and len(raw) >= 5:  # 0.4: [id, origin, slot, target, slot, type]
            fields = (*raw[:5], raw[5] if len(raw) > 5 else "*")
        else:
            raise ValueError("not a link")
        link_id, origin, origin_slot, target, target_slot, link_type = fields
        if int(origin_slot) < 0 or int(target_slot) < 0:
            raise ValueError("negative slot")
        return prefix + str(link_id), _Link(_end(origin, prefix), int(origin_slot), _end(target, prefix),
                                            int(target_slot), str(link_type))
    except (KeyError, ValueError, TypeError):
        problems.append(NodeProblem(None, None, "invalid_link", f"malformed link {_show(raw)}"))
        return None


def _items(container: Mapping[str, Any], key: str, problems: list[NodeProblem], node_id: str | None = None,
           class_type: str | None = None) -> list[Any]:
    """container[key] as a list ([] when absent or null); anything else is reported."""
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        kind = "invalid_link" if key == "links" else "invalid_node" if node_id else "invalid_workflow"
        problems.append(NodeProblem(node_id, class_type, kind, f"{key!r} is a {type(value).__name__}, not a list"))
        return []
    return value


def _end(node_id: Any, prefix: str) -> str:
    text = str(node_id)
    return text if text in (SUBGRAPH_INPUT, SUBGRAPH_OUTPUT) else prefix + text


# ---- link resolution ----------------------------------------------------------------------------------------------
def _resolve_link(graph: _Graph, link_key: str, seen: set[str], target: _Node,
                  problems: list[NodeProblem]) -> _Source | _Literal | None:
    """Where a link's value really comes from, through reroutes, primitives and bypassed nodes."""
    link = graph.links.get(link_key)
    if link is None:
        return None
    if link_key in seen:
        problems.append(NodeProblem(target.id, target.type, "link_cycle", f"link {link_key} loops back on itself"))
        return None
    seen.add(link_key)
    node = graph.nodes.get(link.origin)
    role = graph.roles.get(node.type) if node is not None else None
    if node is None or role == "ui_only":
        return None
    if role in ("reroute", "set", "get"):  # pass-through: their single input (a GetNode: its SetNode's input)
        through = graph.setter(_first_widget_value(node)) if role == "get" else node
        upstream = through.inputs[0].link if through is not None and through.inputs else None
        return None if upstream is None else _resolve_link(graph, upstream, seen, target, problems)
    if role == "primitive":
        value = _first_widget_value(node)
        return None if value is _MISSING else _Literal(value)
    if node.mode == MODE_MUTED:
        return None
    if node.mode == MODE_BYPASS:
        wanted = node.output_types[link.origin_slot] if link.origin_slot < len(node.output_types) else link.type
        upstream = _bypass_input(node, link.origin_slot, wanted)
        return None if upstream is None else _resolve_link(graph, upstream, seen, target, problems)
    return _Source(link.origin, link.origin_slot)


def _bypass_input(node: _Node, slot: int, wanted: str) -> str | None:
    """A bypassed node passes on its first connected input of the wanted type, trying the same slot index first."""
    order = ([slot] if slot < len(node.inputs) else []) + list(range(len(node.inputs)))
    for index in order:
        candidate = node.inputs[index]
        if candidate.link is not None and types_compatible(wanted, candidate.type):
            return candidate.link
    return None


_MISSING = object()


def _first_widget_value(node: _Node) -> Any:
    values = node.widgets_values
    if isinstance(values, list) and values:
        return values[0]
    if isinstance(values, Mapping) and values:
        return values.get("value", next(iter(values.values())))
    return _MISSING


# ---- widget values ------------------------------------------------------------------------------------------------
_CONTROL = "\0control"  # layout markers for the editor-only values stored between widget values
_UPLOAD = "\0upload"


def _widget_inputs(node: _Node, registry: Registry, problems: list[NodeProblem]) -> dict[str, Any]:
    spec = registry.get(node.type)
    if spec is None:
        return {name: _wrap(value) for name, value in _unknown_widget_values(node).items()}
    widgets = [i for i in spec.inputs if i.is_widget and not i.force_input]
    named = node.widgets_values_named
    if named is None and isinstance(node.widgets_values, Mapping):
        named = node.widgets_values
    values: dict[str, Any]
    if named is not None:
        values = {w.name: named[w.name] for w in widgets if w.name in named}
    elif isinstance(node.widgets_values, list) and has_dynamic_combo(schema := _compact_schema(spec)):
        values = name_values(schema, node.widgets_values)
    elif isinstance(node.widgets_values, list):
        linked = {s.key for s in node.inputs if s.link is not None}
        values = _align(node.widgets_values, widgets, linked)
    elif node.widgets_values is None:
        values = {}
    else:
        problems.append(NodeProblem(node.id, node.type, "invalid_widgets_values",
                                    f"widgets_values is a {type(node.widgets_values).__name__}, not a list"))
        values = {}
    out = {}
    for widget in widgets:  # values the file lacks (inputs added since it was saved) take their defaults
        value = values[widget.name] if widget.name in values else _default(widget, registry)
        if value is not _MISSING:
            out[widget.name] = _wrap(value)
    return out


def _compact_schema(spec: NodeSpec) -> Mapping[str, Any] | None:
    """The compact input schema a node with v3 dynamic inputs serves (None for a node declared flat)."""
    if spec.raw_input_types is None:
        return None
    try:
        return spec.raw_input_types()
    except Exception:  # a custom node's INPUT_TYPES that fails here fails validation with its own message later
        return None


def _widget_layout(widgets: Sequence[Input], *, legacy_seeds: bool = False, uploads: bool = True,
                   controls: bool = True, skip: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The order the editor stores widget values in: each widget's value, its control_after_generate value right
    after it, and the upload button's value after the last required widget (the editor appends an `upload`
    widget to the required inputs of nodes with an image_upload combo)."""
    has_upload = uploads and any(getattr(w, "image_upload", False) for w in widgets)
    last_required = max((i for i, w in enumerate(widgets) if not w.optional), default=-1)
    slots = [_UPLOAD] if has_upload and last_required < 0 else []
    for index, widget in enumerate(widgets):
        if widget.name not in skip:
            slots.append(widget.name)
            if controls and _has_control(widget, legacy_seeds):
                slots.append(_CONTROL)
        if has_upload and index == last_required:
            slots.append(_UPLOAD)
    return slots


def _align(values: list[Any], widgets: Sequence[Input], linked: set[str]) -> dict[str, Any]:
    """Name each stored value. The layouts the editors have written, most likely first, are tried by length;
    if none fits, values are taken in order, skipping control and upload values where they may appear."""
    candidates = (_widget_layout(widgets), _widget_layout(widgets, legacy_seeds=True),
                  _widget_layout(widgets, uploads=False), _widget_layout(widgets, controls=False),
                  _widget_layout(widgets, skip=linked), _widget_layout(widgets, legacy_seeds=True, skip=linked))
    by_name = {w.name: w for w in widgets}
    for slots in candidates:
        if len(slots) == len(values) and all(_plausible(by_name.get(s), s, v) for s, v in zip(slots, values)):
            return {slot: value for slot, value in zip(slots, values) if slot not in (_CONTROL, _UPLOAD)}
    out: dict[str, Any] = {}
    position = 0
    for slot in _widget_layout(widgets, legacy_seeds=True):
        if position >= len(values):
            break
        if slot == _CONTROL or slot == _UPLOAD:
            expected = _is_control_value if slot == _CONTROL else (lambda v: v == "image")
            position += 1 if expected(values[position]) else 0
            continue
        out[slot] = values[position]
        position += 1
    return out


def _plausible(widget: Input | None, slot: str, value: Any) -> bool:
    """Can this value sit in this slot? Control slots hold control values, numbers never do."""
    if slot == _CONTROL:
        return _is_control_value(value)
    if slot == _UPLOAD:
        return isinstance(value, str)
    if widget is not None and widget.type_name in ("INT", "FLOAT"):
        return not _is_control_value(value)
    return True


def _unknown_widget_values(node: _Node) -> dict[str, Any]:
    """Widget values of a node type this server does not know, named as well as the file allows."""
    named = node.widgets_values_named
    if named is None and isinstance(node.widgets_values, Mapping):
        named = node.widgets_values
    if named is not None:
        return {str(k): v for k, v in named.items() if k != "control_after_generate"}
    names = [s.widget for s in node.inputs if s.widget]
    values = node.widgets_values if isinstance(node.widgets_values, list) else []
    if names and len(names) == len(values):
        return dict(zip(names, values))
    kept = [v for i, v in enumerate(values) if not (i and _is_control_value(v) and isinstance(values[i - 1], int))]
    return dict(zip(names, kept)) if len(kept) == len(names) else {}


def _has_control(widget: Input, legacy_seeds: bool) -> bool:
    if widget.type_name != "INT":
        return False
    return bool(getattr(widget, "control_after_generate", False)) or (legacy_seeds and widget.name in
                                                                        LEGACY_SEED_NAMES)


def _is_control_value(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, str) and value in CONTROL_VALUES)


def _default(widget: Input, registry: Registry) -> Any:
    default = getattr(widget, "default", None)
    if default is not None:
        return default
    choices = registry.choices(widget)
    return choices[0] if choices else _MISSING


def _wrap(value: Any) -> Any:
    """Literal lists travel as {"__value__": [...]} so they are not read as links."""
    return {"__value__": list(value)} if isinstance(value, (list, tuple)) else value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---- API -> UI ----------------------------------------------------------------------------------------------------
NODE_WIDTH = 320
COLUMN_GAP = 80
ROW_GAP = 40
SLOT_HEIGHT = 26


def api_to_workflow(prompt: Mapping[str, Any], registry: Registry) -> dict[str, Any]:
    """A UI workflow (version 0.4) for an API prompt, laid out in columns by depth from the sources.

    Converting the result back with `convert_workflow` gives the same prompt (titles aside for unknown types).
    """
    if detect_format(prompt) != "api":
        raise WorkflowError("This is a UI workflow, not an API prompt", kind="ui_format")
    api = {str(k): v for k, v in prompt.items()}
    ui_ids = _ui_ids(api)
    order = _topological(api)
    depth = _depths(api, order)

    nodes: dict[str, dict[str, Any]] = {}
    out_types: dict[str, list[str]] = {}
    for api_id in order:
        entry = api[api_id]
        nodes[api_id], out_types[api_id] = _ui_node(ui_ids[api_id], entry, registry, _consumed_slots(api, api_id))

    links: list[list[Any]] = []
    for api_id in order:
        node = nodes[api_id]
        by_name = {slot["name"]: slot for slot in node["inputs"]}
        for name, value in (api[api_id].get("inputs") or {}).items():
            if not _is_api_link(value) or value[0] not in nodes:
                continue
            origin, slot = value[0], int(value[1])
            link_id = len(links) + 1
            types = out_types[origin]
            link_type = types[slot] if slot < len(types) else "*"
            target_slot = list(by_name).index(name)
            links.append([link_id, ui_ids[origin], slot, ui_ids[api_id], target_slot, link_type])
            by_name[name]["link"] = link_id
            outputs = nodes[origin]["outputs"]
            if slot < len(outputs):
                outputs[slot]["links"].append(link_id)

    _layout(nodes, order, depth)
    for index, api_id in enumerate(order):
        nodes[api_id]["order"] = index
        for output in nodes[api_id]["outputs"]:
            output["links"] = output["links"] or None
    return {"last_node_id": max(ui_ids.values(), default=0), "last_link_id": len(links),
            "nodes": [nodes[i] for i in order], "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4}


def _ui_node(ui_id: int, entry: Mapping[str, Any], registry: Registry, consumed: int
             ) -> tuple[dict[str, Any], list[str]]:
    class_type = str(entry.get("class_type"))
    api_inputs = entry.get("inputs") or {}
    spec = registry.get(class_type)
    inputs: list[dict[str, Any]] = []
    widgets_values: list[Any] = []
    named: dict[str, Any] = {}
    declared = set()
    if spec is not None:
        widgets = {}
        for decl in spec.inputs:
            declared.add(decl.name)
            if decl.is_widget and not decl.force_input:
                widgets[decl.name] = decl
                inputs.append({"name": decl.name, "type": decl.type_name, "widget": {"name": decl.name},
                               "link": None})
            else:
                inputs.append({"name": decl.name, "type": decl.type_name, "link": None})
        schema = _compact_schema(spec)
        layout = stored_order(schema, {k: _unwrap(v) for k, v in api_inputs.items() if not _is_api_link(v)}) \
            if has_dynamic_combo(schema) else _widget_layout(list(widgets.values()))
        for slot in layout:
            if slot in (_CONTROL, _UPLOAD):
                widgets_values.append("fixed" if slot == _CONTROL else "image")
                continue
            value = api_inputs.get(slot, _MISSING)
            literal = _unwrap(value) if value is not _MISSING and not _is_api_link(value) else _default(
                widgets[slot], registry)
            widgets_values.append(None if literal is _MISSING else literal)
        output_types = list(spec.output_types)
        output_names = [o.name or o.type for o in spec.outputs]
        title = spec.display_name
    else:
        output_types = ["*"] * consumed
        output_names = list(output_types)
        title = class_type
    for name, value in api_inputs.items():
        if name in declared:
            continue
        if _is_api_link(value):
            inputs.append({"name": name, "type": "*", "link": None})
        elif spec is None:
            inputs.append({"name": name, "type": "*", "widget": {"name": name}, "link": None})
            widgets_values.append(_unwrap(value))
            named[name] = _unwrap(value)
    node: dict[str, Any] = {
        "id": ui_id, "type": class_type, "pos": [0, 0], "size": [NODE_WIDTH, 0], "flags": {}, "order": 0,
        "mode": 0, "inputs": inputs,
        "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                    for i, (n, t) in enumerate(zip(output_names, output_types))],
        "properties": {"Node name for S&R": class_type},
        "widgets_values": widgets_values,
    }
    if named:
        node["widgets_values_named"] = named
    meta_title = (entry.get("_meta") or {}).get("title") if isinstance(entry.get("_meta"), Mapping) else None
    if isinstance(meta_title, str) and meta_title and meta_title != title:
        node["title"] = meta_title
    rows = max(len(inputs), len(output_types)) + len(widgets_values)
    node["size"] = [NODE_WIDTH, 46 + SLOT_HEIGHT * rows]
    return node, output_types


def _ui_ids(api: Mapping[str, Any]) -> dict[str, int]:
    ids = {k: int(k) for k in api if k.isdigit() and int(k) > 0}
    taken = set(ids.values())
    if len(taken) != len(ids):  # "01" and "1": renumber those
        ids = {}
        taken = set()
    next_id = max(taken, default=0) + 1
    for key in api:
        if key not in ids:
            while next_id in taken:
                next_id += 1
            ids[key] = next_id
            taken.add(next_id)
    return ids


def _is_api_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool) and 0 <= value[1] < 2 ** 31)


def _unwrap(value: Any) -> Any:
    if isinstance(value, Mapping) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def _upstream(entry: Mapping[str, Any]) -> list[str]:
    return [v[0] for v in (entry.get("inputs") or {}).values() if _is_api_link(v)]


def _consumed_slots(api: Mapping[str, Any], api_id: str) -> int:
    slots = [int(v[1]) + 1 for e in api.values() for v in (e.get("inputs") or {}).values()
             if _is_api_link(v) and v[0] == api_id]
    return max(slots, default=1)


def _topological(api: Mapping[str, Any]) -> list[str]:
    """Sources first (Kahn); nodes left in a cycle keep their document order at the end."""
    indegree = {k: sum(1 for u in _upstream(v) if u in api) for k, v in api.items()}
    ready = deque(k for k in api if indegree[k] == 0)
    order: list[str] = []
    while ready:
        current = ready.popleft()
        order.append(current)
        for key, entry in api.items():
            if current in _upstream(entry):
                indegree[key] -= _upstream(entry).count(current)
                if indegree[key] == 0:
                    ready.append(key)
    return order + [k for k in api if k not in order]


def _depths(api: Mapping[str, Any], order: Sequence[str]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for key in order:
        depth[key] = 1 + max((depth[u] for u in _upstream(api[key]) if u in depth), default=-1)
    return depth


def _layout(nodes: Mapping[str, dict[str, Any]], order: Sequence[str], depth: Mapping[str, int]) -> None:
    next_y: dict[int, int] = {}
    for key in order:
        column = depth[key]
        y = next_y.get(column, 0)
        nodes[key]["pos"] = [column * (NODE_WIDTH + COLUMN_GAP), y]
        next_y[column] = y + nodes[key]["size"][1] + ROW_GAP
