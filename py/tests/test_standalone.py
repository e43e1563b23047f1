"""RustWSEServer with real WebSocket clients: the drain facade, calls into the shards.

Every test starts the engine in this process (two shards on 127.0.0.1) and talks to it
through real sockets with the `websockets` client; the drain runs in a worker thread
where clients and drain must overlap, which works because `drain_inbound` releases the
GIL while it waits.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conftest import (
    Event,
    StartServer,
    drain_until,
    kinds,
    metric,
    url,
)
from wse_server import RustWSEServer, ServerBusyError, ServerNotRunningError
from wse_server._wse_accel import msgpack_to_json


async def next_message(ws: ClientConnection, within: float = 5.0) -> dict[str, Any]:
    """The next WSE message (text or binary JSON), skipping the server's heartbeats."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), timeout=within)
        if isinstance(raw, str) and raw.startswith('{"c":"WSE","t":"ping"'):
            continue
        message = json.loads(raw)
        assert isinstance(message, dict)
        return message


async def open_client(server: RustWSEServer, query: str = "") -> ClientConnection:
    ws = await connect(url(server, query))
    ready = await next_message(ws)
    assert ready["t"] == "server_ready"
    return ws


def test_drain_keeps_each_connections_events_in_order_across_shards(
    start_server: StartServer,
) -> None:
    server = start_server()
    clients, per_client = 40, 25

    async def client(n: int) -> None:
        async with connect(url(server)) as ws:
            assert (await next_message(ws))["t"] == "server_ready"
            for i in range(per_client):
                await ws.send(json.dumps({"t": "chat", "p": {"c": n, "i": i}}))
            await ws.send("not json {")
            await ws.send(b"\xde\xad")
        # Leaving the block sends Close 1000.

    async def all_clients() -> None:
        await asyncio.gather(*(client(n) for n in range(clients)))

    runner = threading.Thread(target=asyncio.run, args=(all_clients(),))
    runner.start()
    events = drain_until(
        server, lambda ev: len(kinds(ev, "disconnect")) == clients, within=30
    )
    runner.join(10)

    by_conn: dict[str | None, list[Event]] = {}
    for event in events:
        by_conn.setdefault(event[1], []).append(event)
    assert len(by_conn) == clients
    for conn, mine in by_conn.items():
        names = [e[0] for e in mine]
        assert names[0] == "connect" and names[-1] == "disconnect", (conn, names)
        numbers = [e[2]["p"]["i"] for e in mine if e[0] == "msg"]
        assert numbers == list(range(per_client)), conn
        assert ("raw", conn, "not json {") in mine
        assert ("bin", conn, b"\xde\xad") in mine
        assert mine[-1][2]["code"] == 1000
        assert isinstance(mine[0][2], str), "connect carries the cookie header"

    # Every shard produced events, and the drain took all of them.
    produced = metric(server.prometheus_metrics(), "wse_app_events_total")
    assert produced['{shard="0"}'] > 0 and produced['{shard="1"}'] > 0, produced
    assert sum(produced.values()) == len(events)


#: Envelopes whose drained dict must be exactly what `json.loads` makes of them.
ENVELOPES = [
    '{"t":"m","p":{"n":1,"pad":"xx"}}',
    '{"type":"chat","payload":[1,2.5,-3e2,true,false,null]}',
    '{"t":"esc\\"aped\\u00e9\\ud83d\\ude00","p":"tab\\there \\/ \\\\"}',
    '{"t":"big","p":{"max":18446744073709551615,"min":-9223372036854775808,'
    '"f":1.5e308,"z":-0.0}}',
    '{"t":"dup","p":1,"p":2}',
    '{"t":"deep","p":' + "[" * 20 + "]" * 20 + "}",
    '{"t":"keys","p":{"": 0, "' + "k" * 40 + '": 1, "ключ": 2}}',
    'WSE{"t":"legacy","p":{"c":"WSE"}}',
    '  {"t":"spaces" , "p" : { "a" : [ 1 , 2 ] } }  ',
]

#: Text that starts like an envelope but is not JSON past its type.
NOT_JSON_PAST_THE_TYPE = [
    '{"t":"a","p":[1,}',
    '{"t":"a","p":"\\ud800"}',
    '{"t":"a"} trailing',
]


