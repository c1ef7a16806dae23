"""Subgraphs flattened the way ComfyUI's frontend (1.58) flattens them at queue time (`ExecutableNodeDTO`).

A subgraph definition (`definitions.subgraphs[]`, nested definitions included) holds its own nodes and links, an input
node (id -10) and an output node (id -20), and declares its inputs and outputs. An instance is a node whose `type` is
the definition's id. Each active instance is replaced by a copy of the definition's nodes, with ids "instance:inner"
("12:5", nested "12:5:3"), and the links that cross its boundary are rewired:

  - an inner link from the input node's slot i starts where the instance's input *of the same name* is fed (never the
    input at the same position: an unconnected input stays unconnected);
  - an unconnected input that feeds an inner widget is a *promoted* widget: its per-instance value (the instance's
    `widgets_values_named[name]`, else its `widgets_values` in the order of the definition's promoted inputs) feeds
    every inner input it is linked to, like a primitive; without a stored value it is the first linked inner widget's
    own value;
  - an instance's output slot o starts where the output node's slot o is fed (through the input node, for a
    pass-through link, and through bypassed nodes and reroutes, which the converter resolves later);
  - files from older frontends that promote inner widgets with `properties.proxyWidgets` ([inner node id, widget
    name] per entry, the values in `widgets_values` at the same index) set that widget for this instance only, as
    1.58 does when it migrates them.

A muted or bypassed instance stays one node (its inputs in the definition's order) and is handled like any muted or
bypassed node. A definition that contains itself, or an instance whose definition is missing, is reported as an
`invalid_subgraph` problem.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from nodes.registry import Registry
from server.workflow import (MODE_BYPASS, MODE_MUTED, SUBGRAPH_INPUT, SUBGRAPH_OUTPUT, NodeProblem, _Graph, _InSlot,
                             _items, _Link, _Node, _parse_graph, _unwrap, _widget_inputs)

# ComfyUI names definitions with a UUID; a node of such a type with no definition is a missing subgraph.
SUBGRAPH_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
PROXY_SUBGRAPH_INPUT = "-1"  # a proxyWidgets entry naming a subgraph input rather than an inner node

__all__ = ["expand_subgraphs", "subgraph_definitions"]


def subgraph_definitions(document: Mapping[str, Any], problems: list[NodeProblem]) -> dict[str, Mapping[str, Any]]:
    """Every definition in the document by id: `definitions.subgraphs` at the top and, as older frontends wrote
    them, inside other definitions (the first one of an id wins)."""
    found: dict[str, Mapping[str, Any]] = {}
    pending: deque[Mapping[str, Any]] = deque([document])
    while pending:
        container = pending.popleft()
        definitions = container.get("definitions")
        if not isinstance(definitions, Mapping):
            continue
        for definition in _items(definitions, "subgraphs", problems):
            if isinstance(definition, Mapping) and "id" in definition and str(definition["id"]) not in found:
                found[str(definition["id"])] = definition
                pending.append(definition)
    return found


def expand_subgraphs(graph: _Graph, definitions: Mapping[str, Mapping[str, Any]], registry: Registry,
                     problems: list[NodeProblem]) -> _Graph:
    """The graph with every active instance replaced by its inner nodes, to any depth, links rewired through it."""
    links = dict(graph.links)
    nodes: dict[str, _Node] = {}
    pending: deque[tuple[_Node, tuple[str, ...]]] = deque((node, ()) for node in graph.nodes.values())
    while pending:
        node, chain = pending.popleft()  # chain: the definitions this node sits in, outermost first
        definition = definitions.get(node.type)
        if definition is None:
            if SUBGRAPH_ID.match(node.type) and node.type not in registry:
                problems.append(NodeProblem(node.id, node.type, "invalid_subgraph",
                                            f"the workflow has no definition for subgraph {node.type} "
                                            f"(definitions.subgraphs)"))
                continue
            nodes[node.id] = node
            continue
        if node.mode in (MODE_MUTED, MODE_BYPASS):
            nodes[node.id] = _as_one_node(node, definition)
            continue
        if node.type in chain:
            names = " -> ".join(_name(definitions[d]) for d in (*chain[chain.index(node.type):], node.type))
            problems.append(NodeProblem(node.id, node.type, "invalid_subgraph", f"a subgraph contains itself: {names}"))
            continue
        inner = _parse_graph(definition, problems, prefix=f"{node.id}:")
        spliced = _splice(node, definition, inner, links, registry, definitions, (*chain, node.type))
        pending.extendleft(reversed([(inner_node, (*chain, node.type)) for inner_node in spliced]))
    return _Graph(nodes, links, graph.subgraphs)


def _splice(instance: _Node, definition: Mapping[str, Any], inner: _Graph, links: dict[str, _Link],
            registry: Registry, definitions: Mapping[str, Mapping[str, Any]], chain: tuple[str, ...]) -> list[_Node]:
    """Wire an instance's inner graph into `links` (in place) and return its inner nodes."""
    declared = _declared(definition, "inputs")
    fed_by = _matched_inputs(instance, declared)
    values, overrides = _instance_values(instance, definition, inner, registry, definitions, chain)
    inner_nodes = dict(inner.nodes)
    for node_id, widgets in overrides.items():
        _override_widgets(inner_nodes[node_id], widgets, registry)
    # Inner links from the input node continue the link into the instance's input of the same name.
    for key, link in list(inner.links.items()):
        if link.origin != SUBGRAPH_INPUT:
            continue
        name = declared[link.origin_slot][0] if link.origin_slot < len(declared) else None
        slot = fed_by.get(link.origin_slot)
        outer = links.get(slot.link) if slot is not None and slot.link is not None else None
        if outer is not None:
            inner.links[key] = replace(link, origin=outer.origin, origin_slot=outer.origin_slot)
        elif name is not None and name in values:  # a promoted widget: its value feeds the inner input
            holder = _Node(id=f"{instance.id}:input:{name}", type="PrimitiveNode", mode=0, title=None, inputs=[],
                           output_types=[link.type], widgets_values=[values[name]], widgets_values_named=None)
            inner_nodes[holder.id] = holder
            inner.links[key] = replace(link, origin=holder.id, origin_slot=0)
        else:  # unconnected: the inner input is unconnected too (a widget keeps its own value)
            del inner.links[key]
            target = inner_nodes.get(link.target)
            if target is not None:
                target.inputs = [replace(s, link=None) if s.link == key else s for s in target.inputs]
    # Outer links from the instance's outputs start where the output node's slot is fed (its first link).
    feeds = _output_feeds(definition, inner, f"{instance.id}:")
    for key, link in list(links.items()):
        if link.origin == instance.id:
            feed = feeds.get(link.origin_slot)
            if feed is None:
                del links[key]
            else:
                links[key] = replace(link, origin=feed.origin, origin_slot=feed.origin_slot)
    links.update({key: link for key, link in inner.links.items() if link.target != SUBGRAPH_OUTPUT})
    return list(inner_nodes.values())


