"""The published `wse-client` 2.5.1 against RustWSEServer, and the JWT cookie path.

The 2.x client is what deployed applications use; it must work against the engine run
from Python exactly as it does against the `wse-server` binary: admitted by its JWT
(which it sends as the `access_token` cookie), greeted with `server_ready`, subscribed
with `subscription_update`, and fed the application's publications.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import wse_client
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import JWT_SECRET, StartServer, drain_until, hs256_token, kinds, url


async def wait_for(check: Any, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_published_client_subscribes_and_receives_publications(
    start_server: StartServer,
) -> None:
    server = start_server(jwt_secret=JWT_SECRET.encode(), jwt_issuer="shop")
    token = hs256_token("alice", iss="shop")

    async def scenario() -> None:
        client = wse_client.AsyncWSEClient(url(server), token=token)
        # The client consumes subscription_update itself (it never reaches handlers or
        # recv()); watch its own handler for it.
        updates: list[dict[str, Any]] = []
        handlers = client._system_handlers
        own = handlers["subscription_update"]

        def watch(event: Any) -> None:
            updates.append(event.payload)
            own(event)

        handlers["subscription_update"] = watch
        await client.connect()
        try:
            await wait_for(lambda: client.is_ready)
            await client.subscribe(["orders", "news"])
            await wait_for(lambda: bool(updates))
            assert sorted(updates[0]["success_topics"]) == ["news", "orders"]

            [event] = kinds(
                drain_until(server, lambda ev: bool(kinds(ev, "auth_connect"))),
                "auth_connect",
            )
            assert event[2] == "alice"
            assert event[1] is not None
            info = server.get_connection_info(event[1])
            assert info is not None and info["user_id"] == "alice"
            assert "access_token=" in info["headers"]["cookie"]

            for n in range(5):
                server.publish("orders", {"order": n})
            received: list[int] = []
            while len(received) < 5:
                got = await client.recv(timeout=5)
                if got.topic == "orders":
                    received.append(got.payload["order"])
            assert received == [0, 1, 2, 3, 4]
        finally:
            await client.disconnect()

    asyncio.run(scenario())


def test_the_cookie_alone_admits_and_a_bad_token_is_refused(
    start_server: StartServer,
) -> None:
    server = start_server(jwt_secret=JWT_SECRET, jwt_cookie_name="session")

    async def scenario() -> None:
        cookie = {"Cookie": f"theme=dark; session={hs256_token('bob')}"}
        async with connect(url(server), additional_headers=cookie) as ws:
            ready = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert ready["t"] == "server_ready"
            assert ready["p"]["details"]["user_id"] == "bob"
        forged = {"Cookie": f"session={hs256_token('bob')[:-4]}AAAA"}
        async with connect(url(server), additional_headers=forged) as ws:
            error = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert (error["t"], error["p"]["code"]) == ("error", "AUTH_FAILED")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 4401

    asyncio.run(scenario())
