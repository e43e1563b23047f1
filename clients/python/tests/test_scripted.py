"""Client behaviour the real server does not produce on demand, against a scripted
peer on a real socket: close codes it never sends (1000, 1008, 4300, ...), `batch`
messages, a hole in a live topic that recovery must fill, and a connection that goes
silent without closing (case C10).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from wse_client import (
    AsyncWSEClient,
    ConnectionState,
    ReconnectPolicy,
    WSEAuthError,
    WSEClosedError,
    WSEConnectionError,
    WSEProtocolError,
    WSETimeoutError,
    connect,
)

Script = Callable[[ServerConnection], Awaitable[None]]
FAST = ReconnectPolicy(base_delay=0.05, max_delay=0.2, jitter=0.0)


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[str]:
    async with serve(script, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/wse"


async def handshake(ws: ServerConnection, seq: list[int] | None = None) -> None:
    """server_ready, then answer client_hello and the first subscription."""
    await ws.send(json.dumps({"t": "server_ready", "p": {"details": {}}, "seq": 1}))
    while True:
        message = json.loads(await ws.recv())
        if message["t"] == "client_hello":
            await ws.send(json.dumps({"t": "server_hello", "p": {}, "seq": 2}))
            if seq is None:
                return
        if message["t"] == "subscription_update":
            await answer(ws, message)
            return


async def answer(ws: ServerConnection, request: dict[str, Any], **extra: Any) -> None:
    body: dict[str, Any] = {"action": "subscribe"}
    body["success_topics"] = request["p"]["topics"]
    body |= {"failed_topics": [], "recovery": {}, **extra}
    reply = {"t": "subscription_update", "p": body, "cid": request.get("cid")}
    await ws.send(json.dumps(reply))


def publication(topic: str, offset: int, epoch: str = "e0000001") -> str:
    envelope: dict[str, Any] = {"t": topic, "p": {"n": offset}}
    envelope["id"] = f"{epoch}-{offset}"
    envelope |= {"tp": topic, "e": epoch, "o": offset}
    return json.dumps(envelope)


@pytest.mark.parametrize("code", [1000, 1001, None])
def test_normal_close_stops_at_once(code: int | None) -> None:
    async def script(ws: ServerConnection) -> None:
        await handshake(ws)
        await ws.send(json.dumps({"t": "bye", "p": {}}))
        if code is None:
            ws.protocol.send_close()  # a Close frame without a status code
            ws.send_data()
            await ws.wait_closed()
        else:
            await ws.close(code)

    async def scenario() -> None:
        async with scripted(script) as url:
            client = await connect(url, reconnect=FAST, heartbeat_timeout=60)
            started = asyncio.get_running_loop().time()
            events = [event.type async for event in client]
            assert events == ["bye"]
            assert asyncio.get_running_loop().time() - started < 2
            assert client.state is ConnectionState.CLOSED
            assert client.get_stats()["connects"] == 1
            with pytest.raises(WSEClosedError):
                await client.recv()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("code", "error"),
    [(1008, WSEAuthError), (4401, WSEAuthError), (1009, WSEProtocolError)],
)
def test_terminal_close_codes_stop_with_an_error(
    code: int, error: type[Exception]
) -> None:
    async def script(ws: ServerConnection) -> None:
        await handshake(ws)
        await ws.close(code)

    async def scenario() -> None:
        async with scripted(script) as url:
            client = await connect(url, reconnect=FAST)
            with pytest.raises(error):
                async for _ in client:
                    pass
            assert client.state is ConnectionState.CLOSED
            with pytest.raises(error):
                await client.send("late")

    asyncio.run(scenario())


def test_transient_closes_reconnect_and_drain_goes_elsewhere() -> None:
    attempts: list[int] = []

    async def script(ws: ServerConnection) -> None:
        attempts.append(len(attempts))
        await handshake(ws)
        await asyncio.sleep(0.2)  # let the client finish its handshake
        if len(attempts) == 1:
            await ws.close(4300)  # lame duck
        elif len(attempts) == 2:
            await ws.close(1012)
        else:
            await ws.send(json.dumps({"t": "hello", "p": {}}))
            await ws.wait_closed()

    async def scenario() -> None:
        async with scripted(script) as url:
            client = await connect(url, reconnect=FAST)
            event = await client.recv(timeout=5)
            assert event.type == "hello"
            while not client.is_ready:
                await asyncio.sleep(0.01)
            stats = client.get_stats()
            assert stats["reconnects"] == 2 and stats["last_close_code"] == 1012
            await client.close()

    asyncio.run(scenario())


def test_gives_up_after_max_attempts() -> None:
    async def script(ws: ServerConnection) -> None:
        await handshake(ws)
        await ws.close(1011)

    async def scenario() -> None:
        async with scripted(script) as url:
            policy = ReconnectPolicy(base_delay=0.01, max_attempts=2, jitter=0.0)
            client = await connect(url, reconnect=policy)
            with pytest.raises(WSEConnectionError, match="gave up after 2"):
                await client.recv(timeout=10)
        async with scripted(script) as url:
            client = await connect(url, reconnect=False)
            with pytest.raises(WSEConnectionError, match="reconnect is off"):
                await client.recv(timeout=10)

    asyncio.run(scenario())


def test_batches_are_unpacked_in_order() -> None:
    async def script(ws: ServerConnection) -> None:
        await handshake(ws)
        messages: list[Any] = [json.loads(publication("b", n)) for n in range(3)]
        messages.append('{"t":"as_text","p":{}}')
        messages.append(17)  # not an envelope: counted and skipped
        await ws.send(json.dumps({"t": "batch", "p": {"messages": messages}}))
        await ws.send(json.dumps({"t": "batch", "p": {}}))
        await ws.send("definitely not json")
        await ws.send(json.dumps({"t": "after", "p": {}}))
        await ws.wait_closed()

    async def scenario() -> None:
        async with scripted(script) as url, connect(url) as client:
            kinds = [(await client.recv(timeout=5)).type for _ in range(5)]
            assert kinds == ["b", "b", "b", "as_text", "after"]
            assert client.get_stats()["decode_errors"] == 3

    asyncio.run(scenario())


def test_live_gap_is_recovered_in_order() -> None:
    """Offsets 0, 1, 3, 4 arrive; the client holds 3 and 4, asks for recovery from
    1, gets 2 (and a repeated 3) replayed, then delivers 0..4 once and in order."""
    requests: list[dict[str, Any]] = []

    async def script(ws: ServerConnection) -> None:
        await handshake(ws, seq=[])
        for offset in (0, 1, 3, 4):
            await ws.send(publication("g", offset))
        request = json.loads(await ws.recv())
        requests.append(request)
        await ws.send(publication("g", 2))
        await ws.send(publication("g", 3))
        recovery = {"g": {"epoch": "e0000001", "offset": 3, "recovered": True}}
        await answer(ws, request, recovery=recovery)
        await ws.send(publication("g", 5))
        await ws.wait_closed()

    async def scenario() -> None:
        async with scripted(script) as url:
            client = await connect(url, topics=["g"])
            got = [(await client.recv(timeout=5)).offset for _ in range(6)]
            assert got == [0, 1, 2, 3, 4, 5]
            body = requests[0]["p"]
            assert body["recover"] is True
            assert body["recovery"] == {"g": {"epoch": "e0000001", "offset": 1}}
            stats = client.get_stats()
            assert stats["topic_gaps"] == 1 and stats["lost"] == 0
            assert stats["duplicates"] >= 1 and stats["held"] == 2
            await client.close()

    asyncio.run(scenario())


def test_seq_gaps_are_reported_without_holding_back() -> None:
    async def script(ws: ServerConnection) -> None:
        await handshake(ws)
        for seq in (3, 6):
            await ws.send(json.dumps({"t": "direct", "p": {"seq": seq}, "seq": seq}))
        await ws.wait_closed()

    async def scenario() -> None:
        gaps: list[int] = []
        async with scripted(script) as url:
            client = AsyncWSEClient(url)
            client.on("sequence_gap", lambda e: gaps.append(e.payload["missing"]))
            await client.connect()
            assert [(await client.recv(timeout=5)).sequence for _ in range(2)] == [3, 6]
            assert gaps == [2]
            assert client.get_stats()["seq_gaps"] == 2
            await client.close()

    asyncio.run(scenario())


def test_silent_connection_is_dropped_and_reconnected() -> None:
    """Case C10: the peer stops sending anything but keeps TCP open."""
    connections: list[int] = []

    async def script(ws: ServerConnection) -> None:
        connections.append(1)
        await handshake(ws)
        if len(connections) == 1:
            await ws.wait_closed()  # silent: no frames, no Close, until dropped
        else:
            await ws.send(json.dumps({"t": "back", "p": {}}))
            await ws.wait_closed()

    async def scenario() -> None:
        async with scripted(script) as url:
            client = await connect(
                url, reconnect=FAST, heartbeat_interval=0.1, heartbeat_timeout=0.5
            )
            event = await client.recv(timeout=5)
            assert event.type == "back"
            while not client.is_ready:
                await asyncio.sleep(0.01)
            stats = client.get_stats()
            assert stats["reconnects"] == 1 and stats["last_close_code"] == 1006
            assert stats["pings_sent"] >= 3
            await client.close()

    asyncio.run(scenario())


def test_server_errors_reach_the_caller_and_the_queue() -> None:
    async def script(ws: ServerConnection) -> None:
        await handshake(ws)
        request = json.loads(await ws.recv())
        error = {"code": "FORBIDDEN", "message": "no", "recoverable": False}
        await ws.send(json.dumps({"t": "error", "p": error, "cid": request["cid"]}))
        await ws.wait_closed()

    async def scenario() -> None:
        async with scripted(script) as url, connect(url) as client:
            with pytest.raises(Exception, match="FORBIDDEN"):
                await client.subscribe(["x"])
            event = await client.recv(timeout=5)
            assert event.type == "error" and event.payload["code"] == "FORBIDDEN"

    asyncio.run(scenario())


def test_handshake_that_never_completes_times_out() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.wait_closed()  # never sends server_ready

    async def scenario() -> None:
        async with scripted(script) as url:
            client = AsyncWSEClient(url, request_timeout=0.3, open_timeout=0.3)
            with pytest.raises(WSETimeoutError, match="handshake step"):
                await client.connect()

    asyncio.run(scenario())
