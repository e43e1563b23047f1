"""Shared fixtures: a real wse-server process per test, and hand-made HS256 tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(os.environ.get("WSE_SERVER", ROOT / "target" / "release" / "wse-server"))

#: The HS256 secret the security tests start the server with.
JWT_SECRET = "python-tests-secret-0123456789abcdef"

StartServer = Callable[..., str]


@pytest.fixture
def wse_server() -> Iterator[StartServer]:
    """Starts wse-server with extra flags on a free port; returns its ws:// URL."""
    procs: list[subprocess.Popen[str]] = []

    def start(*flags: str) -> str:
        if not SERVER.exists():
            pytest.fail(f"wse-server binary not found at {SERVER} (set WSE_SERVER)")
        args = [str(SERVER), "--host", "127.0.0.1", "--port", "0", "--shards", "2"]
        proc = subprocess.Popen(
            [*args, *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        prefix = "wse-server listening on "
        assert line.startswith(prefix), f"unexpected first line {line!r}"
        return f"ws://{line.removeprefix(prefix)}/wse"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def hs256_token(sub: str, **claims: object) -> str:
    """An HS256 JWT for JWT_SECRET, valid for five minutes, with extra claims."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    body = {"sub": sub, "iat": int(time.time()), "exp": int(time.time()) + 300, **claims}
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(body, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(JWT_SECRET.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"
