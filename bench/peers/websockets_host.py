"""The Python ``websockets`` baseline of loadbench: an ordinary asyncio server.

One coroutine per connection on the ``websockets`` asyncio server, with the subset of the
WSE protocol the load client needs: the upgrade must carry ``Authorization: Bearer`` with
an HS256 JWT signed with ``--secret`` (else HTTP 401); then ``server_ready``;
``subscription_update`` subscribes and is answered; ``publish`` numbers the topic's next
offset and sends ``{c, t, p, v, tp, e, o}`` (encoded once) with ``websockets.broadcast``;
``ping`` gets ``PONG``; any other message (JSON text, or msgpack bare or after ``M:``) is
counted as
handed to the application, its ``p.n`` checked to follow the connection's previous one;
``bench_stats`` answers the count. It listens with ``SO_REUSEPORT`` so several processes
can share a port, prints ``websockets-host listening on HOST:PORT`` and runs until stdin
closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import http
import json
import sys
import time
from typing import Any

import msgpack
import websockets
from websockets.asyncio.server import ServerConnection, serve


class Host:
    """Topics, counts and the token check shared by every connection."""

    def __init__(self, secret: bytes, max_connections: int) -> None:
        self.secret = secret
        self.max_connections = max_connections
        self.connections = 0
        self.topics: dict[str, set[ServerConnection]] = {}
        self.offsets: dict[str, int] = {}
        self.messages = 0
        self.disorder = 0
        self.first = 0
        self.last = 0
        self.next_id = 0

    def process_request(self, connection: ServerConnection, request: Any) -> Any:
        header = request.headers.get("Authorization", "")
        user = (
            self.user(header[7:].strip()) if header[:7].lower() == "bearer " else None
        )
        if user is None:
            return connection.respond(
                http.HTTPStatus.UNAUTHORIZED, "bad or missing token\n"
            )
        if self.connections >= self.max_connections:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "full\n")
        connection.user = user  # type: ignore[attr-defined]
        return None

    def user(self, token: str) -> str | None:
        """The ``sub`` of a valid HS256 token, else None."""
        try:
            head, body, signature = token.split(".")
            mac = hmac.new(self.secret, f"{head}.{body}".encode(), hashlib.sha256)
            if not hmac.compare_digest(b64url(mac.digest()), signature):
                return None
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            if float(claims.get("exp", 0)) < time.time():
                return None
            return str(claims.get("sub", ""))
        except (ValueError, TypeError):
            return None

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.next_id += 1
        subscribed: list[str] = []
        details = {
            "connection_id": str(self.next_id),
            "user_id": getattr(ws, "user", ""),
            "server_time": int(time.time() * 1000),
            "version": 1,
            "features": {},
        }
        await ws.send(envelope("server_ready", {"message": "ok", "details": details}))
        next_n = 0
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    data = msgpack.unpackb(raw[2:] if raw[:2] == b"M:" else raw)
                else:
                    data = json.loads(raw)
                if not isinstance(data, dict):
                    continue
                next_n = await self.message(ws, data, next_n, subscribed)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.connections -= 1
            for topic in subscribed:
                self.topics.get(topic, set()).discard(ws)

    async def message(
        self, ws: ServerConnection, data: dict, next_n: int, subscribed: list[str]
    ) -> int:
        kind = data.get("t")
        payload = data.get("p") or {}
        if kind == "publish":
            topic = payload["topic"]
            offset = self.offsets.get(topic, 0)
            self.offsets[topic] = offset + 1
            text = json.dumps(
                {
                    "c": "U",
                    "t": topic,
                    "p": payload["data"],
                    "v": 1,
                    "tp": topic,
                    "e": "00000001",
                    "o": offset,
                },
                separators=(",", ":"),
            )
            websockets.broadcast(self.topics.get(topic, set()), text)
        elif kind == "subscription_update":
            topics = list(payload.get("topics", []))
            for topic in topics:
                self.topics.setdefault(topic, set()).add(ws)
            subscribed.extend(topics)
            answer = {"success_topics": topics, "failed_topics": []}
            await ws.send(envelope("subscription_update", answer))
        elif kind == "ping":
            now = int(time.time() * 1000)
            pong = {
                "client_timestamp": payload.get("timestamp"),
                "server_timestamp": now,
            }
            await ws.send(envelope("PONG", pong))
        elif kind == "bench_stats":
            stats = {
                "msgs": self.messages,
                "disorder": self.disorder,
                "span_ns": self.last - self.first,
            }
            await ws.send(envelope("bench_stats", stats))
        else:
            n = payload.get("n") if isinstance(payload, dict) else None
            if n != next_n:
                self.disorder += 1
            now = time.perf_counter_ns()
            if not self.first:
                self.first = now
            self.last = now
            self.messages += 1
            return (n if isinstance(n, int) else next_n) + 1
        return next_n


def envelope(kind: str, payload: dict) -> str:
    return json.dumps(
        {"c": "WSE", "t": kind, "p": payload, "v": 1}, separators=(",", ":")
    )


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def run(args: argparse.Namespace) -> None:
    host = Host(args.secret.encode(), args.max_connections)
    async with serve(
        host.handler,
        "127.0.0.1",
        args.port,
        process_request=host.process_request,
        compression=None,
        max_size=2**20,
        ping_interval=None,
        reuse_port=True,
        backlog=4096,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"websockets-host listening on 127.0.0.1:{port}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--max-connections", type=int, default=10_000)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(run(parse_args()))
