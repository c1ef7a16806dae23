"""Events from the worker and executor to websocket clients, in ComfyUI's message format.

The executor and worker emit into an `EventSink` (`send` for JSON messages, `send_preview` for preview images); they
never touch sockets. Two sinks live here:

  EventHub      thread-safe fan-out to connected clients. Each websocket connection registers a `ClientChannel`
                (bound to the aiohttp event loop); the worker thread serialises a message once and hands it to each
                target's loop with `loop.call_soon_threadsafe`. Each channel has a bounded queue: a slow client drops
                older previews, and a client that falls hopelessly behind on JSON messages is closed (the browser
                reconnects and re-syncs) -- the worker is never blocked.
  EventRecorder an in-memory sink for tests and the CLI.

Routing (ComfyUI compatible): `client_id=None` broadcasts to every client; otherwise the message goes to that client
only (dropped if it is not connected).

Binary frames (ComfyUI `protocol.BinaryEventTypes`): every frame starts with a big-endian uint32 event type.
  1  PREVIEW_IMAGE                uint32 image format (1 = JPEG, 2 = PNG), then the encoded image
  3  TEXT                         uint32 len(node_id), node_id, then the text (utf-8)
  4  PREVIEW_IMAGE_WITH_METADATA  uint32 len(json), the json metadata, then the encoded image
A client gets type 4 if it negotiated `supports_preview_metadata` in its first `feature_flags` message, else type 1.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4

_IMAGE_FORMATS = {"JPEG": (1, "image/jpeg"), "PNG": (2, "image/png")}


class EventSink(Protocol):
    """Where the executor and the worker send events. Implementations must be thread-safe."""

    def send(self, event: str, data: Mapping[str, Any], *, client_id: str | None) -> None:
        """A JSON message `{"type": event, "data": data}`; `client_id=None` broadcasts to all clients."""
        ...

    def send_preview(self, preview: Any, *, client_id: str | None, metadata: Mapping[str, Any]) -> None:
        """A preview image: `preview` has `.data` (encoded bytes) and `.format` ("JPEG" | "PNG");
        `metadata` is {node_id, prompt_id, display_node_id, parent_node_id, real_node_id} (image_type is added)."""
        ...


class NullSink:
    """Drops everything (benchmarks, CLI runs without listeners)."""

    def send(self, event: str, data: Mapping[str, Any], *, client_id: str | None) -> None:
        pass

    def send_preview(self, preview: Any, *, client_id: str | None, metadata: Mapping[str, Any]) -> None:
        pass


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
    """An in-memory EventSink: keeps every message in order (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Recorded] = []

    def send(self, event: str, data: Mapping[str, Any], *, client_id: str | None) -> None:
        with self._lock:
            self._items.append(Recorded("json", event, data, client_id))

    def send_preview(self, preview: Any, *, client_id: str | None, metadata: Mapping[str, Any]) -> None:
        with self._lock:
            self._items.append(Recorded("preview", "preview", dict(metadata), client_id, preview))

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


# ---- hub (websockets) ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Message:
    text: str | None = None  # serialised JSON
    preview: Any = None
    metadata: Mapping[str, Any] | None = None


