"""Frames to envelopes and back (PROTOCOL.md §3, §4). Sans-I/O: no sockets, no clock.

Inbound, a WebSocket message is one of: JSON text (optionally behind a legacy `WSE`,
`S` or `U` prefix), binary JSON, `C:` + zlib, bare zlib (first byte 0x78), `M:` +
msgpack, or `E:` + AES-GCM around JSON or `M:` msgpack. `Codec.decode` turns any of
them into the envelope dict; `envelope_to_event` makes the public `WSEEvent`.

Outbound, the client speaks JSON text as the 2.x clients do (every WSE server reads
it), sealed in `E:` once end-to-end encryption is agreed, signed when a signer is set.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import zlib
from collections.abc import Callable
from typing import Any

from .crypto import E2ESession, Signer
from .errors import WSEEncryptionError, WSEProtocolError
from .types import WSEEvent

try:
    import msgpack

    HAVE_MSGPACK = True
except ImportError:  # pragma: no cover - the [all] extra is not installed
    HAVE_MSGPACK = False

__all__ = [
    "HAVE_MSGPACK",
    "Codec",
    "MessageIds",
    "category_of",
    "envelope_to_event",
    "is_heartbeat",
    "iso_now",
]

Envelope = dict[str, Any]


class Codec:
    """Decodes inbound frames and encodes outbound envelopes for one connection.

    `max_size` bounds what a compressed frame may inflate to (a zlib bomb raises
    `WSEProtocolError` instead of filling memory). `session` is set once end-to-end
    encryption is agreed; from then on outbound envelopes are sealed.
    """

    def __init__(
        self,
        *,
        max_size: int = 1 << 20,
        signer: Signer | None = None,
        verify_signatures: bool = False,
    ) -> None:
        self.max_size = max_size
        self.session: E2ESession | None = None
        self.signer = signer
        self.verify_signatures = verify_signatures and signer is not None
        self.bad_signatures = 0

    def decode(self, data: str | bytes) -> Envelope:
        """The envelope in one frame; `WSEProtocolError` (or `WSEEncryptionError` for
        `E:` frames) when it cannot be read."""
        if type(data) is str:
            if data[:1] == "{" and not self.verify_signatures:
                return _json_object(data)
            return self._decode_text(data)
        assert isinstance(data, bytes)
        return self._decode_binary(data)

    def encode(self, envelope: Envelope) -> str | bytes:
        """The frame to send: JSON text, signed when a signer is set, or an `E:`
        frame once encryption is agreed."""
        text = _dumps(envelope)
        if self.session is not None:
            return self.session.seal(text.encode())
        if self.signer is not None:
            return self.signer.sign(text)
        return text

    def _decode_text(self, text: str) -> Envelope:
        if not text.startswith("{"):
            text = _strip_legacy_prefix(text)
        if self.verify_signatures and ',"sig":' in text:
            signer = self._verifier(text)
            if signer is not None and not signer.verify(text):
                self.bad_signatures += 1
                raise WSEProtocolError("message signature does not verify")
        return _json_object(text)

    def _verifier(self, text: str) -> Signer | None:
        """The key a text frame's `sig` is checked under (PROTOCOL.md §6): the E2E
        session's signing key once encryption is agreed, else the shared secret.
        `server_hello` is signed under the E2E key it lets the client derive, so it
        is not checked itself (`None`)."""
        if self.session is not None:
            return Signer(self.session.signing_key)
        if text.startswith('{"c":"WSE","t":"server_hello"'):
            return None
        return self.signer

    def _decode_binary(self, data: bytes) -> Envelope:
        head = data[:2]
        if head == b"M:":
            return _msgpack_object(data[2:])
        if head == b"C:":
            return _json_object(self._inflate(data[2:]))
        if head == b"E:":
            return self._open(data)
        if data[:1] == b"{":
            return _json_object(data)
        if data[:1] == b"\x78":
            return _json_object(self._inflate(data))
        raise WSEProtocolError(f"unknown binary frame starting {data[:4]!r}")

    def _open(self, frame: bytes) -> Envelope:
        if self.session is None:
            raise WSEEncryptionError("sealed frame before encryption was agreed")
        plain = self.session.open(frame)
        if plain[:2] == b"M:":
            return _msgpack_object(plain[2:])
        return _json_object(plain)

    def _inflate(self, body: bytes) -> bytes:
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(body, self.max_size + 1)
        except zlib.error as exc:
            raise WSEProtocolError(f"compressed frame does not inflate: {exc}") from exc
        if len(out) > self.max_size or inflater.unconsumed_tail:
            raise WSEProtocolError(f"compressed frame inflates past {self.max_size}")
        if not inflater.eof:
            raise WSEProtocolError("compressed frame is truncated")
        return out


def envelope_to_event(env: Envelope) -> WSEEvent:
    """The public event for one envelope (aliases `type` and `payload` accepted)."""
    get = env.get
    kind = get("t")
    if kind is None:
        kind = get("type")
    if not isinstance(kind, str):
        raise WSEProtocolError("message has no type")
    payload = get("p", _MISSING)
    if payload is _MISSING:
        payload = get("payload")
    category = get("c")
    if category is None:
        category = category_of(kind)
    return WSEEvent(
        kind,
        payload,
        get("id"),
        get("seq"),
        get("ts"),
        category,
        get("pri", 5),
        get("cid"),
        get("tp"),
        get("e"),
        get("o"),
        env,
    )


def category_of(kind: str) -> str:
    """The category rule of PROTOCOL.md §3 for an envelope without `c`."""
    if "_snapshot" in kind or kind.startswith("snapshot_"):
        return "S"
    if kind in SYSTEM_TYPES:
        return "WSE"
    return "U"


def is_heartbeat(text: str) -> bool:
    """True for the server's `ping` and its `PONG` answer, matched by their fixed
    first bytes as 2.x clients do (PROTOCOL.md §7)."""
    return text.startswith(_PING_HEAD) or text.startswith(_PONG_HEAD)


def iso_now() -> str:
    """The wire time format: ISO-8601 UTC with milliseconds and `Z`."""
    now = time.time()
    second = int(now)
    global _second_text
    if _second_text[0] != second:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_text = (second, stamp)
    return f"{_second_text[1]}.{int((now - second) * 1000):03d}Z"


class MessageIds:
    """Message ids for de-duplication by the server: a random prefix per client
    and a counter (cheaper than a UUID per message, unique all the same)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._count)}"


