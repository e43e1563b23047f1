"""Msgpack frames both ways against wse-server, from Python (PROTOCOL.md section 4).

Two clients: `websockets` with the `msgpack` package, which checks the frames byte by
byte, and the published `wse-client` 2.5.x, which reads `M:` frames when its URL asks
for `format=msgpack` and the `msgpack` package is installed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
import pytest
import wse_client
from conftest import StartServer
from websockets.asyncio.client import ClientConnection, connect

HEARTBEAT = '{"c":"WSE","t":"ping"'


async def next_frame(ws: ClientConnection) -> str | bytes:
    """The next frame that is not the server's heartbeat text."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), timeout=5)
        if isinstance(raw, bytes) or not raw.startswith(HEARTBEAT):
            return raw


async def next_mp(ws: ClientConnection) -> dict[str, Any]:
    """The next frame, which must be `M:` plus a msgpack map."""
    raw = await next_frame(ws)
    assert isinstance(raw, bytes) and raw[:2] == b"M:", raw[:32]
    decoded = msgpack.unpackb(raw[2:], raw=False)
    assert isinstance(decoded, dict)
    return decoded


def packed(message: dict[str, Any], *, prefix: bool = True) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return b"M:" + body if prefix else body


DATA = {
    "i": 7,
    "neg": -3,
    "f": 2.0,
    "half": 0.5,
    "s": "π \"q\"",
    "ok": True,
    "none": None,
    "list": [1, 2.5, "x"],
    "nested": {"k": {"deep": 1}},
    "raw": b"\x00\xff",
}


async def both_ways(url: str) -> None:
    async with (
        connect(url + "?format=msgpack") as sub,
        connect(url + "?format=msgpack") as pub,
        connect(url) as plain,
    ):
        ready = await next_mp(sub)
        assert ready["t"] == "server_ready" and ready["seq"] == 1
        assert list(ready) == ["c", "t", "p", "id", "ts", "v", "seq"]
        assert ready["p"]["details"]["features"]["msgpack"] is True
        await next_mp(pub)
        assert json.loads(await next_frame(plain))["t"] == "server_ready"

        update = {"action": "subscribe", "topics": ["mp"]}
        await sub.send(packed({"t": "subscription_update", "p": update}))
        answer = await next_mp(sub)
        assert answer["p"]["success_topics"] == ["mp"]
        await plain.send(json.dumps({"t": "subscription_update", "p": update}))
        assert json.loads(await next_frame(plain))["p"]["success_topics"] == ["mp"]

        publish = {"topic": "mp", "data": DATA}
        await pub.send(packed({"t": "publish", "p": publish}, prefix=False))
        got = await next_mp(sub)
        as_json = json.loads(await next_frame(plain))
        assert list(got) == ["c", "t", "p", "id", "ts", "v", "tp", "e", "o"]
        stamp = ("e", "o", "id")
        assert [got[k] for k in stamp] == [as_json[k] for k in stamp]
        p = got["p"]
        assert type(p["i"]) is int and type(p["neg"]) is int
        assert type(p["f"]) is float and p["f"] == 2.0
        assert p["list"] == [1, 2.5, "x"] and type(p["list"][1]) is float
        assert p["nested"] == {"k": {"deep": 1}}
        assert (p["s"], p["ok"], p["none"]) == ("π \"q\"", True, None)
        assert p["raw"] == "00ff", "bin arrives as lowercase hex, as JSON has no bytes"
        assert as_json["p"] == p

        # Heartbeats stay JSON text, whatever format the ping came in.
        await sub.send(packed({"t": "ping", "p": {"timestamp": 12}}))
        pong = await next_frame(sub)
        assert isinstance(pong, str) and pong.startswith('{"c":"WSE","t":"PONG","p":')
        assert json.loads(pong)["p"]["client_timestamp"] == 12

        # A malformed message gets an error and the connection goes on.
        await sub.send(b"M:\x92\x01")
        error = await next_mp(sub)
        assert error["t"] == "error" and error["p"]["code"] == "INVALID_MESSAGE"
        await sub.send(packed({"t": "ping", "p": {"timestamp": 13}}))
        assert json.loads(await next_frame(sub))["t"] == "PONG"


def test_msgpack_both_ways_with_the_msgpack_package(wse_server: StartServer) -> None:
    asyncio.run(both_ways(wse_server("--allow-client-publish")))


async def published_client_reads_msgpack(url: str) -> None:
    reader = wse_client.AsyncWSEClient(url + "?format=msgpack")
    writer = wse_client.AsyncWSEClient(url)
    await reader.connect()
    await writer.connect()
    try:
        decoded: list[int] = []
        codec = reader._codec
        assert codec._msgpack is not None, "wse-client found the msgpack package"
        unpack = codec._msgpack.unpack

        def counting_unpack(data: bytes) -> Any:
            decoded.append(len(data))
            return unpack(data)

        codec._msgpack.unpack = counting_unpack  # type: ignore[method-assign]
        await reader.subscribe(["mp.orders"])
        await asyncio.sleep(0.3)
        data = {"order": 42, "price": 1.5}
        await writer.send("publish", {"topic": "mp.orders", "data": data})
        for _ in range(20):
            event = await reader.recv(timeout=5)
            if event.topic == "mp.orders":
                assert event.payload == data
                assert event.offset == 0 and event.epoch is not None
                break
        else:
            pytest.fail("the publication never arrived")
        assert decoded, "the publication did not arrive as an M: frame"
    finally:
        await reader.disconnect()
        await writer.disconnect()


def test_published_wse_client_reads_msgpack_frames(wse_server: StartServer) -> None:
    url = wse_server("--allow-client-publish")
    asyncio.run(published_client_reads_msgpack(url))
