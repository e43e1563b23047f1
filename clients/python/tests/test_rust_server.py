"""The client against `RustWSEServer`, the engine of our `wse_server` wheel, run in
this process with a drain thread playing the application (issue #8).

`test_integration.py` covers the `wse-server` binary, which has no application; here
the engine hands every connection's events to Python, and the application publishes
and replies from Python. Over loopback sockets: publications from another client and
from the application, the client's own messages as the application drains them, a
direct round trip, recovery across reconnects, a restart on the same port, E2E,
msgpack and the sync wrapper. `make pyclient-test` installs the wheel from
`target/wheels` (`make py-build`) into the venv first.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from wse_server import RustWSEServer

from wse_client import (
    AsyncWSEClient,
    ConnectionState,
    Priority,
    ReconnectPolicy,
    SyncWSEClient,
    WSEConnectionError,
    WSETimeoutError,
    connect,
)

#: One drained event: `(kind, conn_id, data)`.
Event = tuple[str, str | None, Any]


class Application:
    """`RustWSEServer` on 127.0.0.1 and a thread playing its application.

    The thread drains without pause, as an application must (one that stops draining
    holds its clients back: the shards stop reading their sockets), records every
    event, and answers each `echo` message with `send_event`, as a service replies to
    one client. `restart()` stops the engine and starts another on the same port, as a
    redeployed service does; the thread drains the old one's last events and carries
    on with the new one.
    """

    def __init__(self) -> None:
        self.server = engine(0)
        self.server.start()
        self.port = self.server.local_addr()[1]
        self.events: list[Event] = []
        self.failures: list[str] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wse-application")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/wse"

    def wait_for(
        self, done: Callable[[list[Event]], bool], within: float = 5.0
    ) -> list[Event]:
        """Every event drained so far, once `done` holds for them (fails after
        `within` seconds)."""
        with self._changed:
            if not self._changed.wait_for(lambda: done(self.events), within):
                drained, failures = self.events, self.failures
                pytest.fail(f"not seen in {drained} (failures: {failures})")
            return list(self.events)

    async def seen(
        self, done: Callable[[list[Event]], bool], within: float = 5.0
    ) -> list[Event]:
        """`wait_for` from a coroutine: the client's loop keeps running meanwhile."""
        return await asyncio.to_thread(self.wait_for, done, within)

    def metric(self, name: str) -> float:
        """The sum of every series called `name` on the running engine."""
        text = self.server.prometheus_metrics()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " "))
        )

    def restart(self) -> None:
        """`stop()` (every client gets 1012) and a new engine on the same port."""
        self.server.stop()
        deadline = time.monotonic() + 5
        while True:
            server = engine(self.port)
            try:
                server.start()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            self.server = server
            return

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self.server.stop()
        assert not self._thread.is_alive(), "the drain thread did not end"
        assert self.failures == [], self.failures

    def _run(self) -> None:
        server = self.server
        try:
            while not self._stopping.is_set():
                batch = server.drain_inbound(256, 50)
                if batch:
                    self._handle(server, batch)
                elif not server.is_running():
                    # Stopped, and its last events (the disconnects) are drained.
                    server = self.server
                    time.sleep(0.01)
        except Exception as exc:  # reported by close(): the test fails
            self.failures.append(f"drain_inbound: {exc!r}")

    def _handle(self, server: RustWSEServer, batch: list[Event]) -> None:
        for kind, conn_id, data in batch:
            if kind == "msg" and conn_id is not None and data.get("t") == "echo":
                reply = {"t": "echo", "p": data.get("p")}
                if "cid" in data:
                    reply["cid"] = data["cid"]
                try:
                    server.send_event(conn_id, reply)
                except Exception as exc:  # reported by close(): the test fails
                    self.failures.append(f"send_event: {exc!r}")
        with self._changed:
            self.events.extend(batch)
            self._changed.notify_all()


def engine(port: int) -> RustWSEServer:
    """The engine the tests run: two shards on 127.0.0.1, clients may publish."""
    return RustWSEServer("127.0.0.1", port, shards=2, allow_client_publish=True)


@pytest.fixture
def app() -> Iterator[Application]:
    application = Application()
    yield application
    application.close()


def kinds(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e[0] == kind]


