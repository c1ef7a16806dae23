"""ComfyUI's `comfy_execution.graph_utils`: GraphBuilder, which packs use to build node expansions.

`finalize()` gives ComfyUI's prompt fragment, which a node returns as {"result": ..., "expand": ...}; the executor
runs it in the node's place.
"""

from __future__ import annotations

from typing import Any


def is_link(obj: Any) -> bool:
    return isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], int)


class GraphBuilder:
    _default_prefix_root = ""
    _default_prefix_call_index = 0
    _default_prefix_graph_index = 0

    def __init__(self, prefix: str | None = None):
        self.prefix = prefix if prefix is not None else GraphBuilder.alloc_prefix()
        self.nodes: dict[str, Node] = {}
        self.id_gen = 1

    @classmethod
    def alloc_prefix(cls, root: str | None = None, call_index: int | None = None,
                     graph_index: int | None = None) -> str:
        root = cls._default_prefix_root if root is None else root
        call_index = cls._default_prefix_call_index if call_index is None else call_index
        if graph_index is None:
            graph_index = cls._default_prefix_graph_index
            cls._default_prefix_graph_index += 1
        return f"{root}.{call_index}.{graph_index}."

    def node(self, class_type: str, id: str | None = None, **kwargs: Any) -> Node:  # noqa: A002
        if id is None:
            id = str(self.id_gen)
            self.id_gen += 1
        id = self.prefix + id
        if id in self.nodes:
            return self.nodes[id]
        node = Node(id, class_type, kwargs)
        self.nodes[id] = node
        return node

    def lookup_node(self, id: str) -> Node | None:  # noqa: A002
        return self.nodes.get(self.prefix + id)

    def finalize(self) -> dict[str, Any]:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        node_id = self.prefix + node_id
        to_remove = []
        for node in self.nodes.values():
            for key, value in node.inputs.items():
                if is_link(value) and value[0] == node_id and value[1] == index:
                    if new_value is None:
                        to_remove.append((node, key))
                    else:
                        node.inputs[key] = new_value
        for node, key in to_remove:
            del node.inputs[key]

    def remove_node(self, id: str) -> None:  # noqa: A002
        self.nodes.pop(self.prefix + id, None)


class Node:
    def __init__(self, id: str, class_type: str, inputs: dict[str, Any]):  # noqa: A002
        self.id = id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        self.override_display_id = override_display_id

    def serialize(self) -> dict[str, Any]:
        serialized: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            serialized["override_display_id"] = self.override_display_id
        return serialized


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('comfy_execution.graph_utils', name)