def test_drained_envelopes_are_what_json_loads_gives(start_server: StartServer) -> None:
    server = start_server()

    async def client() -> None:
        async with connect(url(server)) as ws:
            assert (await next_message(ws))["t"] == "server_ready"
            for text in ENVELOPES + NOT_JSON_PAST_THE_TYPE:
                await ws.send(text)

    asyncio.run(client())
    events = drain_until(server, lambda ev: len(kinds(ev, "disconnect")) == 1)
    data = [(kind, payload) for kind, _, payload in events if kind in ("msg", "raw")]
    expected = [("msg", json.loads(text.removeprefix("WSE"))) for text in ENVELOPES]
    expected += [("raw", text) for text in NOT_JSON_PAST_THE_TYPE]
    assert data == expected
    for (_, drained), (_, loaded) in zip(data, expected, strict=False):
        # Types too: json.loads keeps the last of duplicate keys, -0.0 is a float.
        assert repr(drained) == repr(loaded)


# Msgpack envelopes with every kind of value, and what each one drains as: the values
# json.loads gives for the message's JSON form (bin and ext as hex, other scalar keys as
# their JSON text, NaN and infinities as None).
MSGPACK_ENVELOPES: list[tuple[Any, dict[str, Any]]] = [
    ({"t": "m", "p": {"c": 3, "n": 70000}}, {"t": "m", "p": {"c": 3, "n": 70000}}),
    (
        {"type": "alias", "t": 1, "p": [None, True, False, "é😀", "", [], {}]},
        {"type": "alias", "t": 1, "p": [None, True, False, "é😀", "", [], {}]},
    ),
    (
        {"t": "n", "p": [0, -1, -(2**63), 2**64 - 1, 1.0, -0.0, 0.1]},
        {"t": "n", "p": [0, -1, -(2**63), 2**64 - 1, 1.0, -0.0, 0.1]},
    ),
    (
        {"t": "f", "p": [float("nan"), float("inf"), float("-inf")]},
        {"t": "f", "p": [None, None, None]},
    ),
    (
        {"t": "b", "p": {"bin": b"\x00\xff", "ext": msgpack.ExtType(5, b"ab")}},
        {"t": "b", "p": {"bin": "00ff", "ext": "6162"}},
    ),
    (
        {"t": "k", "p": {7: "i", True: "b", None: "z", 1.5: "f", b"\x01": "x"}},
        {"t": "k", "p": {"7": "i", "true": "b", "null": "z", "1.5": "f", "01": "x"}},
    ),
]


def test_drained_msgpack_is_what_its_json_form_gives(
    start_server: StartServer,
) -> None:
    server = start_server()
    packed = [msgpack.packb(message) for message, _ in MSGPACK_ENVELOPES]
    # 0.5 as a float 32, and a map with the same key twice (the last one stays).
    packed.append(b"\x82\xa1t\xa2f3\xa1p\xca\x3f\x00\x00\x00")
    packed.append(b"\x83\xa1t\xa1d\xa1p\x01\xa1p\x02")
    expected = [drained for _, drained in MSGPACK_ENVELOPES]
    expected += [{"t": "f3", "p": 0.5}, {"t": "d", "p": 2}]

    async def client() -> None:
        async with connect(url(server)) as prefixed:
            assert (await next_message(prefixed))["t"] == "server_ready"
            for body in packed:
                await prefixed.send(b"M:" + body)
        async with connect(url(server, "?format=msgpack")) as bare:
            await bare.recv()
            for body in packed:
                await bare.send(body)

    asyncio.run(client())
    events = drain_until(server, lambda ev: len(kinds(ev, "disconnect")) == 2)
    drained = [payload for _, _, payload in kinds(events, "msg")]
    assert drained == expected + expected
    for body, message in zip(packed + packed, drained, strict=True):
        # Types too (1.0 stays a float, -0.0 keeps its sign), and the same as the JSON
        # the engine's converter gives for the body.
        assert repr(message) == repr(json.loads(msgpack_to_json(body, 1 << 20)))


def test_integers_past_64_bits_are_drained_as_floats(start_server: StartServer) -> None:
    server = start_server()

    async def client() -> None:
        async with connect(url(server)) as ws:
            assert (await next_message(ws))["t"] == "server_ready"
            await ws.send('{"t":"big","p":[18446744073709551616,-9223372036854775809]}')

    asyncio.run(client())
    events = drain_until(server, lambda ev: len(kinds(ev, "disconnect")) == 1)
    assert [e[2]["p"] for e in kinds(events, "msg")] == [[2.0**64, -(2.0**63)]]


