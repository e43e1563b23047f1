"""Shared fixtures: a real RustWSEServer per test, clients, tokens and drain helpers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wse_server import RustWSEServer

#: The HS256 secret the JWT tests use (32 bytes or more, as the engine requires).
JWT_SECRET = "py-tests-secret-0123456789abcdef-xyz"

Event = tuple[str, str | None, Any]
StartServer = Callable[..., RustWSEServer]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Starts RustWSEServer on 127.0.0.1, a free port and two shards, with options."""
    servers: list[RustWSEServer] = []

    def start(**options: Any) -> RustWSEServer:
        options.setdefault("shards", 2)
        server = RustWSEServer("127.0.0.1", 0, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def url(server: RustWSEServer, query: str = "") -> str:
    host, port = server.local_addr()
    return f"ws://{host}:{port}/wse{query}"


def drain_until(
    server: RustWSEServer,
    done: Callable[[list[Event]], bool],
    within: float = 10.0,
) -> list[Event]:
    """Drains until `done(events)` holds or `within` seconds pass."""
    deadline = time.monotonic() + within
    events: list[Event] = []
    while not done(events) and time.monotonic() < deadline:
        events.extend(server.drain_inbound(256, 50))
    return events


def kinds(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e[0] == kind]


def metric(text: str, name: str) -> dict[str, float]:
    """Values of one Prometheus metric by label text (`""` when it has none)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            values[key[len(name) :]] = float(value)
    return values


def hs256_token(sub: str, **claims: object) -> str:
    """An HS256 JWT for JWT_SECRET, valid for five minutes, with extra claims."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    now = int(time.time())
    body = {"sub": sub, "iat": now, "exp": now + 300, **claims}
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(body, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(JWT_SECRET.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"


class RedisServer:
    """A real `redis-server` (the Debian package) on a free loopback port, no
    persistence; killed (SIGKILL) and restarted on the same port to play an outage."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            args += ["--appendonly", "no", "--protected-mode", "no"]
            self.process = subprocess.Popen(
                ["redis-server", *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._pong():
                    return
                time.sleep(0.02)
            assert time.monotonic() < deadline, (
                f"redis-server did not start on {self.port}"
            )
            time.sleep(0.1)  # the port was still taken: try again

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(7) == b"+PONG\r\n"
        except OSError:
            return False


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A `redis-server` of the test's own; `make deps` installs the package."""
    server = RedisServer()
    yield server
    server.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], within: float = 10.0, what: str = "") -> None:
    """Polls `check` every 20 ms until it holds; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.02)
