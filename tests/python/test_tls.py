"""wse-server over wss:// with a real Python client (`websockets` and the stdlib `ssl`).

Makes a self-signed certificate for localhost and 127.0.0.1 with the `openssl` command
(skipped when it is missing), starts the binary named by WSE_SERVER (default
target/release/wse-server) with --tls-cert/--tls-key, and checks server_ready, a
subscription, a publish round-trip and PONG over TLS, and /health over HTTPS.
Run: WSE_SERVER=target/release/wse-server .venv/bin/python -m pytest tests/python
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(os.environ.get("WSE_SERVER", ROOT / "target" / "release" / "wse-server"))


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate and its key, as PEM files."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[int, ssl.SSLContext]]:
    """The port of a running TLS wse-server, and a client context trusting it."""
    if not SERVER.exists():
        pytest.fail(f"wse-server binary not found at {SERVER} (set WSE_SERVER)")
    cert, key = certificate
    args = [str(SERVER), "--host", "127.0.0.1", "--port", "0", "--shards", "2"]
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
    proc = subprocess.Popen(
        [*args, *tls, "--allow-client-publish"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        prefix = "wse-server listening on "
        assert line.startswith(prefix), f"unexpected first line {line!r}"
        port = int(line.rsplit(":", 1)[1])
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cert)
        yield port, context
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


async def over_tls(url: str, context: ssl.SSLContext) -> None:
    async with (
        connect(url, ssl=context) as subscriber,
        connect(url, ssl=context) as publisher,
    ):
        for ws in (subscriber, publisher):
            ready = await next_message(ws)
            assert ready["t"] == "server_ready"

        update = {"action": "subscribe", "topics": ["secure"]}
        await subscriber.send(json.dumps({"t": "subscription_update", "p": update}))
        answer = await next_message(subscriber)
        assert answer["t"] == "subscription_update"

        publish = {"topic": "secure", "data": {"over": "tls"}}
        await publisher.send(json.dumps({"t": "publish", "p": publish}))
        got = await next_message(subscriber)
        assert got["tp"] == "secure"
        assert got["p"] == {"over": "tls"}

        await publisher.send(json.dumps({"t": "ping", "p": {"timestamp": 123}}))
        pong = await next_message(publisher)
        assert pong["t"] == "PONG"


def test_websockets_client_over_wss_subscribes_publishes_and_gets_pong(
    tls_server: tuple[int, ssl.SSLContext],
) -> None:
    port, context = tls_server
    asyncio.run(over_tls(f"wss://localhost:{port}/wse", context))


def test_health_is_served_over_https_on_the_same_port(
    tls_server: tuple[int, ssl.SSLContext],
) -> None:
    port, context = tls_server
    url = f"https://localhost:{port}/health"
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        assert response.status == 200
        assert json.loads(response.read())["status"] == "ok"
