"""End-to-end encryption and JWT admission against wse-server, from Python.

Two clients: a hand-written one on `websockets` plus `cryptography` (the primitives
of PROTOCOL.md section 5, spelled out), and the published `wse-client` 2.5.x with
encryption=True, the client already deployed with the product we replace.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import pytest
import wse_client
from conftest import JWT_SECRET, StartServer, hs256_token
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


def session_key(private: ec.EllipticCurvePrivateKey, server_key_b64: str) -> AESGCM:
    """AES-256-GCM under HKDF-SHA256(ECDH x-coordinate), as PROTOCOL.md section 5."""
    point = base64.b64decode(server_key_b64)
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    shared = private.exchange(ec.ECDH(), peer)
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"wse-encryption/aes-gcm-key",
    ).derive(shared)
    return AESGCM(key)


def seal(aead: AESGCM, message: dict[str, Any]) -> bytes:
    iv = os.urandom(12)
    return b"E:" + iv + aead.encrypt(iv, json.dumps(message).encode(), None)


def unseal(aead: AESGCM, frame: bytes) -> dict[str, Any]:
    assert frame[:2] == b"E:", frame[:16]
    plain = aead.decrypt(frame[2:14], frame[14:], None)
    decoded = json.loads(plain)
    assert isinstance(decoded, dict)
    return decoded


async def next_data(ws: ClientConnection) -> str | bytes:
    """The next frame that is not a server heartbeat."""
    while True:
        raw = await asyncio.wait_for(ws.recv(), timeout=5)
        if isinstance(raw, bytes) or not raw.startswith('{"c":"WSE","t":"ping"'):
            return raw


async def cryptography_round_trip(url: str) -> None:
    async with connect(url) as ws, connect(url) as publisher:
        for conn in (ws, publisher):
            ready = json.loads(await next_data(conn))
            assert ready["t"] == "server_ready"
        private = ec.generate_private_key(ec.SECP256R1())
        public = private.public_key().public_bytes(
            encoding=Encoding.X962, format=PublicFormat.UncompressedPoint
        )
        hello = {
            "t": "client_hello",
            "p": {
                "client_version": "pytest",
                "protocol_version": 1,
                "features": {"encryption": True},
                "encryption_public_key": base64.b64encode(public).decode(),
            },
        }
        await ws.send(json.dumps(hello))
        server_hello = json.loads(await next_data(ws))
        assert server_hello["t"] == "server_hello"
        assert server_hello["p"]["features"]["encryption"] is True
        aead = session_key(private, server_hello["p"]["encryption_public_key"])

        update = {"action": "subscribe", "topics": ["secret-prices"]}
        await ws.send(seal(aead, {"t": "subscription_update", "p": update}))
        answer = await next_data(ws)
        assert isinstance(answer, bytes), "the answer must be an E: binary frame"
        assert unseal(aead, answer)["p"]["success_topics"] == ["secret-prices"]

        publish = {"topic": "secret-prices", "data": {"eur": 1.09}}
        await publisher.send(json.dumps({"t": "publish", "p": publish}))
        frame = await next_data(ws)
        assert isinstance(frame, bytes)
        publication = unseal(aead, frame)
        assert publication["tp"] == "secret-prices"
        assert publication["p"] == {"eur": 1.09}


def test_e2e_round_trip_with_cryptography(wse_server: StartServer) -> None:
    asyncio.run(cryptography_round_trip(wse_server("--allow-client-publish")))


async def published_client_receives_encrypted(url: str) -> None:
    reader_token = hs256_token("reader")
    writer_token = hs256_token("writer", wse_topics={"publish": ["orders.*"]})
    reader = wse_client.AsyncWSEClient(url, token=reader_token, encryption=True)
    await reader.connect()
    writer = wse_client.AsyncWSEClient(url, token=writer_token)
    await writer.connect()
    try:
        security = reader._security
        assert security is not None
        for _ in range(100):
            if security.is_enabled:
                break
            await asyncio.sleep(0.05)
        assert security.is_enabled, "the key exchange did not complete"
        opened: list[int] = []
        decrypt = security.decrypt

        def counting_decrypt(data: bytes) -> str:
            text = decrypt(data)
            opened.append(len(data))
            return text

        security.decrypt = counting_decrypt  # type: ignore[method-assign]
        await reader.subscribe(["orders.eu"])
        await asyncio.sleep(0.3)
        await writer.send("publish", {"topic": "orders.eu", "data": {"order": 42}})
        for _ in range(20):
            event = await reader.recv(timeout=5)
            if event.topic == "orders.eu":
                assert event.payload == {"order": 42}
                break
        else:
            pytest.fail("the publication never arrived")
        assert opened, "the publication was not sealed for the E2E client"
    finally:
        await reader.disconnect()
        await writer.disconnect()


def test_published_wse_client_with_encryption(wse_server: StartServer) -> None:
    url = wse_server("--jwt-secret", JWT_SECRET)
    asyncio.run(published_client_receives_encrypted(url))


async def refused_without_token(url: str) -> None:
    async with connect(url) as ws:
        first = json.loads(await next_data(ws))
        assert first["t"] == "error"
        assert first["p"]["code"] == "AUTH_REQUIRED"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401


def test_missing_token_gets_auth_required_then_4401(wse_server: StartServer) -> None:
    asyncio.run(refused_without_token(wse_server("--jwt-secret", JWT_SECRET)))
