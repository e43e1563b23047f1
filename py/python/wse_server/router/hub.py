"""`WSERouter`: PROTOCOL.md served from a FastAPI application, in one process.

Place: `FastAPI app → include_router(WSERouter, prefix="/wse")`: the WebSocket at the
prefix, `GET <prefix>/health` beside it. The router admits connections (origin, token
or `auth_handler`), keeps the topic index (exact names and globs) and each topic's
`(epoch, offset)`, and publishes: a publication is converted and written once, and
every subscriber gets the same bytes (compressed or msgpack forms made at most once;
sealed per E2E connection).

Everything runs on the application's event loop: call `publish`, `broadcast`,
`send_to_user` and `send_to_connection` from request handlers or tasks of that loop.

With `WSEConfig(redis_url=...)` the workers of one application (and `wse-server`
instances on the same Redis) fan out to each other through the engine's Redis bridge
(`RedisBridge`, README "Scale-out"): a publication of a travelling topic is stamped by
Redis and delivered when it comes back from the subscription, in Redis's order, by every
process (this one included), so `publish` then returns 0. While Redis cannot be
reached the router stamps locally, under a new epoch, and leaves a dead letter; a topic
with publications still inside the bridge keeps going through it, so nothing reorders.
`send_to_user`, `send_to_connection` and `broadcast` reach this process's connections
only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

from fastapi import APIRouter
from starlette.websockets import WebSocket

from wse_server._payload import dumps
from wse_server._wse_accel import (
    InvalidTokenError,
    RedisBridge,
    TopicAcl,
    check_close_code,
    check_event_type,
    check_json,
    check_message_id,
    check_priority,
    check_publication_type,
    check_topic,
    glob_match,
)
from wse_server.router import wire
from wse_server.router.config import WSEConfig
from wse_server.router.connection import Connection

__all__ = ["WSERouter", "create_wse_router"]


def create_wse_router(config: WSEConfig | None = None) -> WSERouter:
    """A router serving PROTOCOL.md; mount it: `include_router(r, prefix="/wse")`."""
    return WSERouter(config or WSEConfig())


class WSERouter(APIRouter):
    """A FastAPI `APIRouter` that is also the WebSocket hub: see the module docs."""

    def __init__(self, config: WSEConfig) -> None:
        super().__init__(on_startup=[self._start], on_shutdown=[self.close])
        self.config = config
        self.tokens = config.token_checker()
        self.encryption = config.encryption()
        self.connections: dict[str, Connection] = {}
        self._users: dict[str, set[Connection]] = {}
        self._exact: dict[str, set[Connection]] = {}
        self._globs: dict[str, set[Connection]] = {}
        #: topic → [epoch, next offset] of the topics this process stamps itself
        self._streams: dict[str, list[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counters: Counter[str] = Counter()
        self._started = time.monotonic()
        #: The Redis bridge (None without `redis_url`) and what it owes us.
        self.bridge: RedisBridge | None = None
        if config.redis_url is not None:
            self.bridge = RedisBridge(
                config.redis_url,
                prefix=config.redis_prefix,
                topics=list(config.redis_topics) or None,
                timeout=config.redis_timeout,
            )
        #: topic → publications handed to the bridge and not yet back
        self._inflight: Counter[str] = Counter()
        #: topic → the epoch Redis last stamped it with (a local epoch must differ)
        self._redis_epochs: dict[str, str] = {}
        self._pump: asyncio.Task[None] | None = None
        self._bridge_full = asyncio.Lock()
        self.add_api_websocket_route("", self._endpoint)
        self.add_api_route("/health", self._health, methods=["GET"])

    async def close(self) -> None:
        """Stops the Redis bridge and its pump (the application's shutdown does it)."""
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if self.bridge is not None:
            await asyncio.to_thread(self.bridge.stop)

    # -- the application's calls ------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: Any,
        *,
        event_type: str | None = None,
        priority: int = wire.NORMAL,
        message_id: str | None = None,
    ) -> int:
        """Publishes to every subscriber of `topic`; returns how many it was queued for.

        The envelope carries `(tp, e, o)`: offsets count from 0 per topic under an
        epoch chosen when the topic is first published in this process. With
        `redis_url`, a topic that travels is stamped by Redis instead and delivered
        when it comes back (to every process at once): then this returns 0.

        The arguments follow `RustWSEServer.publish`, checked by the same code:
        `payload` by the conversion rules, but a `str` is JSON text (`ValueError`
        saying where when it is not); `event_type` not empty and not one of the
        engine's own types (nor, without it, the topic's name); `message_id` 1 to 128
        bytes; `priority` 1 to 10. A wrong type raises `TypeError`, a bad value
        `ValueError`, before anything is sent or counted.
        """
        check_topic(topic)
        priority = check_priority(priority)
        payload_json = _json_text(payload)
        if event_type is not None:
            check_event_type(event_type)
        if message_id is not None:
            check_message_id(message_id)
        check_publication_type(topic if event_type is None else event_type)
        return await self.publish_json(
            topic,
            payload_json,
            event_type=event_type,
            priority=priority,
            message_id=message_id,
        )

    async def publish_json(
        self,
        topic: str,
        payload_json: bytes,
        *,
        event_type: str | None = None,
        priority: int = wire.NORMAL,
        message_id: str | None = None,
    ) -> int:
        """`publish` of a payload that is JSON text already, with every argument
        checked already (a client's publication comes this way)."""
        message_id = message_id or wire.uuid7()
        ts = wire.unix_ms()
        bridge = self.bridge
        if bridge is None or not bridge.travels(topic):
            return self._stamp_locally(
                topic, event_type, payload_json, priority, message_id, ts
            )
        self._ensure_pump()
        fields = (topic, payload_json.decode(), event_type, priority, message_id, ts)
        if bridge.accepting() or self._inflight[topic] > 0:
            self._inflight[topic] += 1
            if await self._hand_over(bridge, fields):
                self.count("redis_published")
                return 0
            # The bridge stopped: this process delivers it.
            self._resolve(topic)
        else:
            bridge.dead_letter(*fields)
            self.count("redis_dead_letters")
        return self._stamp_locally(
            topic, event_type, payload_json, priority, message_id, ts
        )

    async def broadcast(
        self, event_type: str, payload: Any, *, priority: int = wire.NORMAL
    ) -> int:
        """Sends one message to every connection; returns how many took it.

        Here, as in `send_to_user` and `send_to_connection`, `event_type` is the
        message's `t` (not empty) and a `str` payload is a JSON string, as every
        payload but `publish`'s.
        """
        priority = _check_message(event_type, priority)
        payload_json = dumps(payload)
        conns = list(self.connections.values())
        return sum(
            c.send_json(event_type, payload_json, priority=priority) for c in conns
        )

    async def send_to_user(
        self,
        user_id: str,
        event_type: str,
        payload: Any,
        *,
        priority: int = wire.NORMAL,
    ) -> int:
        """Sends one message to every connection of `user_id`; returns how many."""
        _check_str("user_id", user_id)
        priority = _check_message(event_type, priority)
        payload_json = dumps(payload)
        conns = list(self._users.get(user_id, ()))
        return sum(
            c.send_json(event_type, payload_json, priority=priority) for c in conns
        )

    async def send_to_connection(
        self,
        conn_id: str,
        event_type: str,
        payload: Any,
        *,
        priority: int = wire.NORMAL,
        cid: str | None = None,
    ) -> bool:
        """Sends one message to one connection; False when it is gone."""
        _check_str("conn_id", conn_id)
        priority = _check_message(event_type, priority)
        if cid is not None:
            _check_str("cid", cid)
        payload_json = dumps(payload)
        conn = self.connections.get(conn_id)
        if conn is None:
            return False
        return conn.send_json(event_type, payload_json, priority=priority, cid=cid)

    async def disconnect(
        self, conn_id: str, code: int = 1000, reason: str = ""
    ) -> bool:
        """Closes one connection; False when it is gone.

        As `RustWSEServer.disconnect`: `code` must be one a Close frame may carry
        (1000-1003, 1007-1014, 3000-4999; `ValueError` otherwise) and `reason` is
        cut to the 123 bytes a Close frame has room for.
        """
        _check_str("conn_id", conn_id)
        code = check_close_code(code)
        _check_str("reason", reason)
        conn = self.connections.get(conn_id)
        if conn is None:
            return False
        conn.close(code, _truncate(reason, _MAX_CLOSE_REASON))
        return True

    def subscriber_count(self, topic: str) -> int:
        """Connections that receive `topic` (by name or glob)."""
        return sum(1 for _ in self._subscribers(topic))

    def health(self) -> dict[str, Any]:
        """What `GET <prefix>/health` answers (`redis`: the bridge's state)."""
        health: dict[str, Any] = {
            "status": "ok",
            "mode": "router",
            "connections": len(self.connections),
            "topics": len(self._exact) + len(self._globs),
            "uptime_seconds": int(time.monotonic() - self._started),
            **{f"{name}_total": n for name, n in sorted(self.counters.items())},
        }
        if self.bridge is not None:
            health["redis"] = self.bridge.status()
        return health

    # -- for connections --------------------------------------------------------

    def features(self) -> dict[str, bool]:
        return {
            "compression": True,
            "encryption": self.encryption is not None,
            "msgpack": True,
            "recovery": False,
            "priority_queue": False,
            "batching": False,
            "rust_jwt": self.tokens is not None and self.config.token_provider is None,
            "rust_transport": False,
            "presence": False,
        }

    def server_hello(self, conn_id: str) -> dict[str, Any]:
        config = self.config
        return {
            "connection_id": conn_id,
            "server_version": f"wse-router/{_version()}",
            "protocol_version": 1,
            "server_time": wire.iso_ms(wire.unix_ms()),
            "ping_interval": int(config.heartbeat_interval * 1000),
            "features": self.features(),
            "limits": {"max_message_size": config.max_message_size},
        }

    # -- publication paths ------------------------------------------------------

    def _stamp_locally(
        self,
        topic: str,
        event_type: str | None,
        payload_json: bytes,
        priority: int,
        message_id: str,
        ts: int,
    ) -> int:
        """Stamps with this process's own `(epoch, offset)` and delivers."""
        stream = self._streams.get(topic)
        if stream is None:
            epoch = wire.epoch_id()
            while epoch == self._redis_epochs.get(topic):
                epoch = wire.epoch_id()
            stream = self._streams[topic] = [epoch, 0]
        epoch, offset = stream
        stream[1] += 1
        return self._deliver(
            topic, event_type, payload_json, epoch, offset, priority, message_id, ts
        )

    def _deliver(
        self,
        topic: str,
        event_type: str | None,
        payload_json: bytes,
        epoch: str,
        offset: int,
        priority: int,
        message_id: str,
        ts: int,
    ) -> int:
        """Writes the publication once and queues it for every subscriber it passes."""
        t = event_type or topic
        envelope = wire.publication(
            topic,
            t,
            payload_json,
            epoch,
            offset,
            pri=priority,
            message_id=message_id,
            ts_ms=ts,
        )
        frames = wire.Frames(t, envelope)
        delivered = 0
        for conn, pattern in self._subscribers(topic):
            if conn.acl is not None and not conn.acl.may_receive(topic):
                continue
            topic_filter = conn.subscriptions.get(pattern)
            if topic_filter is not None and not topic_filter.matches(envelope):
                continue
            delivered += conn.deliver(pattern, topic, frames)
        self.count("publications")
        return delivered

    async def _hand_over(
        self, bridge: RedisBridge, fields: tuple[str, str, str | None, int, str, int]
    ) -> bool:
        """Gives a publication to the bridge; waits (off the loop) while its queue is
        full, and then every later publication waits behind it, in order."""
        if not self._bridge_full.locked() and bridge.publish(*fields):
            return True
        async with self._bridge_full:
            return await asyncio.to_thread(bridge.publish, *fields, 5.0)

    def _resolve(self, topic: str) -> None:
        """One publication of `topic` left the bridge."""
        self._inflight[topic] -= 1
        if self._inflight[topic] <= 0:
            del self._inflight[topic]

    def _ensure_pump(self) -> None:
        if self.bridge is not None and (self._pump is None or self._pump.done()):
            self._pump = asyncio.get_running_loop().create_task(self._pump_loop())

    async def _start(self) -> None:
        self._ensure_pump()

    async def _pump_loop(self) -> None:
        """Delivers what the bridge hands over, in its order, on the loop."""
        bridge = self.bridge
        assert bridge is not None
        while True:
            items = await asyncio.to_thread(bridge.drain, 256, 100)
            for kind, topic, t, data, pri, mid, ts, epoch, offset in items:
                payload_json = data.encode()
                if kind == "fallback":
                    self._resolve(topic)
                    self.count("redis_fallbacks")
                    self._stamp_locally(topic, t, payload_json, pri, mid, ts)
                    continue
                if kind == "own":
                    self._resolve(topic)
                assert epoch is not None and offset is not None
                # Redis stamps the topic now; a later local stamp opens a new epoch.
                self._streams.pop(topic, None)
                self._redis_epochs[topic] = epoch
                self.count("redis_received")
                self._deliver(topic, t, payload_json, epoch, offset, pri, mid, ts)

    def index_add(self, conn: Connection, pattern: str) -> None:
        index = self._globs if ("*" in pattern or "?" in pattern) else self._exact
        index.setdefault(pattern, set()).add(conn)

    def index_remove(self, conn: Connection, pattern: str) -> None:
        index = self._globs if ("*" in pattern or "?" in pattern) else self._exact
        members = index.get(pattern)
        if members is not None:
            members.discard(conn)
            if not members:
                del index[pattern]

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Holds a background task until it ends (asyncio keeps only weak ones)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def count(self, name: str) -> None:
        self.counters[name] += 1

    # -- endpoints --------------------------------------------------------------

    async def _health(self) -> dict[str, Any]:
        return self.health()

    async def _endpoint(self, websocket: WebSocket) -> None:
        config = self.config
        origin = websocket.headers.get("origin")
        if config.allowed_origins and origin and origin not in config.allowed_origins:
            self.count("origin_refused")
            await websocket.close(code=1008)  # before accept: HTTP 403
            return
        self._ensure_pump()
        admitted = await self._admit(websocket)
        await websocket.accept()
        if isinstance(admitted, str):
            await self._refuse(websocket, admitted)
            return
        user_id, acl = admitted
        msgpack = websocket.query_params.get("format") == "msgpack"
        conn = Connection(self, websocket, user_id=user_id, acl=acl, msgpack=msgpack)
        topics = list(config.default_topics)
        query_topics = websocket.query_params.get("topics")
        if query_topics:
            topics += [t for t in query_topics.split(",") if t and t not in topics]
        self._register(conn)
        try:
            await conn.run(topics)
        finally:
            self._unregister(conn)

    async def _admit(
        self, websocket: WebSocket
    ) -> tuple[str | None, TopicAcl | None] | str:
        """`(user_id, acl)` of an admitted connection, or the error code refusing it."""
        if self.tokens is not None:
            token = self._find_token(websocket)
            if token is None:
                return "AUTH_REQUIRED"
            try:
                claims = await self.tokens.verify(token)
            except InvalidTokenError:
                return "AUTH_FAILED"
            rules = claims["topics"]
            acl = (
                TopicAcl(rules["allow"], rules["deny"], rules["publish"])
                if rules
                else None
            )
            return claims["user_id"], acl
        if self.config.auth_handler is not None:
            user_id = await self.config.auth_handler(websocket)
            return (user_id, None) if user_id else "AUTH_FAILED"
        return None, None

    def _find_token(self, websocket: WebSocket) -> str | None:
        """Cookie, then `Authorization: Bearer`, then `?token=` (PROTOCOL.md sec. 2)."""
        cookie = websocket.cookies.get(self.config.jwt_cookie_name)
        if cookie and cookie not in ("undefined", "null"):
            return cookie
        scheme, _, credentials = websocket.headers.get("authorization", "").partition(
            " "
        )
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        if self.config.jwt_query_token:
            return websocket.query_params.get("token") or None
        return None

    async def _refuse(self, websocket: WebSocket, code: str) -> None:
        self.count("auth_refused")
        message = (
            "authentication required" if code == "AUTH_REQUIRED" else "invalid token"
        )
        error = wire.direct("error", dumps({"code": code, "message": message}), 1)
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.send_text(error.decode())
            await websocket.close(code=4401)

    def _register(self, conn: Connection) -> None:
        self.connections[conn.conn_id] = conn
        if conn.user_id is not None:
            self._users.setdefault(conn.user_id, set()).add(conn)

    def _unregister(self, conn: Connection) -> None:
        self.connections.pop(conn.conn_id, None)
        if conn.user_id is not None:
            users = self._users.get(conn.user_id)
            if users is not None:
                users.discard(conn)
                if not users:
                    del self._users[conn.user_id]
        for pattern in list(conn.subscriptions):
            self.index_remove(conn, pattern)

    def _subscribers(self, topic: str) -> list[tuple[Connection, str]]:
        """Each connection receiving `topic` once, with the pattern that matched."""
        found: dict[Connection, str] = {c: topic for c in self._exact.get(topic, ())}
        for pattern, conns in self._globs.items():
            if glob_match(pattern, topic):
                for conn in conns:
                    found.setdefault(conn, pattern)
        return list(found.items())


def _json_text(payload: Any) -> bytes:
    """A payload of `publish`: a `str` is JSON text, anything else is converted."""
    if not isinstance(payload, str):
        return dumps(payload)
    check_json(payload)
    return payload.encode()


def _check_message(event_type: str, priority: int) -> int:
    """Checks a direct message's `t` and priority; the priority as an `int`."""
    _check_str("event_type", event_type)
    check_event_type(event_type)
    return check_priority(priority)


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__qualname__}")


def _truncate(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, on a character boundary."""
    return text.encode()[:max_bytes].decode(errors="ignore")


def _version() -> str:
    from wse_server import __version__

    return __version__


#: A Close frame's reason: 125 bytes of payload less the two of the code.
_MAX_CLOSE_REASON = 123
