"""Router mode under a real uvicorn, with real WebSocket clients.

Each test builds a FastAPI application around `create_wse_router`, serves it with
uvicorn on a free loopback port in a thread of its own, and talks to it over real
sockets: the `websockets` client, the published `wse-client` 2.5.1, and plain HTTP
(urllib) for the application's own endpoints that publish.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

import msgpack
import pytest
import uvicorn
import wse_client
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import JWT_SECRET, StartServer, hs256_token
from wse_server import WSEConfig, WSERouter, create_wse_router

T = TypeVar("T")


class Served:
    """A FastAPI app with a WSE router, served by uvicorn in a background thread."""

    def __init__(self, app: FastAPI, router: WSERouter) -> None:
        self.app = app
        self.router = router
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/wse"

    def http(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs one of the router's calls on the application's loop, where they go."""
        loop = self.server.servers[0].get_loop()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


Serve = Callable[..., Served]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Builds and serves an app: `serve(config, setup=lambda app, wse: ...)`."""
    running: list[Served] = []

    def start(
        config: WSEConfig | None = None,
        setup: Callable[[FastAPI, WSERouter], None] | None = None,
    ) -> Served:
        app = FastAPI()
        wse = create_wse_router(config or WSEConfig())
        app.include_router(wse, prefix="/wse")
        if setup is not None:
            setup(app, wse)
        served = Served(app, wse)
        running.append(served)
        return served

    yield start
    for served in running:
        served.stop()


async def next_message(ws: ClientConnection, within: float = 5.0) -> dict[str, Any]:
    """The next message in any form (text, `C:`, `M:`), skipping heartbeats."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), timeout=within)
        if isinstance(raw, str):
            if raw.startswith('{"c":"WSE","t":"ping"'):
                continue
            message = json.loads(raw)
        elif raw.startswith(b"C:"):
            message = json.loads(zlib.decompress(raw[2:]))
        elif raw.startswith(b"M:"):
            message = msgpack.unpackb(raw[2:])
        else:
            message = json.loads(raw)
        assert isinstance(message, dict)
        return message


async def read_until_closed(ws: ClientConnection) -> None:
    while True:
        await next_message(ws)


def subscribe(topics: list[str], **extra: Any) -> str:
    payload = {"action": "subscribe", "topics": topics, **extra}
    return json.dumps({"t": "subscription_update", "p": payload})


def publish_endpoint(app: FastAPI, wse: WSERouter) -> None:
    @app.post("/orders/{order_id}/ship")
    async def ship(order_id: int) -> dict[str, int]:
        delivered = await wse.publish(
            "notifications", {"text": "Order shipped!", "order_id": order_id}
        )
        return {"delivered": delivered}


def test_publish_from_a_request_handler_reaches_subscribers(serve: Serve) -> None:
    served = serve(setup=publish_endpoint)
    assert served.http("GET", "/wse/health")["status"] == "ok"

    async def scenario() -> None:
        async with connect(served.ws_url) as ws:
            ready = await next_message(ws)
            assert ready["t"] == "server_ready" and ready["seq"] == 1
            assert ready["p"]["details"]["features"]["rust_transport"] is False
            await ws.send(subscribe(["notifications"]))
            answer = await next_message(ws)
            assert answer["p"]["success_topics"] == ["notifications"]
            for order in (41, 42):
                reply = await asyncio.to_thread(
                    served.http, "POST", f"/orders/{order}/ship"
                )
                assert reply == {"delivered": 1}
            first, second = await next_message(ws), await next_message(ws)
            assert first["p"] == {"text": "Order shipped!", "order_id": 41}
            assert (first["tp"], first["c"], first["o"]) == ("notifications", "U", 0)
            assert (second["o"], second["e"]) == (1, first["e"])
            assert "seq" not in first

            await ws.send(json.dumps({"t": "ping", "p": {"timestamp": 1}}))
            raw = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(raw, str) and raw.startswith('{"c":"WSE","t":"PONG","p":')

    asyncio.run(scenario())


