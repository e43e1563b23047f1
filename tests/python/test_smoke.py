"""Smoke test of wse-server with a real Python client (the `websockets` package).

Starts the binary named by the WSE_SERVER environment variable (default
target/release/wse-server) on a free port, connects with `websockets`, and checks
server_ready, a subscription, a publish round-trip and the PONG heartbeat answer.
Run: WSE_SERVER=target/release/wse-server .venv/bin/python -m pytest tests/python
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(os.environ.get("WSE_SERVER", ROOT / "target" / "release" / "wse-server"))


@pytest.fixture
def server_url() -> Iterator[str]:
    if not SERVER.exists():
        pytest.fail(f"wse-server binary not found at {SERVER} (set WSE_SERVER)")
    args = [str(SERVER), "--host", "127.0.0.1", "--port", "0", "--shards", "2"]
    proc = subprocess.Popen(
        [*args, "--allow-client-publish"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        prefix = "wse-server listening on "
        assert line.startswith(prefix), f"unexpected first line {line!r}"
        yield f"ws://{line.removeprefix(prefix)}/wse"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


def test_websockets_client_subscribes_publishes_and_receives(server_url: str) -> None:
    asyncio.run(smoke(server_url))