def _declared(definition: Mapping[str, Any], key: str) -> list[tuple[str, str]]:
    """A definition's declared inputs (or outputs) as (name, type), in order."""
    return [(str(slot.get("name", "")), str(slot.get("type", "*"))) if isinstance(slot, Mapping) else ("", "*")
            for slot in _items(definition, key, [])]


def _matched_inputs(instance: _Node, declared: Sequence[tuple[str, str]]) -> dict[int, _InSlot]:
    """Which of the instance's saved inputs is each declared input: by name and type, then by name (as the
    frontend rebinds them), each saved input used once. Declared inputs the instance did not save are absent."""
    taken: set[int] = set()
    matched: dict[int, _InSlot] = {}
    for same_type in (True, False):
        for index, (name, type_) in enumerate(declared):
            if index in matched:
                continue
            for position, slot in enumerate(instance.inputs):
                if position not in taken and slot.name == name and (not same_type or slot.type == type_):
                    matched[index] = slot
                    taken.add(position)
                    break
    return matched


def _output_feeds(definition: Mapping[str, Any], inner: _Graph, prefix: str) -> dict[int, _Link]:
    """The inner link feeding each output slot: the first of the declared output's `linkIds` that exists, else the
    first such link in the document."""
    feeds: dict[int, _Link] = {}
    for index, output in enumerate(_items(definition, "outputs", [])):
        ids = output.get("linkIds") if isinstance(output, Mapping) else None
        for link_id in ids if isinstance(ids, list) else []:
            link = inner.links.get(f"{prefix}{link_id}")
            if link is not None and link.target == SUBGRAPH_OUTPUT and link.target_slot == index:
                feeds[index] = link
                break
    for link in inner.links.values():
        if link.target == SUBGRAPH_OUTPUT:
            feeds.setdefault(link.target_slot, link)
    return feeds


