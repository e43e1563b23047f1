"""The examples in py/examples, run as the README says, with a real client each."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def run_example() -> Iterator[Any]:
    """Starts an example on a free port; returns (process, "host:port")."""
    procs: list[subprocess.Popen[str]] = []

    def start(name: str) -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        return proc, line.removeprefix("listening on ")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def next_message(ws: ClientConnection) -> dict[str, Any]:
    while True:
        raw = await asyncio.wait_for(ws.recv(), timeout=5)
        if isinstance(raw, str) and raw.startswith('{"c":"WSE","t":"ping"'):
            continue
        message = json.loads(raw)
        assert isinstance(message, dict)
        return message


def test_standalone_chat(run_example: Any) -> None:
    proc, addr = run_example("standalone_chat.py")

    async def chat() -> None:
        async with (
            connect(f"ws://{addr}/wse") as ann,
            connect(f"ws://{addr}/wse") as bob,
        ):
            for ws in (ann, bob):
                assert (await next_message(ws))["t"] == "server_ready"
                assert (await next_message(ws))["t"] == "welcome"
            await ann.send(json.dumps({"t": "chat", "p": {"text": "hello"}}))
            said = await next_message(bob)
            assert (said["t"], said["tp"], said["p"]["text"]) == (
                "chat",
                "room",
                "hello",
            )

    asyncio.run(chat())
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "stopped" in out


def test_router_app(run_example: Any) -> None:
    proc, addr = run_example("router_app.py")

    def ship(order_id: int) -> Any:
        url = f"http://{addr}/orders/{order_id}/ship"
        with urllib.request.urlopen(
            urllib.request.Request(url, method="POST"), timeout=5
        ) as reply:
            return json.loads(reply.read())

    async def scenario() -> None:
        async with connect(f"ws://{addr}/wse?topics=notifications") as ws:
            assert (await next_message(ws))["t"] == "server_ready"
            assert (await next_message(ws))["t"] == "subscription_update"
            assert (await next_message(ws))["t"] == "snapshot_complete"
            reply = await asyncio.to_thread(ship, 42)
            assert reply == {"order_id": 42, "delivered": 1}
            shipped = await next_message(ws)
            assert shipped["p"] == {"text": "Order shipped!", "order_id": 42}
        async with connect(f"ws://{addr}/wse?topics=notifications") as late:
            await next_message(late)
            await next_message(late)
            snapshot = await next_message(late)
            assert snapshot["t"] == "notifications_snapshot"
            assert snapshot["p"]["order_id"] == 42

    asyncio.run(scenario())
    with urllib.request.urlopen(f"http://{addr}/wse/health", timeout=5) as health:
        assert json.loads(health.read())["status"] == "ok"
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
