"""A minimal application host for the published wse-server 2.5.1 engine.

The 2.x engine (`wse_server._wse_accel.RustWSEServer`) handles the socket,
`client_hello`/`server_hello`, heartbeats and E2E itself, and leaves the rest
to its Python application: `server_ready`, subscriptions (with recovery) and
publishing. This script is that application, small enough for tests:

- prints `listening <port>` once the engine runs;
- on every connection sends `server_ready`;
- answers `subscription_update` (subscribe with or without recovery,
  unsubscribe) the way PROTOCOL.md §7 describes;
- publishes a client's `publish` message to its topic;
- reads commands from stdin, one JSON object per line:
  `{"publish": topic, "data": ...}` or `{"stop": true}` (EOF stops too).

Usage: python wse25_host.py PORT
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

from wse_server._wse_accel import RustWSEServer


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def wait_until_listening(port: int, deadline: float = 10.0) -> None:
    """`start()` returns before the 2.5.1 engine listens: wait (bounded) for it."""
    until = time.monotonic() + deadline
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > until:
                raise
            time.sleep(0.02)


class Host:
    def __init__(self, port: int) -> None:
        self.server = RustWSEServer("127.0.0.1", port, recovery_enabled=True)
        self.server.enable_drain_mode()
        self.running = True

    def run(self) -> None:
        self.server.start()
        wait_until_listening(int(sys.argv[1]))
        print(f"listening {sys.argv[1]}", flush=True)
        threading.Thread(target=self.commands, daemon=True).start()
        while self.running:
            for kind, conn_id, data in self.server.drain_inbound(256, 50):
                self.handle(kind, conn_id, data)
        self.server.stop()

    def handle(self, kind: str, conn_id: str | None, data: object) -> None:
        if kind in ("connect", "auth_connect") and conn_id is not None:
            self.server_ready(conn_id)
        elif kind == "msg" and conn_id is not None and isinstance(data, dict):
            t = data.get("t") or data.get("type")
            p = data.get("p") or data.get("payload") or {}
            if t == "subscription_update":
                self.subscription(conn_id, p)
            elif t == "publish":
                self.publish(p.get("topic"), p.get("data"))

    def server_ready(self, conn_id: str) -> None:
        details = {
            "connection_id": conn_id,
            "user_id": None,
            "server_time": now_iso(),
            "version": 1,
            "features": {"recovery": True, "encryption": True},
        }
        self.server.send_event(
            conn_id,
            {"t": "server_ready", "p": {"message": "ready", "details": details}},
        )

    def subscription(self, conn_id: str, p: dict) -> None:
        topics = [t for t in p.get("topics", []) if isinstance(t, str)]
        if p.get("action") == "unsubscribe":
            self.server.unsubscribe_connection(conn_id, topics)
            answer = {"action": "unsubscribe", "success_topics": topics}
        else:
            answer = {
                "action": "subscribe",
                "success_topics": topics,
                "failed_topics": [],
                "recovery": self.subscribe(conn_id, topics, p),
            }
        self.server.send_event(
            conn_id, {"t": "subscription_update", "p": answer, "id": str(uuid.uuid4())}
        )

    def subscribe(self, conn_id: str, topics: list[str], p: dict) -> dict:
        positions = p.get("recovery") or {}
        results: dict = {}
        for topic in topics:
            at = positions.get(topic) if p.get("recover") else None
            if not isinstance(at, dict):
                self.server.subscribe_connection(conn_id, [topic])
                continue
            # The engine takes one position per call: one topic at a time.
            r = self.server.subscribe_with_recovery(
                conn_id, [topic], True, at.get("epoch"), at.get("offset")
            )
            info = r.get("topics", {}).get(topic, {})
            results[topic] = {
                "epoch": info.get("epoch"),
                "offset": info.get("offset"),
                "recovered": bool(info.get("recovered")),
                "count": info.get("count", 0),
            }
        return results

    def publish(self, topic: object, data: object) -> None:
        if isinstance(topic, str):
            self.server.broadcast_local(topic, json.dumps({"t": topic, "p": data}))

    def commands(self) -> None:
        for line in sys.stdin:
            command = json.loads(line)
            if "publish" in command:
                self.publish(command["publish"], command.get("data"))
            if "stop" in command:
                self.running = False
                return
        self.running = False


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    Host(int(sys.argv[1])).run()
