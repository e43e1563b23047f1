"""One side of the drain benchmark: a RustWSEServer drained by one Python thread.

Runs under the interpreter of the server being measured (ours, or wse-server 2.5.1
from PyPI in its own CPython 3.12 venv) and uses only the API both share. It starts
the server and prints `ready`; the clients then send while nobody drains, so the
server's inbound queue fills (up to its limit; past it, a server either stops reading
its sockets or drops). On `go` (a line on stdin) it drains with
`drain_inbound(256, 50)` on this one thread as fast as it can, checking every message:
each client numbers its messages from 0, so a message whose number is not the next
one expected from its client is out of order. It stops when `--expect` messages
arrived, or nothing arrived for `--idle` seconds, and prints one JSON line with what
it saw; `seconds` runs from `go` to the last message.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

from wse_server._wse_accel import RustWSEServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--limit", type=float, default=120.0)
    args = parser.parse_args()

    server: Any = RustWSEServer("127.0.0.1", args.port)
    if hasattr(server, "enable_drain_mode"):
        server.enable_drain_mode()  # the 2.x server needs it before start()
    server.start()
    print("ready", flush=True)
    sys.stdin.readline()

    next_n: dict[int, int] = {}
    received = disorder = 0
    first = last = started = idle_since = time.monotonic()
    while received < args.expect:
        now = time.monotonic()
        if now - started > args.limit or (received and now - idle_since > args.idle):
            break
        events = server.drain_inbound(256, 50)
        if events:
            idle_since = time.monotonic()
        for kind, _conn, data in events:
            if kind != "msg":
                continue
            payload = data["p"]
            client, n = payload["c"], payload["n"]
            if n != next_n.get(client, 0):
                disorder += 1
            next_n[client] = n + 1
            received += 1
        if events:
            last = time.monotonic()
    dropped = (
        server.inbound_dropped_count()
        if hasattr(server, "inbound_dropped_count")
        else 0
    )
    server.stop()
    result = {
        "python": platform.python_version(),
        "received": received,
        "disorder": disorder,
        "seconds": last - first,
        "dropped_reported": dropped,
    }
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
