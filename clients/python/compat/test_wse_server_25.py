"""The client, unchanged, against `wse-server` 2.5.1 from PyPI (CPython 3.12).

`host_2x.py` runs the 2.5.1 engine with a minimal application around it; these tests
drive our client against it: subscribe and receive, client publishing, a direct
message round trip, recovery across a reconnect, a restart, E2E, msgpack and the sync
wrapper. Run by `make pyclient-compat` in a venv of its own.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wse_client import (
    AsyncWSEClient,
    ReconnectPolicy,
    SyncWSEClient,
    WSETimeoutError,
    connect,
)

HOST = Path(__file__).with_name("host_2x.py")
FAST = ReconnectPolicy(base_delay=0.2, max_delay=1.0, jitter=0.0)


class Host:
    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/wse"

    def start(self) -> None:
        args = [sys.executable, str(HOST)]
        if self.port:
            args += ["--port", str(self.port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture
def host() -> Iterator[Host]:
    instance = Host()
    instance.start()
    yield instance
    instance.stop()


async def live(client: AsyncWSEClient, publisher: AsyncWSEClient, topic: str) -> None:
    """Publishes probes (n = -1) until one arrives."""
    for _ in range(50):
        await publisher.publish(topic, {"n": -1})
        try:
            event = await client.recv(timeout=0.2)
        except WSETimeoutError:
            continue
        if event.topic == topic:
            return
    pytest.fail("the subscription never took effect")


async def numbers(client: AsyncWSEClient, topic: str, count: int) -> list[int]:
    got: list[int] = []
    while len(got) < count:
        event = await client.recv(timeout=10)
        if event.topic == topic and event.payload["n"] >= 0:
            got.append(event.payload["n"])
    return got


async def quiet(client: AsyncWSEClient, topic: str) -> None:
    """Nothing more of `topic` arrives within half a second (no duplicates)."""
    while True:
        try:
            event = await client.recv(timeout=0.5)
        except WSETimeoutError:
            return
        assert event.topic != topic or event.payload["n"] < 0, event


def test_subscribe_publish_and_receive(host: Host) -> None:
    async def scenario() -> None:
        async with (
            connect(host.url, topics=["news"]) as client,
            connect(host.url) as publisher,
        ):
            assert client.is_ready and client.connection_id
            await live(client, publisher, "news")
            for n in range(5):
                await publisher.publish("news", {"n": n})
            assert await numbers(client, "news", 5) == list(range(5))
            assert client.positions["news"][1] >= 5
            await quiet(client, "news")

    asyncio.run(scenario())


def test_direct_message_round_trip(host: Host) -> None:
    async def scenario() -> None:
        async with connect(host.url) as client:
            await client.send("echo", {"text": "hi"}, correlation_id="c-1")
            event = await client.recv(timeout=5)
            assert (event.type, event.payload) == ("echo", {"text": "hi"})
            assert event.correlation_id == "c-1"
            assert client.get_stats()["seq_gaps"] == 0

    asyncio.run(scenario())


def test_recovers_across_a_reconnect(host: Host) -> None:
    async def scenario() -> None:
        client = await connect(host.url, topics=["orders"], reconnect=FAST)
        publisher = await connect(host.url)
        await live(client, publisher, "orders")
        for n in range(10):
            await publisher.publish("orders", {"n": n})
        got = await numbers(client, "orders", 10)
        await client.force_reconnect()
        for n in range(10, 20):
            await publisher.publish("orders", {"n": n})
        got += await numbers(client, "orders", 10)
        assert got == list(range(20))
        await quiet(client, "orders")
        assert client.get_stats()["reconnects"] == 1
        await publisher.close()
        await client.close()

    asyncio.run(scenario())


def test_resyncs_after_a_crash_and_restart(host: Host) -> None:
    """The 2.5.1 engine's `stop()` closes with 1001, which ends a client for good
    (PROTOCOL.md section 11; see the next test); a crashed server drops the sockets
    without a Close, and the client reconnects and resyncs to the new epoch."""

    async def scenario() -> None:
        client = await connect(host.url, topics=["ticks"], reconnect=FAST)
        publisher = await connect(host.url)
        await live(client, publisher, "ticks")
        for n in range(5):
            await publisher.publish("ticks", {"n": n})
        assert await numbers(client, "ticks", 5) == list(range(5))
        await publisher.close()
        await asyncio.to_thread(host.stop, signal.SIGKILL)
        await asyncio.to_thread(host.start)
        for _ in range(100):
            if client.is_ready and client.get_stats()["reconnects"] >= 1:
                break
            await asyncio.sleep(0.1)
        assert client.is_ready, (client.state, client.get_stats()["last_close_code"])
        assert client.get_stats()["last_close_code"] == 1006
        publisher = await connect(host.url)
        for n in range(5, 10):
            await publisher.publish("ticks", {"n": n})
        assert await numbers(client, "ticks", 5) == list(range(5, 10))
        await quiet(client, "ticks")
        await publisher.close()
        await client.close()

    asyncio.run(scenario())


def test_a_graceful_stop_ends_the_client(host: Host) -> None:
    async def scenario() -> None:
        client = await connect(host.url, reconnect=FAST)
        await asyncio.to_thread(host.stop)
        assert [event async for event in client] == []
        assert client.get_stats()["last_close_code"] == 1001
        assert client.get_stats()["connects"] == 1

    asyncio.run(scenario())


def test_end_to_end_encryption(host: Host) -> None:
    async def scenario() -> None:
        async with (
            connect(host.url, encryption=True, topics=["secret"]) as reader,
            connect(host.url, encryption=True) as writer,
        ):
            assert reader.encrypted and writer.encrypted
            await live(reader, writer, "secret")
            await writer.publish("secret", {"n": 3})
            assert await numbers(reader, "secret", 1) == [3]
            await writer.send("echo", {"sealed": True})
            assert (await writer.recv(timeout=5)).payload == {"sealed": True}

    asyncio.run(scenario())


def test_msgpack_mode(host: Host) -> None:
    async def scenario() -> None:
        async with (
            connect(host.url, format="msgpack", topics=["mp"]) as client,
            connect(host.url) as publisher,
        ):
            await live(client, publisher, "mp")
            await publisher.publish("mp", {"n": 1, "f": 0.5})
            assert await numbers(client, "mp", 1) == [1]
            await client.send("echo", {"packed": [1, 2]})
            event = await client.recv(timeout=5)
            assert event.payload == {"packed": [1, 2]}

    asyncio.run(scenario())


def test_sync_wrapper(host: Host) -> None:
    with SyncWSEClient(host.url) as client:
        client.send("echo", {"sync": 1})
        assert client.recv(timeout=5).payload == {"sync": 1}
        assert client.subscribe(["s"]).success_topics == ("s",)