def test_stop_wakes_a_drain_waiting_in_another_thread(
    start_server: StartServer,
) -> None:
    server = start_server()
    result: list[list[Event]] = []
    drainer = threading.Thread(
        target=lambda: result.append(server.drain_inbound(10, 20_000))
    )
    drainer.start()
    time.sleep(0.3)
    assert drainer.is_alive(), "the drain should be waiting"
    started = time.monotonic()
    server.stop()
    drainer.join(5)
    assert not drainer.is_alive(), "stop() did not wake the drain"
    assert time.monotonic() - started < 5
    assert result == [[]]
    assert not server.is_running()
    assert server.drain_inbound(10, 1000) == []
    with pytest.raises(ServerNotRunningError):
        server.publish("news", {"a": 1})


def test_stop_while_draining_hands_over_the_last_disconnects(
    start_server: StartServer,
) -> None:
    server = start_server()
    seen: list[Event] = []
    stop_draining = threading.Event()

    def drain() -> None:
        while not stop_draining.is_set():
            seen.extend(server.drain_inbound(64, 50))

    drainer = threading.Thread(target=drain)
    drainer.start()

    async def clients() -> list[int]:
        sockets = [await open_client(server) for _ in range(6)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.stop)
        codes = []
        for ws in sockets:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), timeout=5)
            assert ws.close_code is not None
            codes.append(ws.close_code)
        return codes

    codes = asyncio.run(clients())
    time.sleep(0.3)
    stop_draining.set()
    drainer.join(5)
    assert codes == [1012] * 6
    assert len(kinds(seen, "connect")) == 6
    assert len(kinds(seen, "disconnect")) == 6, (
        "every disconnect reaches the application"
    )


def test_start_on_a_busy_port_raises_oserror() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        server = RustWSEServer("127.0.0.1", port, shards=1)
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            server.start()
        assert not server.is_running()
    finally:
        holder.close()


def test_a_slow_python_drain_loses_nothing(start_server: StartServer) -> None:
    """Small rings and a drain that sleeps: the shards stop reading, TCP holds the
    clients back, and every message still arrives once and in order."""
    server = start_server(max_inbound_queue_size=32, max_inbound_queue_bytes=1 << 20)
    clients, per_client = 8, 1500

    async def client(n: int) -> None:
        async with connect(url(server)) as ws:
            await next_message(ws)
            for i in range(per_client):
                message = {"t": "m", "p": {"c": n, "i": i, "pad": "x" * 64}}
                await ws.send(json.dumps(message))

    async def all_clients() -> None:
        await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(clients))), 60)

    runner = threading.Thread(target=asyncio.run, args=(all_clients(),))
    runner.start()
    next_i: dict[int, int] = {}
    deadline = time.monotonic() + 60
    got = 0
    while got < clients * per_client and time.monotonic() < deadline:
        for kind, _conn, data in server.drain_inbound(16, 50):
            if kind != "msg":
                continue
            c, i = data["p"]["c"], data["p"]["i"]
            assert i == next_i.get(c, 0), f"client {c}: {i} after {next_i.get(c)}"
            next_i[c] = i + 1
            got += 1
        time.sleep(0.002)  # a slow application
    runner.join(60)
    assert got == clients * per_client
    stalls = metric(server.prometheus_metrics(), "wse_app_stalls_total")
    assert sum(stalls.values()) > 0, "the rings never filled: the test proved nothing"


def test_publish_raises_server_busy_when_the_rings_stay_full(
    start_server: StartServer,
) -> None:
    server = start_server(control_capacity=1, publish_timeout=0.000_001)
    errors: list[ServerBusyError] = []

    def publish() -> None:
        deadline = time.monotonic() + 10
        while not errors and time.monotonic() < deadline:
            try:
                server.publish("load", {"pad": "z" * 4096}, priority=3)
            except ServerBusyError as e:
                errors.append(e)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert errors, "no publish ever found the ring full"
    assert "busy" in str(errors[0])
    assert isinstance(errors[0], RuntimeError)


