"""The websocket, /ws?clientId=ID (also /api/ws): ComfyUI's protocol on top of server/hub.py's EventHub.

On connect: register a ClientChannel under the client id (a reconnect with the same id replaces the older socket),
send `status` with the `sid`, and, when this client's prompt is running, `executing` for its current node so the
editor restores its running state. The client's first text message may be `feature_flags`; the server stores them
(type-4 preview frames need `supports_preview_metadata`) and answers with its own. Everything else inbound is ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid

from aiohttp import WSMsgType, web

from server.engine.events import Executing
from server.hub import ClientChannel
from server.messages import comfy_messages, encode_json
from server.routes.info import feature_flags
from server.routes.state import STATE

log = logging.getLogger("chisel.server")
routes = web.RouteTableDef()
CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    engine = state.engine
    requested = request.query.get("clientId")
    client_id = requested if requested and CLIENT_ID.match(requested) else uuid.uuid4().hex
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1024 * 1024)
    await ws.prepare(request)
    channel = state.hub.connect(client_id)
    sender = asyncio.create_task(_pump(channel, ws))
    try:
        await ws.send_str(encode_json("status", {"status": {"exec_info": {"queue_remaining":
                                                                           engine.queue_remaining()}},
                                                 "sid": client_id}))
        for running in engine.worker.running_prompts():
            if running.client_id == client_id and running.node_id is not None:
                # a client that reconnects mid-prompt learns which node runs
                for kind, data in comfy_messages(Executing(running.node_id, running.prompt_id)):
                    await ws.send_str(encode_json(kind, data))
        first = True
        async for message in ws:
            if message.type == WSMsgType.TEXT and first:
                first = False
                flags = _feature_flags(message.data)
                if flags is not None:
                    channel.set_features(flags)
                    await ws.send_str(encode_json("feature_flags", feature_flags(state)))
            elif message.type == WSMsgType.ERROR:
                break
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        state.hub.disconnect(channel)
        sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, Exception):
            pass
        if not ws.closed:
            await ws.close()
    return ws


async def _pump(channel: ClientChannel, ws: web.WebSocketResponse) -> None:
    """Send what the hub queues for this client until the channel closes (replaced, disconnected, overflowed)."""
    try:
        while True:
            frame = await channel.get()
            if frame is None:
                break
            if isinstance(frame, str):
                await ws.send_str(frame)
            else:
                await ws.send_bytes(frame)
    except (ConnectionResetError, RuntimeError) as exc:  # the socket went away mid-send
        log.debug("websocket %s: send failed: %s", channel.client_id, exc)
    if not ws.closed:
        await ws.close()


def _feature_flags(text: str) -> dict | None:
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if isinstance(message, dict) and message.get("type") == "feature_flags" and isinstance(message.get("data"), dict):
        return message["data"]
    return None