def messages(events: list[Event], type: str) -> list[Event]:
    """The `msg` events of message type `type`."""
    return [e for e in events if e[0] == "msg" and e[2].get("t") == type]


def of_connection(events: list[Event], conn_id: str | None) -> list[Event]:
    return [e for e in events if e[1] == conn_id]


async def conn_id_of(app: Application, client: AsyncWSEClient) -> str:
    """The engine's id of `client`'s connection: the application finds it through
    `get_connection_info`, which knows the UUID the client was given."""

    def is_mine(event: Event) -> bool:
        if event[0] != "connect" or event[1] is None:
            return False
        info = app.server.get_connection_info(event[1])
        return info is not None and info["connection_id"] == client.connection_id

    events = await app.seen(lambda ev: any(is_mine(e) for e in ev))
    conn_id = next(e[1] for e in events if is_mine(e))
    assert conn_id is not None
    return conn_id


async def numbers(client: AsyncWSEClient, topic: str, count: int) -> list[int]:
    """The `n` of the next `count` publications of `topic`."""
    got: list[int] = []
    while len(got) < count:
        event = await client.recv(timeout=5)
        if event.topic == topic:
            got.append(event.payload["n"])
    return got


async def assert_quiet(client: AsyncWSEClient, topic: str, seconds: float) -> None:
    """No further publication of `topic` arrives (no duplicates left over)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = await client.recv(timeout=left)
        except WSETimeoutError:
            return
        assert event.topic != topic, event


async def until(check: Callable[[], bool], what: str) -> None:
    """Polls `check` every 50 ms for up to 5 s."""
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_receives_what_another_client_and_the_application_publish(
    app: Application,
) -> None:
    async def scenario() -> None:
        async with (
            connect(app.url, topics=["news"]) as client,
            connect(app.url) as publisher,
        ):
            answer = await client.subscribe(["live_data"])
            assert answer.success_topics == ("live_data",)
            assert client.subscriptions == {"news", "live_data"}
            assert app.server.get_topic_subscriber_count("news") == 1

            # The application first, then the other client: one topic, one order.
            app.server.publish("news", {"n": 0})
            first = await client.recv(timeout=5)
            await publisher.publish("news", {"n": 1})
            second = await client.recv(timeout=5)
            assert (first.topic, first.type) == ("news", "news")
            assert first.payload == {"n": 0}
            assert (second.topic, second.payload) == ("news", {"n": 1})
            assert first.category == "U" and first.id and first.id != second.id
            assert first.epoch is not None and len(first.epoch) == 8
            assert (first.offset, second.offset) == (0, 1)
            assert second.epoch == first.epoch
            assert client.positions["news"] == (first.epoch, 1)

            app.server.publish("live_data", {"n": 2}, event_type="tick")
            tick = await client.recv(timeout=5)
            await publisher.publish("live_data", {"n": 3}, type="tock")
            tock = await client.recv(timeout=5)
            assert [tick.topic, tock.topic] == ["live_data", "live_data"]
            assert (tick.type, tick.payload) == ("tick", {"n": 2})
            assert (tock.type, tock.payload) == ("tock", {"n": 3})
            await assert_quiet(client, "news", 0.3)
            assert publisher.get_stats()["events_delivered"] == 0
            assert client.get_stats()["server_errors"] == 0

        # The application saw both connections come and go.
        events = await app.seen(lambda ev: len(kinds(ev, "disconnect")) == 2)
        assert len(kinds(events, "connect")) == 2

    asyncio.run(scenario())


def test_the_application_drains_what_the_client_sends(app: Application) -> None:
    async def scenario() -> None:
        payload = {"text": "héllo", "list": [1, 2.5, None, True], "nested": {"k": []}}
        async with connect(app.url) as client:
            conn_id = await conn_id_of(app, client)
            await client.send("note", payload, correlation_id="c-1", message_id="m-1")
            await client.send("note", {"n": 1}, priority=Priority.HIGH)
            for n in range(20):
                await client.send("count", {"n": n})
            events = await app.seen(lambda ev: len(messages(ev, "count")) == 20)
        notes = messages(events, "note")
        assert [e[1] for e in notes] == [conn_id, conn_id]
        first, second = notes[0][2], notes[1][2]
        assert (first["p"], first["cid"], first["id"]) == (payload, "c-1", "m-1")
        assert first["v"] == 1 and first["ts"].endswith("Z")
        assert (second["p"], second["pri"]) == ({"n": 1}, int(Priority.HIGH))
        assert [e[2]["p"]["n"] for e in messages(events, "count")] == list(range(20))

        # Closing sends 1000; the disconnect is the connection's last event.
        events = await app.seen(lambda ev: bool(kinds(ev, "disconnect")))
        mine = of_connection(events, conn_id)
        assert mine[0][0] == "connect" and mine[-1][0] == "disconnect"
        assert mine[-1][2]["code"] == 1000

    asyncio.run(scenario())


def test_direct_round_trip_through_the_application(app: Application) -> None:
    async def scenario() -> None:
        async with connect(app.url) as client:
            for n in range(3):
                await client.send("echo", {"n": n}, correlation_id=f"c-{n}")
            replies = [await client.recv(timeout=5) for _ in range(3)]
            assert [(e.type, e.payload, e.correlation_id) for e in replies] == [
                ("echo", {"n": n}, f"c-{n}") for n in range(3)
            ]
            # `send_event` numbers them with the connection's next `seq`.
            sequences = [e.sequence for e in replies if isinstance(e.sequence, int)]
            assert len(sequences) == 3, replies
            assert sequences == list(range(sequences[0], sequences[0] + 3))
            assert replies[0].topic is None and replies[0].id
            stats = client.get_stats()
            assert stats["seq_gaps"] == 0 and stats["server_errors"] == 0

    asyncio.run(scenario())


def test_recovers_across_reconnects_without_duplicates(app: Application) -> None:
    async def scenario() -> None:
        client = await connect(app.url, topics=["orders"], reconnect=FAST)
        for n in range(20):
            app.server.publish("orders", {"n": n})
        got = await numbers(client, "orders", 20)

        # The socket drops; 20 more are published while the client is away.
        await client.force_reconnect()
        for n in range(20, 40):
            app.server.publish("orders", {"n": n})
        got += await numbers(client, "orders", 20)

        # The application closes the connection (1012: back soon); 20 more meanwhile.
        app.server.disconnect(await conn_id_of(app, client), 1012, "maintenance")
        for n in range(40, 60):
            app.server.publish("orders", {"n": n})
        await until(lambda: client.get_stats()["reconnects"] == 2, "the 2nd reconnect")
        got += await numbers(client, "orders", 20)

        assert got == list(range(60))
        await assert_quiet(client, "orders", 0.5)
        stats = client.get_stats()
        assert stats["reconnects"] == 2 and stats["last_close_code"] == 1012
        assert stats["lost"] == 0 and stats["duplicates"] == 0
        assert app.metric("wse_recovered_total") == 2
        assert app.metric("wse_replayed_messages_total") >= 20
        await client.close()

    asyncio.run(scenario())


def test_resyncs_cleanly_after_a_restart_on_the_same_port(app: Application) -> None:
    async def scenario() -> None:
        changes: list[str] = []
        client = await connect(app.url, topics=["ticks"], reconnect=FAST)
        client.on("state_changed", lambda e: changes.append(e.payload["state"]))
        for n in range(10):
            app.server.publish("ticks", {"n": n})
        assert await numbers(client, "ticks", 10) == list(range(10))
        old_epoch = client.positions["ticks"][0]

        # stop(): every client gets 1012; the new engine has no history.
        await asyncio.to_thread(app.restart)
        await until(lambda: client.is_ready, "the reconnect")
        stats = client.get_stats()
        assert stats["reconnects"] == 1 and stats["last_close_code"] == 1012
        for n in range(10, 20):
            app.server.publish("ticks", {"n": n})
        assert await numbers(client, "ticks", 10) == list(range(10, 20))
        assert client.positions["ticks"][0] != old_epoch
        await assert_quiet(client, "ticks", 0.5)
        assert app.metric("wse_not_recovered_total") == 1, "no recovery loop"
        assert "reconnecting" in changes and changes[-1] == "ready"
        assert client.get_stats()["lost"] == 0
        await client.close()

        # The application saw the old connection's 1012 and the new connection.
        events = await app.seen(lambda ev: len(kinds(ev, "disconnect")) == 2)
        codes = [e[2]["code"] for e in kinds(events, "disconnect")]
        assert codes == [1012, 1000]
        assert len(kinds(events, "connect")) == 2

    asyncio.run(scenario())


def test_end_to_end_encryption_round_trip(app: Application) -> None:
    async def scenario() -> None:
        async with (
            connect(app.url, encryption=True, topics=["secret"]) as reader,
            connect(app.url, encryption=True) as writer,
        ):
            assert reader.encrypted and writer.encrypted
            assert reader.server_info["encryption_public_key"]
            await writer.publish("secret", {"n": 7})
            assert await numbers(reader, "secret", 1) == [7]
            app.server.publish("secret", {"n": 8})
            assert await numbers(reader, "secret", 1) == [8]

            # Sealed by the client, opened by the engine, drained as plain JSON;
            # the reply is sealed by the engine and opened by the client.
            await writer.send("echo", {"sealed": True}, correlation_id="e-1")
            reply = await writer.recv(timeout=5)
            assert (reply.type, reply.payload) == ("echo", {"sealed": True})
            assert reply.correlation_id == "e-1"
            events = await app.seen(lambda ev: bool(messages(ev, "echo")))
            [echo] = messages(events, "echo")
            assert echo[2]["p"] == {"sealed": True} and echo[2]["cid"] == "e-1"
            for client in (reader, writer):
                assert client.get_stats()["server_errors"] == 0
                assert client.get_stats()["decode_errors"] == 0

    asyncio.run(scenario())


def test_msgpack_mode(app: Application) -> None:
    async def scenario() -> None:
        before = app.metric("wse_msgpack_frames_out_total")
        async with (
            connect(app.url, format="msgpack", topics=["mp"]) as client,
            connect(app.url) as publisher,
        ):
            app.server.publish("mp", {"n": 0, "f": 1.5, "ok": True, "s": "é"})
            first = await client.recv(timeout=5)
            await publisher.publish("mp", {"n": 1, "none": None, "list": [1, 2]})
            second = await client.recv(timeout=5)
            assert first.payload == {"n": 0, "f": 1.5, "ok": True, "s": "é"}
            assert second.payload == {"n": 1, "none": None, "list": [1, 2]}
            assert (first.offset, second.offset) == (0, 1)

            await client.send("echo", {"packed": [1, 2]}, correlation_id="p-1")
            reply = await client.recv(timeout=5)
            assert (reply.type, reply.payload) == ("echo", {"packed": [1, 2]})
            assert reply.correlation_id == "p-1"
            assert client.get_stats()["decode_errors"] == 0
        # Two publications and the reply reached the client as `M:` frames.
        assert app.metric("wse_msgpack_frames_out_total") >= before + 3

    asyncio.run(scenario())


def test_sync_wrapper(app: Application) -> None:
    with SyncWSEClient(app.url, topics=["sync"]) as client:
        assert client.is_ready and client.state is ConnectionState.READY
        assert client.subscribe(["other"]).success_topics == ("other",)
        assert client.subscriptions == {"sync", "other"}
        app.server.publish("sync", {"n": 1})
        event = client.recv(timeout=5)
        assert (event.topic, event.payload) == ("sync", {"n": 1})

        with SyncWSEClient(app.url) as publisher:
            publisher.publish("other", {"n": 2})
            event = client.recv(timeout=5)
            assert (event.topic, event.payload) == ("other", {"n": 2})

        client.send("note", {"from": "sync"}, correlation_id="s-1")
        client.send("echo", {"n": 3}, correlation_id="s-2")
        reply = client.recv(timeout=5)
        assert (reply.type, reply.payload) == ("echo", {"n": 3})
        assert reply.correlation_id == "s-2"
        [note] = messages(app.wait_for(lambda ev: bool(messages(ev, "note"))), "note")
        assert note[2]["p"] == {"from": "sync"} and note[2]["cid"] == "s-1"
        assert client.unsubscribe(["other"]).success_topics == ("other",)
    client.close()
    with pytest.raises(WSEConnectionError):
        client.recv(timeout=0.1)


FAST = ReconnectPolicy(base_delay=0.2, max_delay=1.0, jitter=0.0)
