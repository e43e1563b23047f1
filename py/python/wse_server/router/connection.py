"""One router-mode client: reading its messages, queueing and writing ours.

Place: `Starlette WebSocket ⇄ **Connection** ⇄ WSERouter` (topic index, publishing).
Three tasks per connection: the reader (this coroutine, `run`), the writer (drains the
outbound queue onto the socket, so that a slow client never blocks a publisher) and
the heartbeat (`ping` every `heartbeat_interval`, close 4408 after `idle_timeout`
without a frame from the client).

Bounds: at most `max_outbound_queue` messages wait per connection (in the queue, or
held back for a snapshot); one more closes the connection with 4503 (slow consumer),
as PROTOCOL.md section 9 names it. Inbound messages over `max_message_size` close it
with 1009.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from wse_server._payload import dumps
from wse_server._wse_accel import (
    TopicAcl,
    TopicFilter,
    check_publication_type,
    check_topic,
    glob_match,
    inflate_zlib,
    msgpack_to_json,
)
from wse_server.router import wire
from wse_server.router.config import Cipher

if TYPE_CHECKING:
    from wse_server.router.hub import WSERouter

__all__ = ["Connection"]

logger = logging.getLogger("wse_server.router")

#: Inbound text prefixes of the 2.x category scheme, stripped (PROTOCOL.md section 3).
_LEGACY_PREFIXES = ("WSE{", "S{", "U{")


class Connection:
    """A connected client; the router's `send_to_connection` and handlers use it."""

    def __init__(
        self,
        router: WSERouter,
        websocket: WebSocket,
        *,
        user_id: str | None,
        acl: TopicAcl | None,
        msgpack: bool,
    ) -> None:
        self.router = router
        self.websocket = websocket
        #: The connection's id, also the `connection_id` the client sees.
        self.conn_id = wire.uuid7()
        self.user_id = user_id
        self.acl = acl
        self.msgpack = msgpack
        #: Subscribed patterns (names or globs) and their filters.
        self.subscriptions: dict[str, TopicFilter | None] = {}
        self._cipher: Cipher | None = None
        self._seq = 0
        self._outbox: asyncio.Queue[str | bytes] = asyncio.Queue()
        #: Patterns whose publications wait for a snapshot, with a count per request.
        self._holds: dict[str, int] = {}
        self._held: deque[tuple[str, wire.Frames]] = deque()
        self._last_seen = time.monotonic()
        self._closed = False

    # -- sending --------------------------------------------------------------

    def send_event(
        self,
        t: str,
        payload: Any,
        *,
        priority: int = wire.NORMAL,
        cid: str | None = None,
    ) -> bool:
        """Queues one message of type `t`; False when the connection is closing."""
        return self.send_json(t, dumps(payload), priority=priority, cid=cid)

    def send_json(
        self,
        t: str,
        payload_json: bytes,
        *,
        priority: int = wire.NORMAL,
        cid: str | None = None,
        binary: bool = True,
    ) -> bool:
        """Queues one message whose payload is JSON text already."""
        self._seq += 1
        envelope = wire.direct(t, payload_json, self._seq, pri=priority, cid=cid)
        return self._queue(self._encode(wire.Frames(t, envelope), binary=binary))

    def deliver(self, pattern: str, topic: str, frames: wire.Frames) -> bool:
        """Queues a publication, or holds it while its topic waits for a snapshot."""
        if self._closed:
            return False
        if any(glob_match(held, topic) for held in self._holds):
            if self._waiting() >= self.router.config.max_outbound_queue:
                self._overflow()
                return False
            self._held.append((topic, frames))
            return True
        return self._queue(self._encode(frames, binary=False))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Closes the connection (the close goes out ahead of anything queued)."""
        if self._closed:
            return
        self._closed = True
        task = asyncio.get_running_loop().create_task(self._close(code, reason))
        self.router.keep(task)

    # -- the connection's life ------------------------------------------------

    async def run(self, topics: list[str]) -> None:
        """Greets the client, serves it until it leaves, then cleans up."""
        writer = asyncio.create_task(self._writer())
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            self._server_ready()
            if topics:
                self._subscribe(topics, {}, answer=True)
            await self._reader()
        finally:
            self._closed = True
            for task in (writer, heartbeat):
                task.cancel()
            await asyncio.gather(writer, heartbeat, return_exceptions=True)

    async def _reader(self) -> None:
        while True:
            try:
                message = await self.websocket.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            self._last_seen = time.monotonic()
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is None:
                continue
            if len(data) > self.router.config.max_message_size:
                self.close(1009, "message too big")
                return
            await self._handle(data)

    async def _writer(self) -> None:
        while True:
            item = await self._outbox.get()
            try:
                if isinstance(item, str):
                    await self.websocket.send_text(item)
                else:
                    await self.websocket.send_bytes(item)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return

    async def _heartbeat(self) -> None:
        config = self.router.config
        tick = min(config.heartbeat_interval, config.idle_timeout / 4)
        next_ping = time.monotonic() + config.heartbeat_interval
        while not self._closed:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - self._last_seen > config.idle_timeout:
                self.close(4408, "idle timeout")
                return
            if now >= next_ping:
                next_ping = now + config.heartbeat_interval
                self._queue(wire.server_ping().decode())

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await self.websocket.close(code, reason)

    # -- inbound --------------------------------------------------------------

    async def _handle(self, data: str | bytes) -> None:
        envelope = self._decode(data)
        if envelope is None:
            return
        t = envelope.get("t", envelope.get("type"))
        payload = envelope.get("p", envelope.get("payload"))
        payload = payload if isinstance(payload, dict) else {}
        if t in ("ping", "PING"):
            self._queue(wire.pong(payload.get("timestamp"), self._next_seq()).decode())
        elif t in ("PONG", "pong"):
            return
        elif t == "client_hello":
            self._client_hello(payload)
        elif t == "subscription_update":
            self._subscription_update(payload)
            await self._forward(envelope)
        elif t == "sync_request":
            topics = [x for x in payload.get("topics", []) if isinstance(x, str)]
            self._start_snapshot(topics or list(self.subscriptions))
            await self._forward(envelope)
        elif t == "publish":
            await self._client_publish(payload)
        elif isinstance(t, str) and t:
            await self._forward(envelope)
        else:
            self._error("INVALID_MESSAGE", "message has no type 't'")

    def _decode(self, data: str | bytes) -> dict[str, Any] | None:
        """The envelope of one inbound message, whatever its form; None when refused."""
        limit = self.router.config.max_message_size
        try:
            if isinstance(data, bytes):
                if data.startswith(b"E:"):
                    if self._cipher is None:
                        self._error("INVALID_MESSAGE", "encrypted before key exchange")
                        return None
                    data = self._cipher.open(data)
                elif self._cipher is not None:
                    self._error("ENCRYPTION_REQUIRED", "send E: frames")
                    return None
                if data.startswith(b"C:"):
                    data = inflate_zlib(data[2:], limit)
                elif data.startswith(b"M:"):
                    data = msgpack_to_json(data[2:], limit)
                elif self.msgpack and data[:1] and 0x80 <= data[0] <= 0x8F:
                    data = msgpack_to_json(data, limit)
            else:
                if data.startswith(_LEGACY_PREFIXES):
                    data = data[data.index("{") :]
                if self._cipher is not None and not _is_heartbeat(data):
                    self._error("ENCRYPTION_REQUIRED", "send E: frames")
                    return None
            decoded = orjson.loads(data)
        except (ValueError, orjson.JSONDecodeError) as e:
            self._error("INVALID_MESSAGE", str(e))
            return None
        if not isinstance(decoded, dict):
            self._error("INVALID_MESSAGE", "message is not a JSON object")
            return None
        return decoded

    def _client_hello(self, payload: dict[str, Any]) -> None:
        provider = self.router.encryption
        features = payload.get("features")
        wants = isinstance(features, dict) and features.get("encryption") is True
        key = payload.get("encryption_public_key")
        agreement = None
        if wants and provider is not None and isinstance(key, str):
            agreement = provider.key_agreement()
            try:
                cipher = agreement.agree(key)
            except ValueError as e:
                agreement = None
                self._error("KEY_EXCHANGE_FAILED", str(e), recoverable=True)
        hello = self.router.server_hello(self.conn_id)
        if agreement is not None:
            hello["encryption_public_key"] = agreement.public_key
        self.send_json("server_hello", dumps(hello), binary=False)
        if agreement is not None:
            self._cipher = cipher

    def _subscription_update(self, payload: dict[str, Any]) -> None:
        topics = [t for t in payload.get("topics", []) if isinstance(t, str)]
        if payload.get("action") == "unsubscribe":
            for topic in topics:
                self.unsubscribe(topic)
            answer = {"action": "unsubscribe", "success_topics": topics}
            self.send_json("subscription_update", dumps(answer), binary=False)
            return
        filters = payload.get("filters")
        self._subscribe(
            topics, filters if isinstance(filters, dict) else {}, answer=True
        )

    def _subscribe(
        self, topics: list[str], filters: dict[str, Any], *, answer: bool
    ) -> None:
        success: list[str] = []
        failed: list[str] = []
        errors: dict[str, str] = {}
        filtered: list[str] = []
        limit = self.router.config.max_subscriptions_per_connection
        for topic in topics:
            code = self._subscription_refusal(topic, limit)
            compiled = None
            if code is None and topic in filters:
                try:
                    compiled = TopicFilter(orjson.dumps(filters[topic]).decode())
                except ValueError:
                    code = "INVALID_FILTER"
            if code is not None:
                failed.append(topic)
                errors[topic] = code
                continue
            if compiled is not None and compiled.matches_all():
                compiled = None
            self.subscriptions[topic] = compiled
            self.router.index_add(self, topic)
            success.append(topic)
            if compiled is not None:
                filtered.append(topic)
        if answer:
            reply = {
                "action": "subscribe",
                "success_topics": success,
                "failed_topics": failed,
                "errors": errors,
                "recovery": {},
                "filtered_topics": filtered,
            }
            self.send_json("subscription_update", dumps(reply), binary=False)
        if success:
            self._start_snapshot(success)

    def _subscription_refusal(self, topic: str, limit: int) -> str | None:
        try:
            check_topic(topic, allow_wildcards=True)
        except ValueError:
            return "INVALID_TOPIC"
        if self.acl is not None and not self.acl.may_subscribe(topic):
            return "FORBIDDEN"
        if topic not in self.subscriptions and len(self.subscriptions) >= limit:
            return "LIMIT_EXCEEDED"
        return None

    def unsubscribe(self, topic: str) -> None:
        """Stops receiving `topic` (a name or glob it subscribed to)."""
        if topic in self.subscriptions:
            del self.subscriptions[topic]
            self.router.index_remove(self, topic)

    async def _client_publish(self, payload: dict[str, Any]) -> None:
        topic = payload.get("topic")
        if not isinstance(topic, str):
            self._error("INVALID_MESSAGE", "publish needs a topic")
            return
        allowed = self.router.config.allow_client_publish
        if self.acl is not None:
            allowed = self.acl.may_publish(topic) or (
                allowed and self.acl.may_receive(topic)
            )
        if not allowed:
            self._error("FORBIDDEN", f"may not publish to {topic}")
            return
        try:
            check_topic(topic)
        except ValueError as e:
            self._error("INVALID_TOPIC", str(e))
            return
        # The client's data is a JSON value already: a str in it is a JSON string.
        event_type = payload.get("type")
        event_type = event_type if isinstance(event_type, str) else None
        try:
            check_publication_type(topic if event_type is None else event_type)
        except ValueError as e:
            self._error("INVALID_MESSAGE", str(e))
            return
        await self.router.publish_json(
            topic, dumps(payload.get("data")), event_type=event_type
        )

    async def _forward(self, envelope: dict[str, Any]) -> None:
        handler = self.router.config.message_handler
        if handler is None:
            return
        try:
            await handler(self, envelope)
        except Exception:
            logger.exception("message handler failed", extra={"conn": self.conn_id})

    # -- snapshots ------------------------------------------------------------

    def _start_snapshot(self, topics: list[str]) -> None:
        """Holds later publications of `topics` back and fetches their state."""
        if self.router.config.snapshot_provider is None or not topics:
            return
        for topic in topics:
            self._holds[topic] = self._holds.get(topic, 0) + 1
        task = asyncio.get_running_loop().create_task(self._snapshot(topics))
        self.router.keep(task)

    async def _snapshot(self, topics: list[str]) -> None:
        provider = self.router.config.snapshot_provider
        assert provider is not None
        state: dict[str, Any] = {}
        try:
            got = await asyncio.wait_for(
                provider.get_snapshot(self.user_id, topics),
                self.router.config.snapshot_timeout,
            )
            state = dict(got)
        except Exception:
            logger.exception("snapshot provider failed", extra={"conn": self.conn_id})
        count = 0
        for topic in topics:
            if topic in state:
                self.send_event(f"{topic}_snapshot", state[topic])
                count += 1
        complete = {"topics": topics, "count": count}
        self.send_json("snapshot_complete", dumps(complete), binary=False)
        self._release(topics)

    def _release(self, topics: list[str]) -> None:
        for topic in topics:
            left = self._holds.get(topic, 0) - 1
            if left > 0:
                self._holds[topic] = left
            else:
                self._holds.pop(topic, None)
        still: deque[tuple[str, wire.Frames]] = deque()
        while self._held:
            topic, frames = self._held.popleft()
            if any(glob_match(held, topic) for held in self._holds):
                still.append((topic, frames))
            else:
                self._queue(self._encode(frames, binary=False))
        self._held = still

    # -- helpers --------------------------------------------------------------

    def _server_ready(self) -> None:
        details = {
            "connection_id": self.conn_id,
            "user_id": self.user_id,
            "server_time": wire.iso_ms(wire.unix_ms()),
            "version": 1,
            "features": self.router.features(),
        }
        ready = {"message": "Connection established", "details": details}
        self.send_json("server_ready", dumps(ready), binary=False)

    def _error(self, code: str, message: str, *, recoverable: bool = False) -> None:
        payload: dict[str, Any] = {"code": code, "message": message}
        if recoverable:
            payload["recoverable"] = True
        self.send_json("error", dumps(payload), binary=False)

    def _encode(self, frames: wire.Frames, *, binary: bool) -> str | bytes:
        """The frame this connection gets for `frames`."""
        if frames.t in wire.PLAINTEXT_TYPES:
            return frames.json.decode()
        if self._cipher is not None:
            plain = frames.msgpack() if self.msgpack else frames.json
            return self._cipher.seal(plain)
        if self.msgpack:
            return frames.msgpack()
        config = self.router.config
        compressed = frames.compressed(
            config.compression_threshold, config.compression_level
        )
        if compressed is not None:
            return compressed
        return frames.json if binary else frames.json.decode()

    def _queue(self, frame: str | bytes) -> bool:
        if self._closed:
            return False
        if self._waiting() >= self.router.config.max_outbound_queue:
            self._overflow()
            return False
        self._outbox.put_nowait(frame)
        return True

    def _waiting(self) -> int:
        return self._outbox.qsize() + len(self._held)

    def _overflow(self) -> None:
        self.router.count("slow_consumer")
        logger.warning("slow consumer closed", extra={"conn": self.conn_id})
        self.close(4503, "slow consumer")

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq


def _is_heartbeat(text: str) -> bool:
    """Client heartbeats stay plaintext on E2E connections."""
    head = text[:40].replace(" ", "")
    return '"t":"ping"' in head or '"t":"PONG"' in head or '"t":"pong"' in head
