"""A Python application on a ``RustWSEServer`` (``wse_server``), for loadbench.

The host drains the engine's inbound events from one Python thread with
``drain_inbound``, as a WSE application does, and gives the load client the subset of
the protocol it needs: the engine itself validates the JWT and sends ``server_ready``;
this host answers ``subscription_update`` (``subscribe_connection`` and an answer sent
with ``send``), relays ``publish`` to the topic with ``broadcast_local`` (one Python call
per publication, not per delivery), counts every other message as handed to the
application (checking that its ``p.n`` follows the connection's previous one), and
answers ``bench_stats`` with that count.

It runs the product we replace (PyPI ``wse-server`` 2.5.x, whose engine numbers the
topic's offsets when ``recovery_enabled`` is on) and, once it is built, our own package
of the same name: whichever ``wse_server`` the interpreter imports. It prints
``drain-host listening on HOST:PORT`` and runs until stdin closes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time

from wse_server import RustWSEServer


def main() -> None:
    args = parse_args()
    port = args.port or free_port()
    options = {
        "max_connections": args.max_connections,
        "jwt_secret": args.secret.encode(),
        "recovery_enabled": True,
        "rate_limit_capacity": 1e12,
        "rate_limit_refill": 1e12,
        "idle_timeout": 600,
    }
    try:
        # Ours pins its shards itself: to the cores this process may use (taskset).
        cores = sorted(os.sched_getaffinity(0))
        server = RustWSEServer("127.0.0.1", port, cores=cores, **options)
    except TypeError:
        # 2.5.x takes no `cores` (its tokio runtime stays within the process's cores).
        server = RustWSEServer("127.0.0.1", port, **options)
    enable = getattr(server, "enable_drain_mode", None)
    if enable is not None:
        enable()
    server.start()
    wait_until_listening(port)
    print(f"drain-host listening on 127.0.0.1:{port}", flush=True)
    done = threading.Event()
    threading.Thread(target=wait_for_stdin, args=(done,), daemon=True).start()
    Host(server).run(done)


class Host:
    """The application: counts, subscriptions and relayed publications."""

    def __init__(self, server: RustWSEServer) -> None:
        self.server = server
        self.messages = 0
        self.disorder = 0
        self.first = 0
        self.last = 0
        self.next_n: dict[str, int] = {}

    def run(self, done: threading.Event) -> None:
        drain = self.server.drain_inbound
        while not done.is_set():
            for kind, conn_id, data in drain(256, 50):
                if kind == "msg":
                    self.message(conn_id, data)

    def message(self, conn_id: str, data: dict) -> None:
        kind = data.get("t")
        payload = data.get("p") or {}
        if kind == "publish":
            text = json.dumps({"t": payload["topic"], "p": payload["data"]})
            self.server.broadcast_local(payload["topic"], text)
        elif kind == "subscription_update":
            topics = list(payload.get("topics", []))
            self.server.subscribe_connection(conn_id, topics)
            answer = {"success_topics": topics, "failed_topics": []}
            self.server.send(conn_id, envelope("subscription_update", answer))
        elif kind == "bench_stats":
            stats = {
                "msgs": self.messages,
                "disorder": self.disorder,
                "span_ns": self.last - self.first,
            }
            dropped = getattr(self.server, "inbound_dropped_count", None)
            if dropped is not None:
                stats["dropped"] = dropped()
            self.server.send(conn_id, envelope("bench_stats", stats))
        else:
            self.count(conn_id, payload.get("n") if isinstance(payload, dict) else None)

    def count(self, conn_id: str, n: object) -> None:
        want = self.next_n.get(conn_id, 0)
        if n != want:
            self.disorder += 1
        self.next_n[conn_id] = (n if isinstance(n, int) else want) + 1
        now = time.perf_counter_ns()
        if not self.first:
            self.first = now
        self.last = now
        self.messages += 1


def envelope(kind: str, payload: dict) -> str:
    """A system message as the engine's own start: ``{"c":"WSE","t":...``."""
    return json.dumps({"c": "WSE", "t": kind, "p": payload}, separators=(",", ":"))


def wait_until_listening(port: int, deadline: float = 10.0) -> None:
    """``start()`` may return before the engine listens: wait (bounded) until it does."""
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
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_stdin(done: threading.Event) -> None:
    sys.stdin.read()
    done.set()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--max-connections", type=int, default=10_000)
    return parser.parse_args()


if __name__ == "__main__":
    main()
