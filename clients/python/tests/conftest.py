"""Shared fixtures: real wse-server processes, publishers, and HS256 tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[3]
SERVER = Path(os.environ.get("WSE_SERVER", ROOT / "target" / "release" / "wse-server"))

#: The HS256 secret the auth tests start the server with.
JWT_SECRET = "python-client-tests-secret-0123456789"


class Server:
    """One wse-server process; `restart()` brings it back on the same port."""

    def __init__(self, flags: tuple[str, ...]) -> None:
        self.flags = flags
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/wse"

    def start(self) -> str:
        if not SERVER.exists():
            pytest.fail(f"wse-server binary not found at {SERVER} (set WSE_SERVER)")
        args = [str(SERVER), "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*args, "--shards", "2", *self.flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        prefix = "wse-server listening on "
        assert line.startswith(prefix), f"unexpected first line {line!r}"
        self.port = int(line.rsplit(":", 1)[1])
        return self.url

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc = self.proc
        if proc is None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.proc = None

    def restart(self) -> str:
        """Stops (SIGTERM: clients get 1012) and starts again on the same port."""
        self.stop()
        deadline = time.monotonic() + 10
        while True:
            try:
                return self.start()
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def metric(self, name: str) -> float:
        """The sum of every series called `name` on /metrics."""
        address = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(address, timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " "))
        )


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop(signal.SIGKILL)


@pytest.fixture
def server(servers: list[Server]) -> Server:
    """A server that lets clients publish."""
    instance = Server(("--allow-client-publish",))
    instance.start()
    servers.append(instance)
    return instance


def start_server(servers: list[Server], *flags: str) -> Server:
    instance = Server(flags)
    instance.start()
    servers.append(instance)
    return instance


async def open_publisher(url: str) -> ClientConnection:
    """A plain `websockets` connection, past `server_ready`."""
    ws = await connect(url, compression=None)
    ready = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert ready["t"] == "server_ready"
    return ws


async def publish(ws: ClientConnection, topic: str, data: Any, **extra: Any) -> None:
    body = {"topic": topic, "data": data, **extra}
    await ws.send(json.dumps({"t": "publish", "p": body}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def hs256_token(sub: str, *, ttl: int = 300, **claims: object) -> str:
    """An HS256 JWT for JWT_SECRET with extra claims."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    now = int(time.time())
    body = {"sub": sub, "iat": now, "exp": now + ttl, **claims}
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(body, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(JWT_SECRET.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"