class SlowSnapshots:
    """A snapshot provider that takes its time, so publications race it."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.calls: list[tuple[str | None, list[str]]] = []

    async def get_snapshot(
        self, user_id: str | None, topics: list[str]
    ) -> Mapping[str, Any]:
        self.calls.append((user_id, topics))
        self.asked.set()
        await asyncio.sleep(0.4)
        return {topic: {"state": f"{topic}-now"} for topic in topics}


def test_snapshots_arrive_before_any_later_update(serve: Serve) -> None:
    provider = SlowSnapshots()
    served = serve(WSEConfig(snapshot_provider=provider), setup=publish_endpoint)

    async def scenario() -> None:
        async with connect(served.ws_url) as ws:
            await next_message(ws)
            await ws.send(subscribe(["notifications"]))
            assert (await next_message(ws))["t"] == "subscription_update"
            # The provider is still working: this publication must wait for it.
            reply = await asyncio.to_thread(served.http, "POST", "/orders/7/ship")
            assert reply == {"delivered": 1}
            order = [await next_message(ws) for _ in range(3)]
            assert [m["t"] for m in order] == [
                "notifications_snapshot",
                "snapshot_complete",
                "notifications",
            ]
            assert order[0]["c"] == "S"
            assert order[0]["p"] == {"state": "notifications-now"}
            assert order[1]["p"] == {"topics": ["notifications"], "count": 1}
            assert order[2]["p"]["order_id"] == 7

    asyncio.run(scenario())
    assert provider.calls == [(None, ["notifications"])]


def test_jwt_cookie_auth_and_the_published_client(serve: Serve) -> None:
    config = WSEConfig(jwt_secret=JWT_SECRET, default_topics=["news"])

    def setup(app: FastAPI, wse: WSERouter) -> None:
        @app.post("/news")
        async def news() -> dict[str, int]:
            return {"delivered": await wse.publish("news", {"headline": "hi"})}

        @app.post("/users/{user_id}/poke")
        async def poke(user_id: str) -> dict[str, int]:
            return {"sent": await wse.send_to_user(user_id, "poke", {"n": 1})}

    served = serve(config, setup=setup)

    async def scenario() -> None:
        client = wse_client.AsyncWSEClient(served.ws_url, token=hs256_token("alice"))
        await client.connect()
        try:
            deadline = time.monotonic() + 5
            while not client.is_ready:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await client.subscribe(["orders"])
            await asyncio.sleep(0.2)
            assert await asyncio.to_thread(served.http, "POST", "/news") == {
                "delivered": 1
            }
            poked = await asyncio.to_thread(served.http, "POST", "/users/alice/poke")
            assert poked == {"sent": 1}
            seen: dict[str, Any] = {}
            while len(seen) < 2:
                event = await client.recv(timeout=5)
                seen[event.type] = event.payload
            assert seen == {"news": {"headline": "hi"}, "poke": {"n": 1}}
        finally:
            await client.disconnect()

        async with connect(served.ws_url) as ws:
            error = await next_message(ws)
            assert (error["t"], error["p"]["code"]) == ("error", "AUTH_REQUIRED")
            with pytest.raises(ConnectionClosed):
                await next_message(ws)
            assert ws.close_code == 4401
        forged = {"Cookie": f"access_token={hs256_token('bob')}x"}
        async with connect(served.ws_url, additional_headers=forged) as ws:
            assert (await next_message(ws))["p"]["code"] == "AUTH_FAILED"

    asyncio.run(scenario())


def test_auth_handler_origins_acl_and_client_publish(serve: Serve) -> None:
    async def auth(websocket: Any) -> str | None:
        user: str | None = websocket.query_params.get("user")
        return user

    config = WSEConfig(
        auth_handler=auth,
        allowed_origins=["https://app.example"],
        allow_client_publish=True,
    )
    served = serve(config)

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await connect(
                served.ws_url + "?user=a",
                origin="https://evil.example",  # type: ignore[arg-type]
            )
        assert refused.value.response.status_code == 403
        async with connect(served.ws_url) as ws:
            assert (await next_message(ws))["p"]["code"] == "AUTH_FAILED"
        async with (
            connect(served.ws_url + "?user=ann") as ann,
            connect(served.ws_url + "?user=bob") as bob,
        ):
            ready = await next_message(ann)
            assert ready["p"]["details"]["user_id"] == "ann"
            await next_message(bob)
            await ann.send(subscribe(["chat.*"]))
            assert (await next_message(ann))["p"]["success_topics"] == ["chat.*"]
            publish = {"topic": "chat.room", "data": {"text": "yo"}, "type": "said"}
            await bob.send(json.dumps({"t": "publish", "p": publish}))
            said = await next_message(ann)
            assert (said["t"], said["tp"], said["p"]) == (
                "said",
                "chat.room",
                {"text": "yo"},
            )
            assert served.router.subscriber_count("chat.room") == 1

    asyncio.run(scenario())


def test_msgpack_compression_and_filters(serve: Serve) -> None:
    def setup(app: FastAPI, wse: WSERouter) -> None:
        @app.post("/trade/{sym}/{size}")
        async def trade(sym: str, size: int) -> dict[str, int]:
            big = {"sym": sym, "size": size, "pad": "x" * 3000}
            return {"delivered": await wse.publish("trades", big)}

    served = serve(setup=setup)

    async def scenario() -> None:
        async with (
            connect(served.ws_url + "?format=msgpack") as packed,
            connect(served.ws_url, compression=None) as plain,
        ):
            await next_message(packed)
            await next_message(plain)
            await packed.send(subscribe(["trades"]))
            criteria = {"trades": {"p.size": {"$gt": 100}}}
            await plain.send(subscribe(["trades"], filters=criteria))
            assert (await next_message(packed))["p"]["success_topics"] == ["trades"]
            answer = await next_message(plain)
            assert answer["p"]["filtered_topics"] == ["trades"]
            for size in (5, 500):
                await asyncio.to_thread(served.http, "POST", f"/trade/AAPL/{size}")
            raw = await asyncio.wait_for(packed.recv(), 5)
            assert isinstance(raw, bytes) and raw.startswith(b"M:")
            assert msgpack.unpackb(raw[2:])["p"]["size"] == 5
            assert (await next_message(packed))["p"]["size"] == 500
            compressed = await asyncio.wait_for(plain.recv(), 5)
            assert isinstance(compressed, bytes) and compressed.startswith(b"C:")
            assert json.loads(zlib.decompress(compressed[2:]))["p"]["size"] == 500

    asyncio.run(scenario())


def test_end_to_end_encryption_with_the_rust_codecs(serve: Serve) -> None:
    served = serve(setup=publish_endpoint)

    async def scenario() -> None:
        async with connect(served.ws_url) as ws:
            await next_message(ws)
            private = ec.generate_private_key(ec.SECP256R1())
            public = private.public_key().public_bytes(
                Encoding.X962, PublicFormat.UncompressedPoint
            )
            hello = {
                "features": {"encryption": True},
                "encryption_public_key": base64.b64encode(public).decode(),
            }
            await ws.send(json.dumps({"t": "client_hello", "p": hello}))
            server_hello = await next_message(ws)
            point = base64.b64decode(server_hello["p"]["encryption_public_key"])
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            key = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=b"wse-encryption/aes-gcm-key",
            ).derive(private.exchange(ec.ECDH(), peer))
            aead = AESGCM(key)
            iv = os.urandom(12)
            sealed = aead.encrypt(iv, subscribe(["notifications"]).encode(), None)
            await ws.send(b"E:" + iv + sealed)
            frame = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(frame, bytes) and frame.startswith(b"E:")
            answer = json.loads(aead.decrypt(frame[2:14], frame[14:], None))
            assert answer["p"]["success_topics"] == ["notifications"]
            await ws.send(json.dumps({"t": "chat", "p": {}}))
            refused = await next_message(ws)
            assert refused["p"]["code"] == "ENCRYPTION_REQUIRED"

    asyncio.run(scenario())


def test_slow_consumer_is_closed_with_4503(serve: Serve) -> None:
    config = WSEConfig(max_outbound_queue=50)

    def setup(app: FastAPI, wse: WSERouter) -> None:
        @app.post("/flood")
        async def flood() -> dict[str, int]:
            # publish never suspends, so the writer cannot run in between.
            delivered = [await wse.publish("t", {"n": n}) for n in range(60)]
            return {"delivered": sum(delivered)}

    served = serve(config, setup=setup)

    async def scenario() -> None:
        async with connect(served.ws_url + "?topics=t") as ws:
            await next_message(ws)
            await next_message(ws)
            await asyncio.to_thread(served.http, "POST", "/flood")
            with pytest.raises(ConnectionClosed):
                await read_until_closed(ws)
            assert ws.close_code == 4503
        assert served.router.counters["slow_consumer"] == 1

    asyncio.run(scenario())


def test_disconnect_refuses_a_close_code_before_closing(serve: Serve) -> None:
    served = serve()
    untyped: Any = served.router

    async def scenario() -> None:
        async with connect(served.ws_url) as ws:
            await next_message(ws)
            (conn_id,) = served.router.connections
            for code in (0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 70000, -1):
                with pytest.raises(ValueError, match="code must be a close code"):
                    await served.call(served.router.disconnect(conn_id, code))
            with pytest.raises(TypeError):
                await served.call(untyped.disconnect(conn_id, "x"))
            with pytest.raises(TypeError, match="reason"):
                await served.call(untyped.disconnect(conn_id, 1000, None))

            # Nothing was closed: the connection still answers, then closes as asked.
            await ws.send(json.dumps({"t": "ping", "p": {"timestamp": 1}}))
            assert (await next_message(ws))["t"] == "PONG"
            reason = "é" * 100
            assert await served.call(served.router.disconnect(conn_id, 4000, reason))
            with pytest.raises(ConnectionClosed):
                await read_until_closed(ws)
            assert ws.close_code == 4000
            assert ws.close_reason == "é" * 61  # 122 of the 123 bytes a reason may have

    asyncio.run(scenario())


def test_a_str_payload_is_json_text_only_for_publish(serve: Serve) -> None:
    served = serve(WSEConfig(allow_client_publish=True))
    wse = served.router

    async def scenario() -> None:
        async with connect(served.ws_url + "?topics=h") as ws:
            await next_message(ws)
            await next_message(ws)
            assert await served.call(wse.publish("h", '{"a": [1, 2]}')) == 1
            first = await next_message(ws)
            assert first["p"] == {"a": [1, 2]} and first["o"] == 0
            with pytest.raises(ValueError, match=r"payload must be JSON text.*column"):
                await served.call(wse.publish("h", '{"a": 1'))

            # As standalone `send_event`, every other call sends a str as a JSON string.
            assert await served.call(wse.broadcast("note", '{"a": 1}')) == 1
            assert (await next_message(ws))["p"] == '{"a": 1}'
            assert await served.call(wse.publish("h", "2")) == 1
            second = await next_message(ws)
            assert second["p"] == 2 and second["o"] == 1

            # A client's data is a JSON value already: its strings stay strings.
            publish = {"topic": "h", "data": "2"}
            await ws.send(json.dumps({"t": "publish", "p": publish}))
            third = await next_message(ws)
            assert third["p"] == "2" and third["o"] == 2

            # A client may not publish as the engine: no system message reaches anyone.
            reserved = {"topic": "h", "data": {}, "type": "server_ready"}
            await ws.send(json.dumps({"t": "publish", "p": reserved}))
            refused = await next_message(ws)
            assert refused["t"] == "error"
            assert refused["p"]["code"] == "INVALID_MESSAGE"
            assert "reserved" in refused["p"]["message"]

    asyncio.run(scenario())


def test_publish_and_broadcast_check_every_argument_first(serve: Serve) -> None:
    served = serve()
    wse = served.router
    # Calls with the wrong types, as an untyped caller makes them.
    untyped: Any = wse
    bad: list[
        tuple[type[Exception], str | None, Callable[[], Coroutine[Any, Any, Any]]]
    ] = [
        (TypeError, None, lambda: untyped.publish("h", {}, message_id=5)),
        (ValueError, "message_id", lambda: wse.publish("h", {}, message_id="")),
        (ValueError, "message_id", lambda: wse.publish("h", {}, message_id="x" * 129)),
        (TypeError, None, lambda: untyped.publish("h", {}, event_type=5)),
        (ValueError, "event_type", lambda: wse.publish("h", {}, event_type="")),
        (TypeError, None, lambda: untyped.publish("h", {}, priority="5")),
        (TypeError, None, lambda: untyped.publish("h", {}, priority=5.5)),
        (ValueError, "priority", lambda: wse.publish("h", {}, priority=11)),
        (TypeError, None, lambda: untyped.publish(5, {})),
        (ValueError, None, lambda: wse.publish("a b", {})),
        (TypeError, None, lambda: wse.publish("h", {1})),
        (TypeError, "event_type", lambda: untyped.broadcast(5, {})),
        (ValueError, "event_type", lambda: wse.broadcast("", {})),
        (TypeError, None, lambda: untyped.broadcast("x", {}, priority="5")),
        (ValueError, "priority", lambda: wse.broadcast("x", {}, priority=0)),
        (TypeError, "user_id", lambda: untyped.send_to_user(None, "x", {})),
        (TypeError, "conn_id", lambda: untyped.send_to_connection(None, "x", {})),
    ]

    async def scenario() -> None:
        async with connect(served.ws_url + "?topics=h") as ws:
            await next_message(ws)
            answer = await next_message(ws)
            for error, match, call in bad:
                with pytest.raises(error, match=match):
                    await served.call(call())

            # Nothing went out and nothing was counted: no gap in `seq` or `o`.
            assert await served.call(wse.broadcast("x", {})) == 1
            direct = await next_message(ws)
            assert direct["t"] == "x" and direct["seq"] == answer["seq"] + 1
            assert await served.call(wse.publish("h", {}, message_id="m" * 128)) == 1
            publication = await next_message(ws)
            assert publication["o"] == 0 and publication["id"] == "m" * 128

    asyncio.run(scenario())


def test_publish_and_disconnect_refuse_what_the_standalone_server_refuses(
    serve: Serve, start_server: StartServer
) -> None:
    served = serve()
    untyped: Any = served.router
    standalone = start_server(shards=1)
    cases: list[dict[str, Any]] = [
        {"message_id": 5},
        {"message_id": ""},
        {"message_id": "x" * 129},
        {"event_type": 5},
        {"event_type": ""},
        {"priority": "5"},
        {"priority": 5.5},
        {"priority": 0},
        {"payload": "{x"},
        {"event_type": "ping"},
        {"event_type": "server_ready"},
        {"topic": "error"},
    ]

    async def scenario() -> None:
        for case in cases:
            args = {"topic": "h", "payload": {}, **case}
            with pytest.raises((TypeError, ValueError)) as theirs:
                standalone.publish(**args)
            with pytest.raises(type(theirs.value), match=re.escape(str(theirs.value))):
                await served.call(untyped.publish(**args))
        for code in (999, 1004, 1005, 1015, 5000, "x"):
            with pytest.raises((TypeError, ValueError)) as theirs:
                standalone.disconnect("1", code)  # type: ignore[arg-type]
            with pytest.raises(type(theirs.value), match=re.escape(str(theirs.value))):
                await served.call(untyped.disconnect("1", code))

    asyncio.run(scenario())


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="redis_url"):
        create_wse_router(WSEConfig(redis_url="http://localhost:6379"))
    with pytest.raises(ValueError, match="redis_timeout"):
        WSEConfig(redis_timeout=0)
    with pytest.raises(ValueError, match="heartbeat_interval"):
        WSEConfig(heartbeat_interval=0)
    with pytest.raises(ValueError, match="max_message_size"):
        WSEConfig(max_message_size=10)
    with pytest.raises(ValueError, match="jwt_secret"):
        WSEConfig(jwt_issuer="me")
    with pytest.raises(ValueError, match="topic"):
        WSEConfig(default_topics=["bad topic"])
    with pytest.raises(ValueError, match="secret"):
        create_wse_router(WSEConfig(jwt_secret="short"))