def test_calls_reach_the_client(start_server: StartServer) -> None:
    server = start_server()

    async def scenario() -> None:
        ws = await open_client(server, "?topics=news")
        assert (await next_message(ws))["t"] == "subscription_update"
        [(_, conn, _)] = kinds(
            drain_until(server, lambda ev: bool(kinds(ev, "connect"))), "connect"
        )
        assert conn is not None

        server.send_event(conn, {"t": "order", "p": {"id": 7}, "pri": 8, "cid": "c-1"})
        direct = await next_message(ws)
        assert (direct["t"], direct["p"], direct["cid"]) == ("order", {"id": 7}, "c-1")
        assert direct["seq"] >= 3 and direct["pri"] == 8

        server.send(conn, '{"t":"raw","p":1}')
        assert (await next_message(ws))["t"] == "raw"

        server.publish("news", {"text": "hi"}, event_type="headline")
        publication = await next_message(ws)
        assert (publication["t"], publication["tp"], publication["p"]) == (
            "headline",
            "news",
            {"text": "hi"},
        )
        server.broadcast_local("news", '{"t":"legacy","p":{"n":1},"id":"m-1"}')
        legacy = await next_message(ws)
        assert (legacy["t"], legacy["p"], legacy["id"]) == ("legacy", {"n": 1}, "m-1")
        assert legacy["o"] == publication["o"] + 1
        server.broadcast("news", '{"t":"legacy","p":{"n":2}}')
        assert (await next_message(ws))["p"] == {"n": 2}
        server.broadcast_all('{"t":"all","p":{}}')
        assert (await next_message(ws))["t"] == "all"

        assert server.get_topic_subscriber_count("news") == 1
        assert server.get_connections() == [conn]
        assert server.get_connection_count() == 1
        server.subscribe_connection(conn, ["extra"])
        server.publish("extra", '{"json": "text"}')
        assert (await next_message(ws))["p"] == {"json": "text"}
        server.unsubscribe_connection(conn)
        assert server.get_topic_subscriber_count("news") == 0

        info = server.get_connection_info(conn)
        assert info is not None
        assert info["query"] == "topics=news"
        assert info["peer_addr"][0] == "127.0.0.1"
        assert "host" in info["headers"] and info["user_id"] is None

        server.disconnect(conn, 4000, "bye")
        with pytest.raises(ConnectionClosed):
            await next_message(ws)
        assert ws.close_code == 4000 and ws.close_reason == "bye"
        assert server.get_connection_info(conn) is None

    asyncio.run(scenario())
    assert "wse_connections" in server.prometheus_metrics()
    health = server.health_snapshot()
    assert health["status"] == "ok" and health["running"] is True


def test_require_accept_waits_for_the_application(start_server: StartServer) -> None:
    server = start_server(require_accept=True)

    async def scenario() -> None:
        waiting = await connect(url(server, "?who=alice"))
        refused = await connect(url(server, "?who=mallory"))
        connects = kinds(
            drain_until(server, lambda ev: len(kinds(ev, "connect")) == 2), "connect"
        )
        by_query = {}
        for _, conn, _ in connects:
            assert conn is not None
            info = server.get_connection_info(conn)
            assert info is not None
            by_query[info["query"]] = conn
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(waiting.recv(), timeout=0.3)
        server.accept(by_query["who=alice"], user_id="alice")
        ready = await next_message(waiting)
        assert ready["p"]["details"]["user_id"] == "alice"
        server.reject(by_query["who=mallory"], 4403, "not you")
        with pytest.raises(ConnectionClosed):
            await refused.recv()
        assert refused.close_code == 4403
        await waiting.close()

    asyncio.run(scenario())


def test_snapshot_complete_releases_held_publications(
    start_server: StartServer,
) -> None:
    server = start_server()

    async def scenario() -> None:
        ws = await open_client(server, "?topics=prices")
        await next_message(ws)
        [(_, conn, _)] = kinds(
            drain_until(server, lambda ev: bool(kinds(ev, "connect"))), "connect"
        )
        assert conn is not None
        await ws.send(json.dumps({"t": "sync_request", "p": {"topics": ["prices"]}}))
        drain_until(server, lambda ev: bool(kinds(ev, "msg")))
        server.publish("prices", {"live": 1})
        server.send_event(conn, {"t": "prices_snapshot", "p": {"state": 0}})
        server.snapshot_complete(conn, ["prices"])
        order = [(await next_message(ws))["t"] for _ in range(3)]
        assert order == ["prices_snapshot", "snapshot_complete", "prices"]

    asyncio.run(scenario())


