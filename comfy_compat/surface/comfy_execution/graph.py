"""ComfyUI's `comfy_execution.graph`: ExecutionBlocker and DynamicPrompt, as packs import them.

Chisel does not block outputs: a node that returns an ExecutionBlocker passes that object on, and a node that
receives one fails with the blocker's message (ComfyUI stops the branch the same way, with that message).
"""

from __future__ import annotations

from typing import Any


class ExecutionBlocker:
    """Returned in place of an output to stop what depends on it; `message` None stops silently in ComfyUI."""

    def __init__(self, message: str | None):
        self.message = message


class DynamicPrompt:
    """A prompt as ComfyUI's executor sees it: the original nodes by id."""

    def __init__(self, original_prompt: dict[str, Any]):
        self.original_prompt = original_prompt
        self.ephemeral_prompt: dict[str, Any] = {}
        self.ephemeral_parents: dict[str, str] = {}
        self.ephemeral_display: dict[str, str] = {}

    def get_node(self, node_id: str) -> dict[str, Any]:
        if node_id in self.ephemeral_prompt:
            return self.ephemeral_prompt[node_id]
        if node_id in self.original_prompt:
            return self.original_prompt[node_id]
        raise KeyError(node_id)

    def has_node(self, node_id: str) -> bool:
        return node_id in self.original_prompt or node_id in self.ephemeral_prompt

    def get_original_prompt(self) -> dict[str, Any]:
        return self.original_prompt

    def all_node_ids(self) -> set[str]:
        return set(self.original_prompt) | set(self.ephemeral_prompt)

    def get_real_node_id(self, node_id: str) -> str:
        while node_id in self.ephemeral_parents:
            node_id = self.ephemeral_parents[node_id]
        return node_id

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.ephemeral_parents.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        while node_id in self.ephemeral_display:
            node_id = self.ephemeral_display[node_id]
        return node_id


def __getattr__(name: str):  # noqa: ANN202 - ComfyUI's other names: placeholders that fail when used
    from comfy_compat.surface.unavailable import module_attribute

    return module_attribute('comfy_execution.graph', name)
