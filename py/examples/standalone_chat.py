"""A chat room on RustWSEServer: the Rust engine serves the sockets, Python decides.

Run it, then connect any WebSocket client to ws://127.0.0.1:5006/wse and send
`{"t": "chat", "p": {"text": "hello"}}`: every connected client receives it as a
publication of topic `room`.

    python py/examples/standalone_chat.py [--host 127.0.0.1] [--port 5006]

It prints `listening on HOST:PORT` once the port is bound, and stops cleanly on
Ctrl-C or SIGTERM (clients are closed with 1012 and reconnect elsewhere).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from wse_server import RustWSEServer

logger = logging.getLogger("standalone_chat")


def handle(server: RustWSEServer, kind: str, conn_id: str | None, data: Any) -> None:
    """One event from the engine (PROTOCOL.md section 8)."""
    if conn_id is None:
        return  # presence events carry no connection
    if kind in ("connect", "auth_connect"):
        server.subscribe_connection(conn_id, ["room"])
        server.send_event(conn_id, {"t": "welcome", "p": {"room": "room"}})
    elif kind == "msg" and data.get("t") == "chat":
        text = str(data.get("p", {}).get("text", ""))[:500]
        server.publish("room", {"from": conn_id, "text": text}, event_type="chat")
    elif kind == "disconnect":
        logger.info("%s left (%s)", conn_id, data["code"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5006)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    server = RustWSEServer(args.host, args.port, max_connections=10_000)
    server.start()
    host, port = server.local_addr()
    print(f"listening on {host}:{port}", flush=True)

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.is_set():
        # Waits up to 50 ms without holding the GIL; one batch of up to 256 events.
        for kind, conn_id, data in server.drain_inbound(256, 50):
            handle(server, kind, conn_id, data)
    server.stop()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
