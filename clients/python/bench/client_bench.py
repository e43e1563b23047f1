"""Receive and send rates of one Python client, ours next to `wse-client` 2.5.1.

A program, not a test: `make pyclient-bench` runs it. It starts a release `wse-server`
(one shard, pinned to CPU 1, the publisher beside it) and, for each client in turn and
for several rounds, a child process pinned to CPU 0 that:

1. connects, subscribes to the topic, and says "ready";
2. blocks its event loop on stdin while the driver publishes N messages to the topic
   (they wait in the server's queue and the kernel's socket buffers);
3. on "go", drains all N through `recv()` and reports events per second: only the
   client's own work on one core is timed, never the publisher's;
4. sends messages with `send()` for a fixed time, with its default settings, and
   reports messages per second; the driver checks the count against the server's
   `wse_messages_in_total`.

The peer runs from the repository's `.venv` (where `wse-client==2.5.1` is pinned; it
has the same import name as ours, hence a separate interpreter). Results are ratios
of one run; the table records the machine and versions beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
TOPIC = "bench.quotes"
PAYLOAD = {"sym": "ACME", "px": 101.25, "qty": 300, "side": "buy"}


# -- the child: one client, one core ---------------------------------------------------


async def child(impl: str, url: str, count: int, send_seconds: float) -> None:
    import logging

    import wse_client

    # The peer logs every send its rate limiter refuses; the counts tell that story.
    logging.getLogger("wse_client").setLevel(logging.CRITICAL)

    client: Any = wse_client.AsyncWSEClient(url, queue_size=count + 1000)
    await client.connect()
    await client.subscribe([TOPIC])
    await probe(client)
    print("ready", flush=True)
    sys.stdin.readline()  # blocks the loop: publications pile up unread

    started = time.perf_counter()
    received = 0
    while received < count:
        event = await client.recv(timeout=30)
        if event.topic == TOPIC and event.payload.get("n", -1) >= 0:
            received += 1
    receive_s = time.perf_counter() - started

    sent = 0
    started = time.perf_counter()
    deadline = started + send_seconds
    while time.perf_counter() < deadline:
        await client.send("bench", {"n": sent})
        sent += 1
    send_s = time.perf_counter() - started
    await asyncio.sleep(0.5)
    result = {"impl": impl, "received": received, "receive_s": receive_s}
    result |= {"sent": sent, "send_s": send_s}
    print(json.dumps(result), flush=True)
    await (client.close() if impl == "ours" else client.disconnect())


async def probe(client: Any) -> None:
    """Waits until a publication reaches the client: the subscription is live."""
    publisher = await open_publisher(client_url(client))
    try:
        for _ in range(100):
            await publisher.send(publish_frame(-1))
            try:
                event = await client.recv(timeout=0.1)
            except TimeoutError:
                continue
            if event.topic == TOPIC:
                return
        raise SystemExit("the subscription never took effect")
    finally:
        await publisher.close()


def client_url(client: Any) -> str:
    return os.environ["BENCH_URL"]


# -- the driver ------------------------------------------------------------------------


async def open_publisher(url: str) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(url, compression=None, max_size=None)
    ready = json.loads(await ws.recv())
    assert ready["t"] == "server_ready", ready
    return ws


def publish_frame(n: int) -> str:
    body = {"t": "publish", "p": {"topic": TOPIC, "data": {**PAYLOAD, "n": n}}}
    return json.dumps(body, separators=(",", ":"))


async def publish(url: str, count: int) -> float:
    """Publishes `count` messages and waits until the server has read them all."""
    ws = await open_publisher(url)
    frames = [publish_frame(n) for n in range(count)]
    before = metric(url, "wse_publications_total")
    started = time.perf_counter()
    for frame in frames:
        await ws.send(frame)
    while metric(url, "wse_publications_total") < before + count:
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    await ws.close()
    return elapsed


def metric(url: str, name: str) -> float:
    base = url.removeprefix("ws://").removesuffix("/wse")
    with urllib.request.urlopen(f"http://{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


def start_server(binary: str) -> tuple[subprocess.Popen[str], str]:
    args = [
        binary,
        *("--host", "127.0.0.1", "--port", "0", "--cores", "1"),
        *("--allow-client-publish", "--idle-timeout", "600"),
        *("--max-outbound-queue-bytes", str(512 << 20)),
        *("--rate-limit-capacity", "100000000", "--rate-limit-refill", "100000000"),
        *("--history-size", "16"),
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, "ws://" + line.rsplit(" ", 1)[1] + "/wse"


async def run_round(
    impl: str, python: str, url: str, count: int, send_seconds: float
) -> dict[str, Any]:
    env = {**os.environ, "BENCH_URL": url}
    if impl == "ours":
        env["PYTHONPATH"] = str(ROOT / "clients" / "python" / "src")
    else:
        env.pop("PYTHONPATH", None)
    args = ["taskset", "-c", "0", python, __file__, "child", impl, url]
    args += [str(count), str(send_seconds)]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if line.strip() != b"ready":
        raise SystemExit(f"{impl}: child did not get ready: {line!r}")
    published_s = await publish(url, count)
    await asyncio.sleep(0.5)
    sent_before = metric(url, "wse_messages_in_total")
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    result: dict[str, Any] = json.loads(line)
    await asyncio.wait_for(proc.wait(), 30)
    arrived = metric(url, "wse_messages_in_total") - sent_before
    result["server_counted"] = int(arrived)
    result["published_s"] = published_s
    return result


def versions(peer_python: str) -> dict[str, str]:
    code = "import importlib.metadata as m; print(m.version('wse-client'))"
    peer = subprocess.run(
        [peer_python, "-c", code], capture_output=True, text=True, check=True
    )
    return {"python": platform.python_version(), "peer": peer.stdout.strip()}


async def driver(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {1})
    server, url = start_server(args.server)
    rows: dict[str, list[dict[str, Any]]] = {"ours": [], "wse-client 2.5.1": []}
    try:
        for _ in range(args.rounds):
            for impl, python in (("ours", sys.executable), ("peer", args.peer_python)):
                name = "ours" if impl == "ours" else "wse-client 2.5.1"
                row = await run_round(impl, python, url, args.count, args.send_seconds)
                rows[name].append(row)
    finally:
        server.terminate()
        server.wait(10)
    report(rows, args)


def report(rows: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\nclient bench: {args.count} publications per round, {args.rounds} rounds")
    print(f"command: {' '.join(sys.argv)}")
    print(f"{'client':<20} {'recv events/s':>14} {'send msgs/s':>12}")
    medians: dict[str, float] = {}
    for name, results in rows.items():
        recv = statistics.median(r["received"] / r["receive_s"] for r in results)
        # Sent means received by the server: the peer's limiter drops over its cap.
        send = statistics.median(r["server_counted"] / r["send_s"] for r in results)
        medians[name] = recv
        print(f"{name:<20} {recv:>14,.0f} {send:>12,.0f}")
        for r in results:
            print(
                f"  round: {r['received'] / r['receive_s']:,.0f} events/s;"
                f" send() called {r['sent']:,} times in {r['send_s']:.1f} s,"
                f" the server received {r['server_counted']:,}"
            )
    ratio = medians["ours"] / medians["wse-client 2.5.1"]
    pairs = [
        (a["received"] / a["receive_s"]) / (b["received"] / b["receive_s"])
        for a, b in zip(rows["ours"], rows["wse-client 2.5.1"], strict=True)
    ]
    print(
        f"receive ratio, ours / wse-client 2.5.1: {ratio:.2f}x of the medians;"
        f" round by round (each pair ran back to back): "
        + ", ".join(f"{p:.2f}x" for p in pairs)
    )
    info = versions(args.peer_python)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores,"
        f" kernel {platform.release()}; CPython {info['python']};"
        f" peer wse-client {info['peer']}; client pinned to CPU 0,"
        " server and publisher to CPU 1"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode")
    run = sub.add_parser("run", help="the benchmark (default)")
    run.add_argument("--server", default=os.environ.get("WSE_SERVER", ""))
    run.add_argument("--peer-python", default=str(ROOT / ".venv" / "bin" / "python"))
    run.add_argument("--count", type=int, default=50_000)
    run.add_argument("--rounds", type=int, default=5)
    run.add_argument("--send-seconds", type=float, default=2.0)
    kid = sub.add_parser("child", help=argparse.SUPPRESS)
    kid.add_argument("impl")
    kid.add_argument("url")
    kid.add_argument("count", type=int)
    kid.add_argument("send_seconds", type=float)
    args = parser.parse_args(sys.argv[1:] or ["run"])
    if args.mode == "child":
        asyncio.run(child(args.impl, args.url, args.count, args.send_seconds))
        return
    if not args.server:
        parser.error("give --server or set WSE_SERVER")
    asyncio.run(driver(args))


if __name__ == "__main__":
    main()
