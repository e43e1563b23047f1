"""The envelope of PROTOCOL.md section 3 as router mode writes it, and the frame forms.

Envelopes are written by orjson with the payload spliced in as already-encoded JSON
(`orjson.Fragment`), so a payload is converted once however many connections get it,
and keys come out in the protocol's order (`c, t, p, id, ts, v`, then `seq` or
`tp, e, o`, then `pri`, `cid`), with the heartbeats byte-exact as 2.x clients match
them. Compression and msgpack are the engine's Rust codecs.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from wse_server._payload import dumps
from wse_server._wse_accel import compress_c_frame, msgpack_from_envelope

#: `t` values that are system messages (category `WSE`).
SYSTEM_TYPES = frozenset(
    {
        "server_ready",
        "server_hello",
        "client_hello_ack",
        "connection_state_change",
        "subscription_update",
        "snapshot_complete",
        "error",
        "ping",
        "pong",
        "PONG",
    }
)

#: Messages that stay plaintext JSON text on every connection (PROTOCOL.md 5, 7).
PLAINTEXT_TYPES = frozenset({"server_hello", "ping", "PONG", "error"})

NORMAL = 5


def category(t: str) -> str:
    """`S`, `WSE` or `U` for type `t` (PROTOCOL.md section 3)."""
    if "_snapshot" in t or t.startswith("snapshot_"):
        return "S"
    return "WSE" if t in SYSTEM_TYPES else "U"


def unix_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    """Unix milliseconds as `2026-01-15T10:30:00.123Z`."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits."""
    raw = bytearray(unix_ms().to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def epoch_id() -> str:
    """A fresh topic epoch: 8 lowercase hex digits."""
    return os.urandom(4).hex()


def direct(
    t: str,
    payload_json: bytes,
    seq: int,
    *,
    pri: int = NORMAL,
    cid: str | None = None,
) -> bytes:
    """The envelope of a message to one connection."""
    now = unix_ms()
    envelope: dict[str, Any] = {
        "c": category(t),
        "t": t,
        "p": orjson.Fragment(payload_json),
        "id": uuid7(),
        "ts": iso_ms(now),
        "v": 1,
        "seq": seq,
    }
    if pri != NORMAL:
        envelope["pri"] = pri
    if cid is not None:
        envelope["cid"] = cid
    return orjson.dumps(envelope)


def publication(
    topic: str,
    t: str,
    payload_json: bytes,
    epoch: str,
    offset: int,
    *,
    pri: int = NORMAL,
    message_id: str | None = None,
    ts_ms: int | None = None,
) -> bytes:
    """The envelope of a topic publication: no `seq`, `(tp, e, o)` instead.

    `ts_ms` is when it was published (now by default): a publication that came
    through Redis keeps its publisher's time, so every instance writes the same `ts`.
    """
    envelope: dict[str, Any] = {
        "c": category(t),
        "t": t,
        "p": orjson.Fragment(payload_json),
        "id": message_id or uuid7(),
        "ts": iso_ms(unix_ms() if ts_ms is None else ts_ms),
        "v": 1,
        "tp": topic,
        "e": epoch,
        "o": offset,
    }
    if pri != NORMAL:
        envelope["pri"] = pri
    return orjson.dumps(envelope)


def server_ping() -> bytes:
    """The server's heartbeat; starts `{"c":"WSE","t":"ping","p":` as clients expect."""
    now = unix_ms()
    return orjson.dumps({"c": "WSE", "t": "ping", "p": {"server_time": now}})


def pong(client_timestamp: Any, seq: int) -> bytes:
    """The answer to a client `ping`; starts `{"c":"WSE","t":"PONG","p":`."""
    now = unix_ms()
    latency = None
    if isinstance(client_timestamp, int | float) and not isinstance(
        client_timestamp, bool
    ):
        latency = max(0, now - int(client_timestamp))
    payload = {
        "client_timestamp": client_timestamp,
        "server_timestamp": now,
        "latency": latency,
    }
    return direct("PONG", dumps(payload), seq)


class Frames:
    """One envelope in every form a connection may take, each made at most once."""

    __slots__ = ("_compressed", "_msgpack", "json", "t")

    def __init__(self, t: str, json: bytes) -> None:
        self.t = t
        self.json = json
        self._compressed: bytes | bool | None = False
        self._msgpack: bytes | None = None

    def compressed(self, threshold: int, level: int) -> bytes | None:
        """The `C:` frame, when the JSON is over `threshold` and shrinks."""
        if self._compressed is False:
            fits = len(self.json) <= threshold
            self._compressed = None if fits else compress_c_frame(self.json, level)
        return self._compressed if isinstance(self._compressed, bytes) else None

    def msgpack(self) -> bytes:
        """`M:` plus msgpack."""
        if self._msgpack is None:
            self._msgpack = msgpack_from_envelope(self.json)
        return self._msgpack
