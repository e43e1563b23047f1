"""Messages per second one Python thread drains from 100 clients: ours against 2.5.1.

For each server (ours, then the `wse-server` 2.5.1 wheel from PyPI, each under its
own interpreter), in the same run on the same machine:

1. start `drain_child.py` under that server's interpreter; it runs the server with
   its default settings and drains with one Python thread;
2. open `--clients` WebSocket connections (raw sockets, one thread each) and send
   `--messages` small JSON messages on each as fast as the server takes them
   (`{"t":"m","p":{"c":client,"n":number}}`, masked as RFC 6455 requires), while
   nobody drains: the server's inbound queue fills to its limit;
3. `--settle` seconds after the last send finished (or stalled), tell the child to
   drain; it counts what it drained, from then to the last message.

The drain of what 2.5.1 queued takes a fraction of a second, so one round is at the
mercy of the scheduler: the servers take turns for `--rounds` rounds (5 by default),
and the table shows each server's median round and every round's ratio.

With the defaults (200,000 messages) the sends outrun the queue of either server
(131,072 events): past it, a server that drops events loses the rest, one that
applies TCP backpressure holds the clients back and hands the rest over as Python
drains. Lost = sent - drained. Prints a Markdown table with the date, the machine
and the command.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Result:
    name: str
    python: str
    sent: int
    received: int
    seconds: float
    disorder: int
    dropped_reported: int
    send_seconds: float

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost(self) -> int:
        return self.sent - self.received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", required=True, help="python with our wse_server")
    parser.add_argument("--theirs", required=True, help="python with wse-server 2.5.1")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--messages", type=int, default=2000, help="per client")
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    rounds: list[tuple[Result, Result]] = []
    for _ in range(args.rounds):
        ours = run("wse_server (this repository)", args.ours, args)
        theirs = run("wse-server 2.5.1 (PyPI)", args.theirs, args)
        rounds.append((ours, theirs))
    print(report(rounds, args))
    if any(ours.lost or ours.disorder for ours, _ in rounds):
        sys.exit(1)


def median(results: list[Result]) -> Result:
    """The round with the median drain rate (the upper one of an even count)."""
    return sorted(results, key=lambda r: r.rate)[len(results) // 2]


def run(name: str, python: str, args: argparse.Namespace) -> Result:
    clients, messages = args.clients, args.messages
    expect = str(clients * messages)
    port = free_port()
    child = subprocess.Popen(
        [python, str(HERE / "drain_child.py"), "--port", str(port), "--expect", expect],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    if child.stdout.readline().strip() != "ready":
        child.kill()
        raise SystemExit(f"{name}: the server did not start")
    sockets = [upgrade(port) for _ in range(clients)]
    buffers = [frames(client, messages) for client in range(clients)]
    send_done: list[float] = []
    started = time.monotonic()

    def send(sock: socket.socket, data: bytes) -> None:
        # A connection the server closed shows in the count as loss.
        with contextlib.suppress(OSError):
            sock.sendall(data)
        send_done.append(time.monotonic() - started)

    pairs = zip(sockets, buffers, strict=True)
    threads = [threading.Thread(target=send, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    # Until every send finished, or none finished for a while (held back by TCP).
    settled = len(send_done)
    while len(send_done) < clients:
        time.sleep(args.settle)
        if len(send_done) == settled:
            break
        settled = len(send_done)
    time.sleep(args.settle)
    out, _ = child.communicate("go\n", timeout=300)
    for thread in threads:
        thread.join(30)
    for sock in sockets:
        sock.close()
    seen = json.loads(out.strip().splitlines()[-1])
    return Result(
        name=name,
        python=seen["python"],
        sent=clients * messages,
        received=seen["received"],
        seconds=seen["seconds"],
        disorder=seen["disorder"],
        dropped_reported=seen["dropped_reported"],
        send_seconds=max(send_done, default=0.0),
    )


def upgrade(port: int) -> socket.socket:
    """A WebSocket connection to /wse, past the 101, retried while the port opens."""
    deadline = time.monotonic() + 10
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /wse HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("the server closed the connection during the upgrade")
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"upgrade refused: {answer[:80]!r}")
    sock.settimeout(None)
    return sock


def frames(client: int, messages: int) -> bytes:
    """`messages` masked text frames numbered from 0, under one random key."""
    key = os.urandom(4)
    out = bytearray()
    for n in range(messages):
        payload = b'{"t":"m","p":{"c":%d,"n":%d}}' % (client, n)
        stream = (key * (len(payload) // 4 + 1))[: len(payload)]
        masked = int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")
        out += bytes([0x81, 0x80 | len(payload)]) + key
        out += masked.to_bytes(len(payload), "big")
    return bytes(out)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def report(rounds: list[tuple[Result, Result]], args: argparse.Namespace) -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lines = [
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"machine: {cpu}, {os.cpu_count()} cores, kernel {platform.release()}",
        f"command: {' '.join(sys.argv)}",
        f"load: {args.clients} clients x {args.messages} messages, one drain thread, "
        f"{len(rounds)} rounds; the median round of each server",
        "",
        "| server | Python | sent | drained | lost | drained/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    results = [median([r[0] for r in rounds]), median([r[1] for r in rounds])]
    for r in results:
        lost = f"{r.lost:,} ({100 * r.lost / r.sent:.1f} %)"
        lines.append(
            f"| {r.name} | {r.python} | {r.sent:,} | {r.received:,} | {lost} "
            f"| {r.rate:,.0f} |"
        )
    ours, theirs = results
    if theirs.rate > 0:
        lines.append("")
        ratio = ours.rate / theirs.rate
        lines.append(f"ratio of the medians (ours / 2.5.1): {ratio:.2f}x")
    each = [f"{o.rate / t.rate:.2f}x" for o, t in rounds if t.rate > 0]
    lines.append(f"ratio round by round: {', '.join(each)}")
    rates = ", ".join(f"{o.rate:,.0f} / {t.rate:,.0f}" for o, t in rounds)
    lines.append(f"drained/s round by round (ours / 2.5.1): {rates}")
    for r in results:
        if r.disorder or r.dropped_reported:
            lines.append(
                f"{r.name}: {r.disorder} out of order, "
                f"{r.dropped_reported} reported dropped by the server"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