# ---- promoted widget values ---------------------------------------------------------------------------------------
def _instance_values(instance: _Node, definition: Mapping[str, Any], inner: _Graph, registry: Registry,
                     definitions: Mapping[str, Mapping[str, Any]], chain: tuple[str, ...]
                     ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The value of each promoted input of this instance (by input name), and the inner widgets a legacy
    `proxyWidgets` list sets for this instance only ({inner node id: {widget: value}})."""
    declared = _declared(definition, "inputs")
    targets = _input_targets(inner, len(declared))
    widgets = [next((link for link in links if _is_widget_target(inner, link, definitions)), None)
               for links in targets]  # the first inner widget each declared input feeds, if any
    promoted = [name for (name, _), widget in zip(declared, widgets) if widget is not None]
    stored, overrides = _stored_values(instance, promoted, declared, targets, inner)
    values: dict[str, Any] = {}
    for (name, _), widget in zip(declared, widgets):
        if widget is None or name in values:
            continue
        if name in stored:
            values[name] = stored[name]
            continue
        value = _target_value(inner, widget, registry, definitions, chain)
        if value is not _NONE:
            values[name] = value
    return values, overrides


def _input_targets(inner: _Graph, count: int) -> list[list[tuple[str, _Link]]]:
    """For each declared input, the inner links leaving the input node from its slot, in document order."""
    targets: list[list[tuple[str, _Link]]] = [[] for _ in range(count)]
    for key, link in inner.links.items():
        if link.origin == SUBGRAPH_INPUT and link.origin_slot < count:
            targets[link.origin_slot].append((key, link))
    return targets


def _target_slot(inner: _Graph, key: str, link: _Link) -> tuple[_Node, _InSlot] | None:
    node = inner.nodes.get(link.target)
    if node is None:
        return None
    slot = next((s for s in node.inputs if s.link == key), None)
    return None if slot is None else (node, slot)


def _is_widget_target(inner: _Graph, target: tuple[str, _Link], definitions: Mapping[str, Mapping[str, Any]],
                      depth: int = 0) -> bool:
    """Does this inner link end at a widget: a widget input, or a nested instance's promoted input?"""
    found = _target_slot(inner, *target)
    if found is None:
        return False
    node, slot = found
    nested = definitions.get(node.type)
    if nested is None:
        return slot.widget is not None
    if depth > len(definitions):  # a definition that contains itself; reported when it is expanded
        return False
    nested_inner = _parse_graph(nested, [], prefix="")
    declared = _declared(nested, "inputs")
    index = next((i for i, (name, _) in enumerate(declared) if name == slot.name), None)
    return index is not None and any(_is_widget_target(nested_inner, t, definitions, depth + 1)
                                     for t in _input_targets(nested_inner, len(declared))[index])


def _target_value(inner: _Graph, target: tuple[str, _Link], registry: Registry,
                  definitions: Mapping[str, Mapping[str, Any]], chain: tuple[str, ...]) -> Any:
    """The value the widget at the end of this inner link holds (a nested instance: its promoted value)."""
    found = _target_slot(inner, *target)
    if found is None:
        return _NONE
    node, slot = found
    nested = definitions.get(node.type)
    if nested is None:
        value = _widget_inputs(node, registry, []).get(slot.key, _NONE)
        return _NONE if value is _NONE else _unwrap(value)
    if node.type in chain:
        return _NONE
    nested_inner = _parse_graph(nested, [], prefix=f"{node.id}:")
    values, _ = _instance_values(node, nested, nested_inner, registry, definitions, (*chain, node.type))
    return values.get(slot.name, _NONE)


def _stored_values(instance: _Node, promoted: Sequence[str], declared: Sequence[tuple[str, str]],
                   targets: Sequence[Sequence[tuple[str, _Link]]], inner: _Graph
                   ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The promoted values the instance stores, by input name, and its legacy proxy-widget overrides."""
    quarantined = _quarantined_values(instance)
    proxies = instance.properties.get("proxyWidgets") if instance.properties else None
    values = instance.widgets_values
    if isinstance(proxies, list) and proxies:
        stored, overrides = _proxy_values(proxies, values if isinstance(values, list) else [], declared, targets,
                                          inner, f"{instance.id}:")
        return {**stored, **quarantined}, overrides
    named = instance.widgets_values_named
    if named is None and isinstance(values, Mapping):
        named = values
    if named is not None:
        stored = {name: named[name] for name in promoted if name in named}
    elif isinstance(values, list):
        stored = {name: value for name, value in zip(promoted, values) if value is not None}
    else:
        stored = {}
    return {**stored, **quarantined}, {}


def _quarantined_values(instance: _Node) -> dict[str, Any]:
    """Values 1.58 kept aside when it could not migrate a proxy widget (`proxyWidgetErrorQuarantine`), for the
    entries naming a subgraph input; the first entry of a name wins."""
    entries = instance.properties.get("proxyWidgetErrorQuarantine") if instance.properties else None
    found: dict[str, Any] = {}
    for entry in entries if isinstance(entries, list) else []:
        original = entry.get("originalEntry") if isinstance(entry, Mapping) else None
        if (isinstance(original, list) and len(original) >= 2 and str(original[0]) == PROXY_SUBGRAPH_INPUT
                and "hostValue" in entry and entry["hostValue"] is not None):
            found.setdefault(str(original[1]), entry["hostValue"])
    return found


def _proxy_values(proxies: Sequence[Any], values: Sequence[Any], declared: Sequence[tuple[str, str]],
                  targets: Sequence[Sequence[tuple[str, _Link]]], inner: _Graph, prefix: str
                  ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A legacy `proxyWidgets` list: entry i ([node id, widget name]) shows that inner widget on the instance, with
    the instance's `widgets_values[i]`. A widget a subgraph input already feeds takes the value through that input."""
    stored: dict[str, Any] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(proxies):
        if not isinstance(entry, list) or len(entry) < 2 or index >= len(values) or values[index] is None:
            continue
        source, widget = str(entry[0]), str(entry[1])
        if source == PROXY_SUBGRAPH_INPUT:
            stored.setdefault(widget, values[index])
            continue
        node_id = prefix + source
        linked = next((declared[i][0] for i, links in enumerate(targets) for key, link in links
                       if link.target == node_id and any(s.link == key and s.key == widget
                                                         for s in inner.nodes[node_id].inputs)), None)
        if linked is not None:
            stored.setdefault(linked, values[index])
        elif node_id in inner.nodes:
            overrides.setdefault(node_id, {}).setdefault(widget, values[index])
    return stored, overrides


def _override_widgets(node: _Node, widgets: Mapping[str, Any], registry: Registry) -> None:
    """Set some of an inner node's widget values (for this instance's copy only)."""
    if node.type == "PrimitiveNode":
        rest = node.widgets_values[1:] if isinstance(node.widgets_values, list) else []
        node.widgets_values = [widgets.get("value", next(iter(widgets.values()))), *rest]
        return
    current = {name: _unwrap(value) for name, value in _widget_inputs(node, registry, []).items()}
    node.widgets_values_named = {**current, **widgets}


def _as_one_node(instance: _Node, definition: Mapping[str, Any]) -> _Node:
    """A muted or bypassed instance as one node: its inputs in the definition's order (as the frontend rebuilds
    them, so a bypass finds the same slot), its outputs' types from the definition."""
    declared = _declared(definition, "inputs")
    matched = _matched_inputs(instance, declared)
    inputs = [matched.get(i) or _InSlot(name=name, type=type_, link=None, widget=None)
              for i, (name, type_) in enumerate(declared)]
    return replace(instance, inputs=inputs, output_types=[type_ for _, type_ in _declared(definition, "outputs")])


def _name(definition: Mapping[str, Any]) -> str:
    return repr(str(definition.get("name") or definition.get("id")))


_NONE = object()