class ClientChannel:
    """The outgoing queue of one websocket client; lives on the aiohttp event loop.

    The websocket handler loops on `await channel.get()`: a `str` is sent with `send_str`, `bytes` with
    `send_bytes`, and None means the channel was closed (replaced by a newer connection with the same client id,
    disconnected, or overflowed) and the handler should close the socket.
    """

    def __init__(self, client_id: str, loop: asyncio.AbstractEventLoop, *, max_previews: int, max_messages: int):
        self.client_id = client_id
        self.loop = loop
        self.supports_preview_metadata = False
        self.overflowed = False
        self._max_previews = max_previews
        self._max_messages = max_messages
        self._queue: deque[_Message] = deque()
        self._previews = 0
        self._closed = False
        self._ready = asyncio.Event()
        # messages posted from other threads wait in the inbox; one loop callback moves a whole burst at once
        # (a call_soon_threadsafe per message would wake the loop -- a syscall -- for every progress event)
        self._inbox: deque[_Message] = deque()
        self._inbox_lock = threading.Lock()
        self._flush_scheduled = False

    @property
    def closed(self) -> bool:
        return self._closed

    def set_features(self, flags: Mapping[str, Any]) -> None:
        """Record the client's `feature_flags` (only `supports_preview_metadata` matters here)."""
        self.supports_preview_metadata = bool(flags.get("supports_preview_metadata", False))

    def pending(self) -> int:
        return len(self._queue)

    async def get(self) -> str | bytes | None:
        """The next frame to send, waiting if there is none; None once the channel is closed."""
        while not self._queue:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self._closed:
            return None
        message = self._queue.popleft()
        if message.text is not None:
            return message.text
        self._previews -= 1
        return encode_preview(message.preview, message.metadata if self.supports_preview_metadata else None)

    def _post(self, message: _Message) -> bool:
        """Queue a message from any thread; False if the channel's loop is gone."""
        self._inbox.append(message)
        with self._inbox_lock:
            if self._flush_scheduled:
                return True
            self._flush_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # loop closed
            return False
        return True

    # called on the loop thread only
    def _flush(self) -> None:
        with self._inbox_lock:
            self._flush_scheduled = False
        while self._inbox:
            self._push(self._inbox.popleft())

    def _push(self, message: _Message) -> None:
        if self._closed:
            return
        if message.text is None:
            if self._previews >= self._max_previews:
                self._drop_oldest_preview()
            self._previews += 1
        elif len(self._queue) - self._previews >= self._max_messages:
            self.overflowed = True
            self._close()
            return
        self._queue.append(message)
        self._ready.set()

    def _drop_oldest_preview(self) -> None:
        for index, queued in enumerate(self._queue):
            if queued.text is None:
                del self._queue[index]
                self._previews -= 1
                return

    def _close(self) -> None:
        self._closed = True
        self._queue.clear()
        self._previews = 0
        self._ready.set()


class EventHub:
    """Thread-safe EventSink that delivers to connected websocket clients (see module docstring).

    max_previews   previews a client may have waiting; older ones are dropped first
    max_messages   JSON messages a client may have waiting before it is disconnected as too slow
    """

    def __init__(self, *, max_previews: int = 2, max_messages: int = 10_000):
        self._lock = threading.Lock()
        self._channels: dict[str, ClientChannel] = {}
        self._max_previews = max_previews
        self._max_messages = max_messages

    def connect(self, client_id: str, loop: asyncio.AbstractEventLoop | None = None) -> ClientChannel:
        """Register a websocket client (call on the event loop). An older channel with the same id is closed."""
        loop = loop or asyncio.get_running_loop()
        channel = ClientChannel(client_id, loop, max_previews=self._max_previews, max_messages=self._max_messages)
        with self._lock:
            old = self._channels.get(client_id)
            self._channels[client_id] = channel
        if old is not None:
            _call_on_loop(old, old._close)
        return channel

    def disconnect(self, channel: ClientChannel) -> None:
        """Forget a channel (if it is still the current one for its client id) and close it."""
        with self._lock:
            if self._channels.get(channel.client_id) is channel:
                del self._channels[channel.client_id]
        _call_on_loop(channel, channel._close)

    def clients(self) -> list[str]:
        with self._lock:
            return list(self._channels)

    def send(self, event: str, data: Mapping[str, Any], *, client_id: str | None) -> None:
        targets = self._targets(client_id)
        if targets:
            message = _Message(text=encode_json(event, data))
            for channel in targets:
                self._deliver(channel, message)

    def send_preview(self, preview: Any, *, client_id: str | None, metadata: Mapping[str, Any]) -> None:
        targets = self._targets(client_id)
        if targets:
            message = _Message(preview=preview, metadata=dict(metadata))
            for channel in targets:
                self._deliver(channel, message)

    def _targets(self, client_id: str | None) -> list[ClientChannel]:
        with self._lock:
            if client_id is None:
                return list(self._channels.values())
            channel = self._channels.get(client_id)
            return [channel] if channel is not None else []

    def _deliver(self, channel: ClientChannel, message: _Message) -> None:
        if not channel._post(message):
            with self._lock:  # its loop is gone: forget it
                if self._channels.get(channel.client_id) is channel:
                    del self._channels[channel.client_id]


def _call_on_loop(channel: ClientChannel, fn: Any, *args: Any) -> bool:
    try:
        channel.loop.call_soon_threadsafe(fn, *args)
        return True
    except RuntimeError:  # loop closed
        return False
