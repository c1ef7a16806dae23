"""The event hub the executor and worker emit into: routing, binary preview frames, slow clients."""

import asyncio
import json
import struct
import threading

from nodes.context import Preview
from server.hub import EventHub
from server.messages import encode_preview, encode_text

JPEG = Preview(b"\xff\xd8\xff\xe0fake-jpeg", "JPEG")


async def drain(channel, count, timeout=2.0):
    return [await asyncio.wait_for(channel.get(), timeout) for _ in range(count)]


async def test_messages_go_to_their_client_and_broadcasts_to_all():
    hub = EventHub()
    alice, bob = hub.connect("alice"), hub.connect("bob")
    hub.send("executing", {"node": "1"}, client_id="alice")
    hub.send("status", {"status": {"exec_info": {"queue_remaining": 0}}}, client_id=None)
    hub.send("executing", {"node": "2"}, client_id="nobody")  # not connected: dropped
    got_alice = [json.loads(m) for m in await drain(alice, 2)]
    got_bob = [json.loads(m) for m in await drain(bob, 1)]
    assert got_alice == [{"type": "executing", "data": {"node": "1"}},
                         {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}]
    assert got_bob[0]["type"] == "status" and bob.pending() == 0


async def test_messages_from_the_worker_thread_arrive_in_order():
    hub = EventHub()
    channel = hub.connect("c")
    thread = threading.Thread(target=lambda: [hub.send("progress", {"value": i}, client_id="c") for i in range(50)])
    thread.start()
    got = [json.loads(m)["data"]["value"] for m in await drain(channel, 50)]
    thread.join()
    assert got == list(range(50))


async def test_preview_frame_format_follows_the_client_feature_flags():
    hub = EventHub()
    modern, legacy = hub.connect("modern"), hub.connect("legacy")
    modern.set_features({"supports_preview_metadata": True})
    meta = {"node_id": "3", "prompt_id": "p", "display_node_id": "3", "parent_node_id": None, "real_node_id": "3"}
    hub.send_preview(JPEG, client_id=None, metadata=meta)
    frame4 = (await drain(modern, 1))[0]
    frame1 = (await drain(legacy, 1))[0]
    kind, length = struct.unpack(">II", frame4[:8])
    assert kind == 4 and json.loads(frame4[8:8 + length]) == {**meta, "image_type": "image/jpeg"}
    assert frame4[8 + length:] == JPEG.data
    assert struct.unpack(">II", frame1[:8]) == (1, 1) and frame1[8:] == JPEG.data


def test_png_and_text_frames():
    frame = encode_preview(Preview(b"png", "PNG"), None)
    assert struct.unpack(">II", frame[:8]) == (1, 2)
    text = encode_text("12", "hello")
    assert struct.unpack(">II", text[:8]) == (3, 2) and text[8:] == b"12hello"


async def test_slow_client_drops_old_previews_but_keeps_messages():
    hub = EventHub(max_previews=2)
    channel = hub.connect("slow")
    for i in range(10):
        hub.send_preview(Preview(bytes([i]), "JPEG"), client_id="slow", metadata={})
        hub.send("progress", {"value": i}, client_id="slow")
    await asyncio.sleep(0)  # let the loop run the deliveries
    frames = await drain(channel, channel.pending())
    previews = [f[-1] for f in frames if isinstance(f, bytes)]
    progress = [json.loads(f)["data"]["value"] for f in frames if isinstance(f, str)]
    assert previews == [8, 9] and progress == list(range(10))


async def test_client_that_falls_far_behind_is_closed_not_waited_for():
    hub = EventHub(max_messages=5)
    channel = hub.connect("stuck")
    for i in range(20):
        hub.send("progress", {"value": i}, client_id="stuck")
    await asyncio.sleep(0)
    assert channel.overflowed and await channel.get() is None


async def test_reconnecting_with_the_same_id_replaces_the_old_channel():
    hub = EventHub()
    old = hub.connect("c")
    new = hub.connect("c")
    hub.send("executing", {"node": "1"}, client_id="c")
    assert await asyncio.wait_for(old.get(), 1) is None
    assert json.loads(await asyncio.wait_for(new.get(), 1))["data"] == {"node": "1"}
    hub.disconnect(new)
    assert hub.clients() == [] and await asyncio.wait_for(new.get(), 1) is None


def test_client_whose_loop_is_gone_is_forgotten():
    loop = asyncio.new_event_loop()
    hub = EventHub()
    hub.connect("ghost", loop)
    loop.close()
    hub.send("status", {}, client_id=None)
    assert hub.clients() == []