def test_presence_is_queried_and_drained(start_server: StartServer) -> None:
    server = start_server(presence_enabled=True)

    async def scenario() -> None:
        ws = await open_client(server)
        [(_, conn, _)] = kinds(
            drain_until(server, lambda ev: bool(kinds(ev, "connect"))), "connect"
        )
        assert conn is not None
        server.subscribe_connection(conn, ["room"], presence_data={"status": "here"})
        joins = kinds(
            drain_until(server, lambda ev: bool(kinds(ev, "presence_join"))),
            "presence_join",
        )
        assert joins[0][1] is None and joins[0][2]["topic"] == "room"
        assert joins[0][2]["data"] == {"status": "here"}
        member = joins[0][2]["user_id"]
        assert server.presence("room") == {
            member: {"data": {"status": "here"}, "connections": 1}
        }
        assert server.presence_stats("room") == {"num_users": 1, "num_connections": 1}
        server.update_presence(conn, {"status": "away"})
        updates = kinds(
            drain_until(server, lambda ev: bool(kinds(ev, "presence_update"))),
            "presence_update",
        )
        assert updates[0][2]["data"] == {"status": "away"}
        await ws.close()

    asyncio.run(scenario())


def test_topic_acl_limits_what_a_connection_receives(start_server: StartServer) -> None:
    server = start_server()

    async def scenario() -> None:
        ws = await open_client(server)
        [(_, conn, _)] = kinds(
            drain_until(server, lambda ev: bool(kinds(ev, "connect"))), "connect"
        )
        assert conn is not None
        server.set_topic_acl(conn, allow=["chat.*"], deny=["chat.admin"])
        # The call only queues the change; a query to the same shard is answered after
        # it, so once it returns the ACL is in force.
        assert server.get_connection_info(conn) is not None
        await ws.send(
            json.dumps(
                {
                    "t": "subscription_update",
                    "p": {"action": "subscribe", "topics": ["chat.room", "chat.admin"]},
                }
            )
        )
        answer = await next_message(ws)
        assert answer["p"]["success_topics"] == ["chat.room"]
        assert answer["p"]["failed_topics"] == ["chat.admin"]

    asyncio.run(scenario())


def test_calls_check_their_arguments(start_server: StartServer) -> None:
    server = start_server()
    with pytest.raises(ValueError, match="conn_id"):
        server.send("nope", "x")
    with pytest.raises(ValueError, match="priority"):
        server.publish("news", {}, priority=11)
    with pytest.raises(ValueError, match="topic"):
        server.publish("bad topic", {})
    with pytest.raises(ValueError, match="topic"):
        server.publish("news.*", {})
    with pytest.raises(ValueError, match="JSON"):
        server.publish("news", "not json")
    with pytest.raises(ValueError, match="code"):
        server.disconnect("1", 1006)
    with pytest.raises(ValueError, match="max_count"):
        server.drain_inbound(0)
    with pytest.raises(ValueError, match="timeout_ms"):
        server.drain_inbound(1, -1)
    with pytest.raises(ValueError, match="'t'"):
        server.send_event("1", {"p": {}})
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        server.publish("news", {"x": object()})
    with pytest.raises(ValueError, match="message_id"):
        server.publish("news", {}, message_id="")


def test_engine_message_types_cannot_be_published(start_server: StartServer) -> None:
    # A publication of type `ping` or `server_ready` would reach every subscriber as a
    # system message (`c` `WSE`); the type is the topic name when none is given.
    server = start_server()
    with pytest.raises(ValueError, match="reserved"):
        server.publish("room", {"x": 1}, event_type="ping")
    with pytest.raises(ValueError, match="reserved"):
        server.publish("error", {"x": 1})
    with pytest.raises(ValueError, match="reserved"):
        server.broadcast_local("room", '{"t":"server_ready","p":{}}')
    server.publish("room", {"x": 1}, event_type="ping_result")


def test_topic_lists_are_checked_before_they_reach_a_shard(
    start_server: StartServer,
) -> None:
    server = start_server()
    with pytest.raises(ValueError, match='topics: "a b" is invalid'):
        server.subscribe_connection("1", ["ok", "a b"])
    with pytest.raises(ValueError, match="max_subscriptions_per_connection"):
        server.subscribe_connection("1", [f"t{i}" for i in range(1001)])
    with pytest.raises(ValueError, match='deny: "" is invalid'):
        server.set_topic_acl("1", allow=["news.*"], deny=[""])
    with pytest.raises(ValueError, match="publish: 5000 entries"):
        server.set_topic_acl("1", publish=[f"t{i}" for i in range(5000)])
