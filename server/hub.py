"""The websocket hub: delivers ComfyUI messages to connected clients, thread-safely.

`EventHub` is the engine's EventSink in a server: the worker thread emits engine events, the hub translates each
into ComfyUI's messages (server/messages.py) and hands them to the clients' channels; route code can also `send` a
raw message. Each websocket connection registers a `ClientChannel` (bound to the aiohttp event loop); a message is
serialised once and handed to each target's loop. Each channel has a bounded queue: a slow client drops older
previews, and a client that falls hopelessly behind on JSON messages is closed (the browser reconnects and
re-syncs) -- the worker is never blocked.

Routing (ComfyUI compatible): `client_id=None` broadcasts to every client; otherwise the message goes to that client
only (dropped if it is not connected). A client gets preview frames of type 4 if it negotiated
`supports_preview_metadata` in its first `feature_flags` message, else type 1.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.engine.events import Event
from server.messages import PreviewFrame, comfy_messages, encode_json, encode_preview


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
    """Thread-safe engine EventSink that delivers to connected websocket clients (see module docstring).

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

    def emit(self, event: Event, *, client_id: str | None) -> None:
        """The engine's events, as ComfyUI's messages."""
        for message in comfy_messages(event):
            if isinstance(message, PreviewFrame):
                self.send_preview(message.preview, client_id=client_id, metadata=message.metadata)
            else:
                self.send(message[0], message[1], client_id=client_id)

    def send(self, event: str, data: Mapping[str, Any], *, client_id: str | None) -> None:
        """A raw JSON message `{"type": event, "data": data}`."""
        targets = self._targets(client_id)
        if targets:
            message = _Message(text=encode_json(event, data))
            for channel in targets:
                self._deliver(channel, message)

    def send_preview(self, preview: Any, *, client_id: str | None, metadata: Mapping[str, Any]) -> None:
        """A preview image (`.data` encoded bytes, `.format` "JPEG" | "PNG") with frame-4 metadata."""
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
