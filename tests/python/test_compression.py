"""Compression with real clients (PROTOCOL.md §1, §4).

permessage-deflate with Python `websockets`, which offers it by default, and `C:` frames
for clients that do not negotiate it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import zlib

import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from conftest import StartServer

AGREED = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def metric(url: str, series: str) -> float:
    """One series of the server's /metrics."""
    base = url.replace("ws://", "http://").removesuffix("/wse")
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {series} in /metrics")


def big_data(n: int = 400) -> dict[str, object]:
    return {
        "items": [{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(n)]
    }


async def open_subscribed(url: str, **kwargs: object) -> websockets.ClientConnection:
    url = f"{url}?topics=news"
    ws = await websockets.connect(url, **kwargs)  # type: ignore[arg-type]
    assert json.loads(await ws.recv())["t"] == "server_ready"
    assert json.loads(await ws.recv())["t"] == "subscription_update"
    return ws


def test_permessage_deflate_round_trip(wse_server: StartServer) -> None:
    url = wse_server("--allow-client-publish")

    async def run() -> None:
        ws = await open_subscribed(url)
        try:
            assert ws.response is not None
            assert ws.response.headers["Sec-WebSocket-Extensions"] == AGREED
            # websockets compresses each publish; the server inflates it, publishes
            # it, and sends it back deflated (RSV1), which websockets inflates again.
            # Several in a row: the client must not take its context over
            # (client_no_context_takeover): the server inflates each message alone.
            for n in range(3):
                data = big_data(400 + n)
                publish = {"t": "publish", "p": {"topic": "news", "data": data}}
                await ws.send(json.dumps(publish))
                message = await asyncio.wait_for(ws.recv(), 5)
                assert isinstance(message, str), "a deflated text frame, not a C: frame"
                publication = json.loads(message)
                assert publication["tp"] == "news" and publication["p"] == data
                assert publication["o"] == n
            fmt = '{format="permessage_deflate"}'
            assert metric(url, f"wse_inflated_messages_total{fmt}") == 3
            assert metric(url, f"wse_compressions_total{fmt}") == 3
            # Small messages still work both ways.
            await ws.send(json.dumps({"t": "ping", "p": {"timestamp": 1}}))
            pong = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert pong["t"] == "PONG"
        finally:
            await ws.close()

    asyncio.run(run())


def test_client_window_bits_offer_is_echoed_and_honoured(
    wse_server: StartServer,
) -> None:
    url = wse_server("--allow-client-publish")
    factory = ClientPerMessageDeflateFactory(client_max_window_bits=10)

    async def run() -> None:
        ws = await open_subscribed(url, extensions=[factory], compression=None)
        try:
            assert ws.response is not None
            header = ws.response.headers["Sec-WebSocket-Extensions"]
            assert header == f"{AGREED}; client_max_window_bits=10"
            data = big_data(200)
            await ws.send(
                json.dumps({"t": "publish", "p": {"topic": "news", "data": data}})
            )
            publication = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert publication["p"] == data
        finally:
            await ws.close()

    asyncio.run(run())


def test_clients_without_the_extension_get_c_frames(wse_server: StartServer) -> None:
    url = wse_server("--allow-client-publish")

    async def run() -> None:
        plain = await open_subscribed(url, compression=None)
        deflating = await open_subscribed(url)
        try:
            assert plain.response is not None
            assert "Sec-WebSocket-Extensions" not in plain.response.headers
            data = big_data()
            await plain.send(
                json.dumps({"t": "publish", "p": {"topic": "news", "data": data}})
            )
            frame = await asyncio.wait_for(plain.recv(), 5)
            assert isinstance(frame, bytes) and frame.startswith(b"C:")
            publication = json.loads(zlib.decompress(frame[2:]))
            assert publication["p"] == data
            assert len(frame) < len(json.dumps(publication)) / 2
            # The permessage-deflate subscriber gets the same publication, as text.
            same = json.loads(await asyncio.wait_for(deflating.recv(), 5))
            assert same == publication
            # Under the threshold nothing is compressed.
            small = {"text": "hi"}
            await plain.send(
                json.dumps({"t": "publish", "p": {"topic": "news", "data": small}})
            )
            text = await asyncio.wait_for(plain.recv(), 5)
            assert isinstance(text, str) and json.loads(text)["p"] == small
        finally:
            await plain.close()
            await deflating.close()

    asyncio.run(run())


def test_client_c_frames_are_inflated(wse_server: StartServer) -> None:
    url = wse_server("--allow-client-publish")

    async def run() -> None:
        ws = await open_subscribed(url, compression=None)
        try:
            data = big_data(50)
            publish = json.dumps({"t": "publish", "p": {"topic": "news", "data": data}})
            await ws.send(b"C:" + zlib.compress(publish.encode(), 6))
            frame = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(frame, bytes)
            assert json.loads(zlib.decompress(frame[2:]))["p"] == data
        finally:
            await ws.close()

    asyncio.run(run())


def test_permessage_deflate_can_be_turned_off(wse_server: StartServer) -> None:
    url = wse_server("--disable-permessage-deflate", "--disable-compression")

    async def run() -> None:
        ws = await open_subscribed(url)
        try:
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
        finally:
            await ws.close()

    asyncio.run(run())
