"""ComfyUI's websocket protocol, in the web layer: the engine's events (server/engine/events.py) translated into the
messages and binary frames ComfyUI's frontend and API clients expect.

JSON messages are `{"type": name, "data": {...}}`. Beyond the engine's facts the frontend wants:
  executing / executed   `display_node` (the node to highlight: the node itself until subgraphs place it elsewhere)
  progress               a `progress_state` message after each `progress` (the new frontend's per-node progress)
  previews               a binary frame, with JSON metadata {node_id, prompt_id, display_node_id, parent_node_id,
                         real_node_id, image_type} for clients that negotiated `supports_preview_metadata`
  history                `meta` per output node ({node_id, display_node, parent_node, real_node_id})

Binary frames (ComfyUI `protocol.BinaryEventTypes`): every frame starts with a big-endian uint32 event type.
  1  PREVIEW_IMAGE                uint32 image format (1 = JPEG, 2 = PNG), then the encoded image
  3  TEXT                         uint32 len(node_id), node_id, then the text (utf-8)
  4  PREVIEW_IMAGE_WITH_METADATA  uint32 len(json), the json metadata, then the encoded image
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.engine.events import Event, Executed, ExecutionCached, Executing, Progress, QueueStatus

PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4

_IMAGE_FORMATS = {"JPEG": (1, "image/jpeg"), "PNG": (2, "image/png")}


# ---- engine events -> ComfyUI messages ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PreviewFrame:
    """A preview image to send as a binary frame, with the metadata of frame type 4."""

    preview: Any
    metadata: Mapping[str, Any]


def comfy_messages(event: Event) -> list[tuple[str, dict[str, Any]] | PreviewFrame]:
    """The websocket messages of one engine event, in order: (type, data) pairs and preview frames."""
    if isinstance(event, QueueStatus):
        return [("status", {"status": {"exec_info": {"queue_remaining": event.queue_remaining}}})]
    if isinstance(event, Executing):
        if event.node is None:
            return [("executing", {"node": None, "prompt_id": event.prompt_id})]
        return [("executing", {"node": event.node, "display_node": _display(event), "prompt_id": event.prompt_id})]
    if isinstance(event, Executed):
        return [("executed", {"node": event.node, "display_node": _display(event), "output": event.output,
                              "prompt_id": event.prompt_id})]
    if isinstance(event, ExecutionCached):
        return [("execution_cached", {"nodes": list(event.nodes), "prompt_id": event.prompt_id,
                                      "timestamp": event.timestamp})]
    if isinstance(event, Progress):
        node, prompt_id, place = event.node, event.prompt_id, event.place
        display, parent, real = (place.display_node, place.parent_node, place.real_node) if place \
            else (node, None, node)
        messages: list[tuple[str, dict[str, Any]] | PreviewFrame] = [
            ("progress", {"value": event.value, "max": event.max, "prompt_id": prompt_id, "node": node}),
            ("progress_state", {"prompt_id": prompt_id, "nodes": {node: {
                "value": event.value, "max": event.max, "state": "running", "node_id": node, "prompt_id": prompt_id,
                "display_node_id": display, "parent_node_id": parent, "real_node_id": real}}})]
        if event.preview is not None:
            messages.append(PreviewFrame(event.preview, {"node_id": node, "prompt_id": prompt_id,
                                                         "display_node_id": display, "parent_node_id": parent,
                                                         "real_node_id": real}))
        return messages
    return [(event.name, event.fields())]


def _display(event: Executing | Executed) -> str | None:
    return event.place.display_node if event.place is not None else event.node


def history_meta(outputs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The history's `meta` for a prompt's output nodes."""
    return {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
            for node_id in outputs}


# ---- binary frames ----------------------------------------------------------------------------------------------
def image_type(preview: Any) -> str:
    """The MIME type of a preview (`image/jpeg` or `image/png`)."""
    return _IMAGE_FORMATS.get(str(getattr(preview, "format", "JPEG")).upper(), _IMAGE_FORMATS["JPEG"])[1]


def encode_preview(preview: Any, metadata: Mapping[str, Any] | None) -> bytes:
    """A preview frame: type 4 with JSON metadata when `metadata` is given, else the legacy type 1."""
    data: bytes = preview.data
    if metadata is not None:
        meta = json.dumps({**metadata, "image_type": image_type(preview)}).encode()
        return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + data
    code = _IMAGE_FORMATS.get(str(getattr(preview, "format", "JPEG")).upper(), _IMAGE_FORMATS["JPEG"])[0]
    return struct.pack(">II", PREVIEW_IMAGE, code) + data


def encode_text(node_id: str, text: str) -> bytes:
    """A progress-text frame (type 3)."""
    node = node_id.encode()
    return struct.pack(">II", TEXT, len(node)) + node + text.encode()


def encode_json(event: str, data: Mapping[str, Any]) -> str:
    return json.dumps({"type": event, "data": data}, default=str)


# ---- recorder (tests) ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recorded:
    """One recorded event. `kind` is "json" or "preview"; for previews `event` is "preview" and `data` the metadata."""

    kind: str
    event: str
    data: Mapping[str, Any]
    client_id: str | None
    preview: Any = None


class EventRecorder:
    """An engine EventSink that records the ComfyUI messages each event becomes, in order (thread-safe): what a
    websocket client would receive, for tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Recorded] = []

    def emit(self, event: Event, *, client_id: str | None) -> None:
        with self._lock:
            for message in comfy_messages(event):
                if isinstance(message, PreviewFrame):
                    self._items.append(Recorded("preview", "preview", dict(message.metadata), client_id,
                                                message.preview))
                else:
                    self._items.append(Recorded("json", message[0], message[1], client_id))

    @property
    def items(self) -> list[Recorded]:
        with self._lock:
            return list(self._items)

    def types(self, *, prompt_id: str | None = None) -> list[str]:
        """Event types in order, optionally only those whose data names `prompt_id`."""
        return [i.event for i in self.items if prompt_id is None or i.data.get("prompt_id") == prompt_id]

    def of_type(self, event: str) -> list[Mapping[str, Any]]:
        return [i.data for i in self.items if i.event == event]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


