"""Scale-out through a real `redis-server` (issue #6), from Python.

Two `RustWSEServer` engines on one Redis fan out to each other, keep dead letters
while Redis is down and replay them; two uvicorn workers of one FastAPI application in
router mode fan out to each other. The Redis is a child process of the test (the
Debian package), killed and restarted to play an outage.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from conftest import RedisServer, StartServer, _free_port, url, wait_for
from wse_server import RedisUnavailableError, RustWSEServer, WSEConfig, WSEError


async def publication(ws: ClientConnection, topic: str, within: float = 5.0) -> Any:
    """The next publication of `topic` (other messages skipped)."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(left, 0.01)))
        if message.get("tp") == topic:
            return message


async def quiet(ws: ClientConnection, topic: str, within: float) -> None:
    """Asserts that no publication of `topic` arrives within `within` seconds."""
    try:
        message = await publication(ws, topic, within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected publication {message}")


async def subscribed(address: str) -> ClientConnection:
    """A client whose subscription (from the URL's `topics=`) is confirmed."""
    ws = await connect(address)
    while json.loads(await ws.recv()).get("t") != "subscription_update":
        pass
    return ws


def accepting(server: RustWSEServer) -> bool:
    redis = server.health_snapshot().get("redis")
    return isinstance(redis, dict) and redis["accepting"] is True


def test_two_engines_fan_out_keep_dead_letters_and_replay_them(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    options: dict[str, Any] = {
        "redis_url": redis_server.url,
        "redis_timeout": 0.3,
        "redis_breaker_threshold": 2,
        "redis_breaker_reset": 0.5,
    }
    a, b = start_server(**options), start_server(**options)
    wait_for(lambda: accepting(a) and accepting(b), what="both bridges accepting")
    assert a.instance_id() != b.instance_id()
    assert a.health_snapshot()["redis"]["instance"] == a.instance_id()

    async def scenario() -> None:
        on_a = await subscribed(url(a, "?topics=feed"))
        on_b = await subscribed(url(b, "?topics=feed"))
        a.publish("feed", {"k": 0})
        first_a, first_b = (
            await publication(on_a, "feed"),
            await publication(on_b, "feed"),
        )
        assert first_a == first_b, "the same bytes, stamps and id on both"

        # Redis down: A's own subscriber still gets it, B's does not; a dead letter.
        redis_server.kill()
        a.publish("feed", {"k": 1})
        local = await publication(on_a, "feed")
        assert local["p"] == {"k": 1} and local["e"] != first_a["e"]
        await quiet(on_b, "feed", 0.3)
        wait_for(lambda: len(a.dlq_messages("feed")) == 1, what="the dead letter")
        [letter] = a.dlq_messages("feed")
        assert letter["payload"] == {"k": 1} and letter["stored"] is False
        assert letter["instance_id"] == a.instance_id()
        with pytest.raises(RedisUnavailableError):
            a.replay_dlq_message("feed", letter["message_id"])

        # Redis back: the letter is written there and B replays it; only B delivers.
        redis_server.restart()
        wait_for(lambda: accepting(a) and accepting(b), what="bridges back")
        wait_for(
            lambda: [d["stored"] for d in b.dlq_messages()] == [True], what="stored"
        )
        assert b.replay_dlq_message("feed", letter["message_id"]) is True
        assert b.replay_dlq_message("feed", letter["message_id"]) is False
        replayed = await publication(on_b, "feed")
        assert replayed["p"] == {"k": 1} and replayed["id"] == letter["message_id"]
        await quiet(on_a, "feed", 0.3)
        assert a.dlq_messages() == []
        for ws in (on_a, on_b):
            await ws.close()

    asyncio.run(scenario())
    metrics = a.prometheus_metrics()
    assert 'wse_redis_breaker_state{state="closed"} 1' in metrics
    assert "wse_redis_breaker_opened_total 1" in metrics


def test_a_direct_message_reaches_a_connection_of_another_engine(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a = start_server(redis_url=redis_server.url)
    b = start_server(redis_url=redis_server.url)
    wait_for(lambda: accepting(a) and accepting(b), what="both bridges accepting")

    async def scenario() -> None:
        ws = await connect(url(b))
        await ws.recv()  # server_ready
        wait_for(lambda: len(b.get_connections()) == 1, what="the connection")
        conn_ids = b.get_connections()
        instance = b.instance_id()
        assert instance is not None
        a.send_event_to(instance, conn_ids[0], {"t": "notice", "p": {"from": "a"}})
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
        assert (message["t"], message["p"]) == ("notice", {"from": "a"})
        await ws.close()

    asyncio.run(scenario())


def test_without_redis_the_scale_out_calls_say_so(start_server: StartServer) -> None:
    server = start_server()
    assert server.instance_id() is None
    assert "redis" not in server.health_snapshot()
    with pytest.raises(WSEError):
        server.dlq_messages()
    with pytest.raises(ValueError, match="redis_url"):
        RustWSEServer("127.0.0.1", 0, redis_url="http://not-redis")
    with pytest.raises(ValueError, match="redis_breaker_threshold"):
        RustWSEServer("127.0.0.1", 0, redis_url="redis://h", redis_breaker_threshold=0)
    with pytest.raises(ValueError, match="redis_topics"):
        WSEConfig(redis_url="redis://h", redis_topics=["bad topic"])


#: A FastAPI application in router mode on Redis; each client can ask which worker
#: (process id) serves it.
ROUTER_APP = """
import os

from fastapi import FastAPI
from wse_server import WSEConfig, create_wse_router


async def whoami(conn, message):
    if message.get("t") == "whoami":
        accepting = wse.bridge is not None and wse.bridge.accepting()
        conn.send_event("whoami", {"pid": os.getpid(), "accepting": accepting})


app = FastAPI()
wse = create_wse_router(
    WSEConfig(
        redis_url=os.environ["TEST_REDIS_URL"],
        allow_client_publish=True,
        message_handler=whoami,
    )
)
app.include_router(wse, prefix="/wse")
"""


@pytest.fixture
def two_workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[int]:
    """`uvicorn --workers 2` serving ROUTER_APP; yields its port."""
    (tmp_path / "router_redis_app.py").write_text(textwrap.dedent(ROUTER_APP))
    port = _free_port()
    env = {**os.environ, "TEST_REDIS_URL": redis_server.url}
    command = [sys.executable, "-m", "uvicorn", "router_redis_app:app"]
    command += ["--workers", "2", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env)
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_two_uvicorn_workers_in_router_mode_fan_out_to_each_other(
    two_workers: int,
) -> None:
    address = f"ws://127.0.0.1:{two_workers}/wse?topics=room"

    async def ask(ws: ClientConnection) -> dict[str, Any]:
        """The serving worker's answer: `{pid, accepting}`."""
        await ws.send(json.dumps({"t": "whoami", "p": {}}))
        while (answer := json.loads(await ws.recv())).get("t") != "whoami":
            pass
        payload: dict[str, Any] = answer["p"]
        return payload

    async def open_on_each_worker() -> list[ClientConnection]:
        """Opens clients until one is served by each of the two workers, and waits
        until both workers' bridges accept."""
        by_pid: dict[int, ClientConnection] = {}
        spare: list[ClientConnection] = []
        deadline = time.monotonic() + 20
        while len(by_pid) < 2:
            assert time.monotonic() < deadline, f"workers seen: {list(by_pid)}"
            try:
                ws = await subscribed(address)
            except OSError:
                await asyncio.sleep(0.1)  # the workers are still starting
                continue
            pid = (await ask(ws))["pid"]
            if pid in by_pid:
                spare.append(ws)
            else:
                by_pid[pid] = ws
        for ws in spare:
            await ws.close()
        clients = list(by_pid.values())
        for ws in clients:
            while not (await ask(ws))["accepting"]:
                assert time.monotonic() < deadline, "a worker's bridge never accepted"
                await asyncio.sleep(0.05)
        return clients

    async def scenario() -> None:
        first, second = await open_on_each_worker()
        stamps: list[tuple[str, int]] = []
        for k, publisher in enumerate((first, second, first)):
            payload = {"topic": "room", "data": {"k": k}}
            await publisher.send(json.dumps({"t": "publish", "p": payload}))
            got = [await publication(ws, "room") for ws in (first, second)]
            assert got[0] == got[1], "the same stamps and bytes from both workers"
            assert got[0]["p"] == {"k": k}
            stamps.append((got[0]["e"], got[0]["o"]))
        epochs, offsets = zip(*stamps, strict=True)
        assert len(set(epochs)) == 1, "one epoch, stamped by Redis"
        assert list(offsets) == [offsets[0], offsets[0] + 1, offsets[0] + 2]
        for ws in (first, second):
            await ws.close()

    asyncio.run(scenario())
