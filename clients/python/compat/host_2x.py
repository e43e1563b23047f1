"""A minimal application around the 2.5.1 engine, for the compatibility tests.

`wse-server` 2.5.1 from PyPI ships its Rust engine as
`wse_server._wse_accel.RustWSEServer`: the engine does the transport, `client_hello`,
heartbeats, E2E and topic fan-out; the application drains inbound events and does the
rest. This host plays the application the way a 2.x deployment did: `server_ready` on
connect, subscriptions (with recovery) and their answers, client publishing, snapshot
requests, and an `echo` type that sends a direct message back.

Runs under CPython 3.12 (the wheel is cp312 abi3). Prints `listening on HOST:PORT`
first, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
import uuid
from typing import Any

from wse_server._wse_accel import RustWSEServer


class Host:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.stopping = threading.Event()

    def serve(self) -> None:
        while not self.stopping.is_set():
            for kind, conn_id, data in self.server.drain_inbound(256, 50):
                try:
                    self.handle(kind, conn_id, data)
                except Exception as exc:  # keep serving; the tests see the effect
                    print(f"host: {kind} failed: {exc!r}", file=sys.stderr)

    def handle(self, kind: str, conn_id: str | None, data: Any) -> None:
        if conn_id is None:
            return
        if kind in ("connect", "auth_connect"):
            self.ready(conn_id, data if kind == "auth_connect" else None)
        elif kind == "msg" and isinstance(data, dict):
            self.message(conn_id, data)

    def ready(self, conn_id: str, user_id: str | None) -> None:
        features = {"recovery": True, "encryption": True, "msgpack": True}
        details: dict[str, Any] = {"connection_id": conn_id, "user_id": user_id}
        details["version"] = 1
        payload = {"message": "Connection established", "details": details}
        details["features"] = features
        self.server.send_event(conn_id, {"t": "server_ready", "p": payload})

    def message(self, conn_id: str, message: dict[str, Any]) -> None:
        kind = message.get("t") or message.get("type")
        payload = message.get("p") or message.get("payload") or {}
        cid = message.get("cid")
        if kind == "subscription_update":
            self.subscription(conn_id, payload, cid)
        elif kind == "publish":
            self.publish(payload, message.get("id"))
        elif kind == "sync_request":
            answer = {"topics": payload.get("topics", []), "count": 0}
            self.reply(conn_id, "snapshot_complete", answer, cid)
        elif kind == "echo":
            self.reply(conn_id, "echo", payload, cid)

    def subscription(self, conn_id: str, body: dict[str, Any], cid: Any) -> None:
        topics = [t for t in body.get("topics", []) if isinstance(t, str)]
        if body.get("action") == "unsubscribe":
            self.server.unsubscribe_connection(conn_id, topics)
            done = {"action": "unsubscribe", "success_topics": topics}
            self.reply(conn_id, "subscription_update", done, cid)
            return
        positions = body.get("recovery") or {}
        recovery: dict[str, Any] = {}
        for topic in topics:
            position = positions.get(topic) if body.get("recover") else None
            if position:
                status = self.server.subscribe_with_recovery(
                    conn_id, [topic], True, position["epoch"], position["offset"]
                )
                recovery[topic] = status["topics"][topic]
            else:
                self.server.subscribe_with_recovery(conn_id, [topic], False, None, None)
        answer: dict[str, Any] = {
            "action": "subscribe",
            "success_topics": topics,
            "failed_topics": [],
            "recovery": recovery,
        }
        self.reply(conn_id, "subscription_update", answer, cid)

    def publish(self, body: dict[str, Any], message_id: Any) -> None:
        topic = body.get("topic")
        if not isinstance(topic, str):
            return
        envelope = {
            "t": body.get("type") or topic,
            "p": body.get("data"),
            "id": message_id or str(uuid.uuid4()),
        }
        self.server.broadcast_local(topic, json.dumps(envelope))

    def reply(self, conn_id: str, kind: str, payload: Any, cid: Any) -> None:
        event: dict[str, Any] = {"t": kind, "p": payload}
        if cid is not None:
            event["cid"] = cid
        self.server.send_event(conn_id, event)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--jwt-secret")
    args = parser.parse_args()
    port = args.port or free_port()
    secret = args.jwt_secret.encode() if args.jwt_secret else None
    # The 2.5.1 engine: not the API of our wheel, whose stub mypy reads when the wheel
    # is installed beside the client (`make pyclient-test` puts it there).
    server: Any = RustWSEServer(
        "127.0.0.1", port, recovery_enabled=True, jwt_secret=secret, ping_interval=5
    )
    server.enable_drain_mode()
    server.start()
    wait_until_listening(port)
    host = Host(server)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: host.stopping.set())
    print(f"listening on 127.0.0.1:{port}", flush=True)
    host.serve()
    server.stop()


def wait_until_listening(port: int, deadline: float = 10.0) -> None:
    """The 2.5.1 `start()` returns before its engine listens: wait (bounded) for it."""
    until = time.monotonic() + deadline
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > until:
                raise
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    main()
