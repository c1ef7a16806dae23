"""The small context a node run receives: who it is, how to report progress, whether to stop, and the services.

The executor knows nothing of nodes: the app factory hands it a factory (`functools.partial(RunContext,
services=...)`) and the executor fills in the per-call fields. Nodes never reach for globals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from diffusion.values import Preview
from nodes.services import Services


class Interrupted(Exception):
    """Raised inside a node when its prompt was interrupted; the executor reports `execution_interrupted`."""


@dataclass(frozen=True)
class RunContext:
    """Per-call context of one node run.

    node_id / prompt_id   which node of which prompt is running
    services              what the app provides to nodes (folders, model manager, ...): see nodes/services.py
    hidden                ComfyUI's hidden inputs: {"PROMPT": api prompt, "EXTRA_PNGINFO": {...}, "UNIQUE_ID": id}
    report_progress       (value, total, preview or None) -> None; the executor turns it into websocket messages
    is_interrupted        () -> bool; True once this prompt was interrupted
    """

    node_id: str
    prompt_id: str
    services: Services
    hidden: Mapping[str, Any] = field(default_factory=dict)
    report_progress: Callable[[int, int, Preview | None], None] = lambda value, total, preview: None
    is_interrupted: Callable[[], bool] = lambda: False

    def progress(self, value: int, total: int, preview: Preview | None = None) -> None:
        """Report progress (and optionally a preview); also the place where a long run notices an interrupt."""
        self.check_interrupted()
        self.report_progress(value, total, preview)

    def check_interrupted(self) -> None:
        if self.is_interrupted():
            raise Interrupted(f"prompt {self.prompt_id} was interrupted at node {self.node_id}")
