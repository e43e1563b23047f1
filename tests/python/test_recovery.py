"""Recovery after a reconnect with the published 2.x client (`wse-client` 2.5.1).

The client keeps the last (epoch, offset) it delivered per topic, re-subscribes with
`recover: true` when it reconnects, drops offsets it has already seen and resyncs to
the position a `recovered: false` answer gives (PROTOCOL.md sections 7 and 11). These
tests check that it does all of that against wse-server: every publication exactly
once and in order across a reconnect, and no recovery loop after an epoch change.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
import wse_client
from conftest import StartServer
from websockets.asyncio.client import ClientConnection, connect
from wse_client.types import ReconnectConfig

TOPIC = "py.recovery"


def metric(url: str, name: str) -> float:
    """The sum of every series called `name` on the server's /metrics."""
    base = url.removeprefix("ws://").removesuffix("/wse")
    with urllib.request.urlopen(f"http://{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def open_publisher(url: str) -> ClientConnection:
    ws = await connect(url)
    ready = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
    assert ready["t"] == "server_ready"
    return ws


async def publish(ws: ClientConnection, n: int) -> None:
    message = {"t": "publish", "p": {"topic": TOPIC, "data": {"n": n}}}
    await ws.send(json.dumps(message))


async def next_n(client: wse_client.AsyncWSEClient) -> int:
    """The `n` of the next publication of TOPIC the client delivers, probes skipped."""
    while True:
        event = await client.recv(timeout=10)
        if event.topic == TOPIC:
            n = event.payload["n"]
            assert isinstance(n, int)
            if n >= 0:
                return n


async def collect(client: wse_client.AsyncWSEClient, count: int) -> list[int]:
    return [await next_n(client) for _ in range(count)]


async def subscribed_client(
    url: str, publisher: ClientConnection, reconnect_delay: float
) -> Any:
    """A 2.x client subscribed to TOPIC; probes (n = -1) are published until one
    arrives, so the subscription is known to be in place."""
    client = wse_client.AsyncWSEClient(
        url, reconnect=ReconnectConfig(base_delay=reconnect_delay, jitter=False)
    )
    await client.connect()
    assert client.recovery_enabled, "server_ready announces recovery"
    await client.subscribe([TOPIC])
    for _ in range(50):
        await publish(publisher, -1)
        try:
            event = await client.recv(timeout=0.2)
        except TimeoutError:
            continue
        if event.topic == TOPIC:
            break
    else:
        pytest.fail("the subscription never took effect")
    return client


async def recover_across_reconnect(url: str) -> None:
    publisher = await open_publisher(url)
    client = await subscribed_client(url, publisher, reconnect_delay=0.3)
    try:
        for n in range(20):
            await publish(publisher, n)
        got = await collect(client, 20)

        # Away: these 20 are published while the client reconnects.
        await client.force_reconnect()
        for n in range(20, 40):
            await publish(publisher, n)
        got += await collect(client, 20)
        assert got == list(range(40)), got

        epoch, offset = client.recovery_state[TOPIC]
        assert len(epoch) == 8
        assert metric(url, "wse_recovered_total") >= 1
        assert metric(url, "wse_replayed_messages_total") >= 1
        # Nothing more: no duplicate replays after the live stream resumed.
        with pytest.raises(TimeoutError):
            await next_n_within(client, 0.5)
        assert client.recovery_state[TOPIC] == (epoch, offset)
    finally:
        await client.disconnect()
        await publisher.close()


async def next_n_within(client: wse_client.AsyncWSEClient, seconds: float) -> int:
    return await asyncio.wait_for(next_n(client), timeout=seconds)


async def resync_after_epoch_change(url: str) -> None:
    publisher = await open_publisher(url)
    client = await subscribed_client(url, publisher, reconnect_delay=3.0)
    try:
        for n in range(5):
            await publish(publisher, n)
        assert await collect(client, 5) == list(range(5))
        old_epoch, _ = client.recovery_state[TOPIC]

        # Away longer than the history TTL: the topic restarts under a new epoch.
        await client.force_reconnect()
        await asyncio.sleep(2.0)
        for n in range(5, 8):
            await publish(publisher, n)

        # Back: recovered false, resynced to the new position, live messages flow.
        for _ in range(100):
            if client.is_ready and metric(url, "wse_not_recovered_total") >= 1:
                break
            await asyncio.sleep(0.1)
        await publish(publisher, 100)
        assert await next_n(client) == 100
        new_epoch, _ = client.recovery_state[TOPIC]
        assert new_epoch != old_epoch
        await publish(publisher, 101)
        assert await next_n(client) == 101
        await asyncio.sleep(0.5)
        assert metric(url, "wse_not_recovered_total") == 1, "no recovery loop"
    finally:
        await client.disconnect()
        await publisher.close()


def test_2x_client_recovers_every_missed_message_once_and_in_order(
    wse_server: StartServer,
) -> None:
    url = wse_server("--allow-client-publish")
    asyncio.run(recover_across_reconnect(url))


def test_2x_client_resyncs_after_an_epoch_change_without_a_recovery_loop(
    wse_server: StartServer,
) -> None:
    flags = ("--allow-client-publish", "--history-ttl", "1", "--ping-interval", "1")
    url = wse_server(*flags)
    asyncio.run(resync_after_epoch_change(url))