def _json_object(text: str | bytes) -> Envelope:
    try:
        if type(text) is str:
            # The C scanner without `json.loads`' wrappers; a value that does not
            # end the text (trailing spaces, or garbage) takes the full path.
            value, end = _scan(text, 0)
            if end != len(text):
                value = json.loads(text)
        else:
            value = json.loads(text)
    except StopIteration:
        raise WSEProtocolError("message is not JSON") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WSEProtocolError(f"message is not JSON: {exc}") from exc
    if type(value) is not dict:
        raise WSEProtocolError("message is not a JSON object")
    return value


def _msgpack_object(body: bytes) -> Envelope:
    if not HAVE_MSGPACK:  # pragma: no cover - msgpack is installed for the tests
        raise WSEProtocolError("msgpack frame, but msgpack is not installed")
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise WSEProtocolError(f"message is not msgpack: {exc}") from exc
    if type(value) is not dict:
        raise WSEProtocolError("msgpack message is not a map")
    return value


def _strip_legacy_prefix(text: str) -> str:
    for prefix in ("WSE{", "S{", "U{"):
        if text.startswith(prefix):
            return text[len(prefix) - 1 :]
    return text


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
_MISSING = object()
# `scan_once` is set on every JSONDecoder (the C scanner) but missing from typeshed.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_second_text: tuple[int, str] = (-1, "")
_PING_HEAD = '{"c":"WSE","t":"ping"'
_PONG_HEAD = '{"c":"WSE","t":"PONG"'
