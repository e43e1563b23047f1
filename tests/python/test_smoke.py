"""Smoke test of wse-server with a real Python client (the `websockets` package).

Starts the binary named by WSE_SERVER (default target/release/wse-server, see
conftest.py) on a free port, connects with `websockets`, and checks server_ready,
a subscription, a publish round-trip and the PONG heartbeat answer.
Run: WSE_SERVER=target/release/wse-server .venv/bin/python -m pytest tests/python
"""

from __future__ import annotations

import asyncio
import json

from conftest import StartServer
from websockets.asyncio.client import ClientConnection, connect


async def next_message(ws: ClientConnection) -> dict[str, object]:
    """The next JSON message, skipping the server's `ping` heartbeats."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), timeout=5)
        message = json.loads(raw)
        assert isinstance(message, dict)
        if not (message.get("c") == "WSE" and message.get("t") == "ping"):
            return message


async def smoke(url: str) -> None:
    async with connect(url) as subscriber, connect(url) as publisher:
        for ws in (subscriber, publisher):
            ready = await next_message(ws)
            assert ready["t"] == "server_ready"
            assert ready["seq"] == 1

        update = {"action": "subscribe", "topics": ["smoke", "user:*:events"]}
        await subscriber.send(json.dumps({"t": "subscription_update", "p": update}))
        answer = await next_message(subscriber)
        assert answer["t"] == "subscription_update"
        payload = answer["p"]
        assert isinstance(payload, dict)
        assert sorted(payload["success_topics"]) == ["smoke", "user:*:events"]

        for n, topic in enumerate(["smoke", "user:7:events"]):
            publish = {"topic": topic, "data": {"n": n}}
            await publisher.send(json.dumps({"t": "publish", "p": publish}))
            got = await next_message(subscriber)
            assert got["c"] == "U"
            assert got["tp"] == topic
            assert got["p"] == {"n": n}
            assert got["o"] == 0

        await publisher.send(json.dumps({"t": "ping", "p": {"timestamp": 123}}))
        while True:
            raw = await asyncio.wait_for(publisher.recv(), timeout=5)
            assert isinstance(raw, str)
            if not raw.startswith('{"c":"WSE","t":"ping"'):
                break
        assert raw.startswith('{"c":"WSE","t":"PONG","p":')


def test_websockets_client_subscribes_publishes_and_receives(
    wse_server: StartServer,
) -> None:
    asyncio.run(smoke(wse_server("--allow-client-publish")))
