"""`WSERouter`: PROTOCOL.md served from a FastAPI application, in one process.

Place: `FastAPI app → include_router(WSERouter, prefix="/wse")`: the WebSocket at the
prefix, `GET <prefix>/health` beside it. The router admits connections (origin, token
or `auth_handler`), keeps the topic index (exact names and globs) and each topic's
`(epoch, offset)`, and publishes: a publication is converted and written once, and
every subscriber gets the same bytes (compressed or msgpack forms made at most once;
sealed per E2E connection).

Everything runs on the application's event loop: call `publish`, `broadcast`,
`send_to_user` and `send_to_connection` from request handlers or tasks of that loop.
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
from wse_server._wse_accel import InvalidTokenError, TopicAcl, check_topic, glob_match
from wse_server.router import wire
from wse_server.router.config import WSEConfig
from wse_server.router.connection import Connection

__all__ = ["WSERouter", "create_wse_router"]

#: Priorities clients know (PROTOCOL.md section 3); others are refused.
_PRIORITIES = range(1, 11)


def create_wse_router(config: WSEConfig | None = None) -> WSERouter:
    """A router serving PROTOCOL.md; mount it: `include_router(r, prefix="/wse")`."""
    return WSERouter(config or WSEConfig())


class WSERouter(APIRouter):
    """A FastAPI `APIRouter` that is also the WebSocket hub: see the module docs."""

    def __init__(self, config: WSEConfig) -> None:
        if config.redis_url is not None:
            # TODO(#6): publish through Redis to the other worker processes; refused
            # until then so that no deployment believes its workers are connected.
            raise NotImplementedError(
                "redis_url: Redis fan-out is not available yet (issue #6); "
                "use redis_url=None (one process)"
            )
        super().__init__()
        self.config = config
        self.tokens = config.token_checker()
        self.encryption = config.encryption()
        self.connections: dict[str, Connection] = {}
        self._users: dict[str, set[Connection]] = {}
        self._exact: dict[str, set[Connection]] = {}
        self._globs: dict[str, set[Connection]] = {}
        #: topic → [epoch, next offset]
        self._streams: dict[str, list[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counters: Counter[str] = Counter()
        self._started = time.monotonic()
        self.add_api_websocket_route("", self._endpoint)
        self.add_api_route("/health", self._health, methods=["GET"])

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
        epoch chosen when the topic is first published in this process.
        """
        check_topic(topic)
        _check_priority(priority)
        t = event_type or topic
        stream = self._streams.setdefault(topic, [wire.epoch_id(), 0])
        epoch, offset = stream
        stream[1] += 1
        envelope = wire.publication(
            topic, t, dumps(payload), epoch, offset, pri=priority, message_id=message_id
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

    async def broadcast(
        self, event_type: str, payload: Any, *, priority: int = wire.NORMAL
    ) -> int:
        """Sends one message to every connection; returns how many took it."""
        _check_priority(priority)
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
        _check_priority(priority)
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
        _check_priority(priority)
        conn = self.connections.get(conn_id)
        if conn is None:
            return False
        return conn.send_json(event_type, dumps(payload), priority=priority, cid=cid)

    async def disconnect(
        self, conn_id: str, code: int = 1000, reason: str = ""
    ) -> bool:
        """Closes one connection; False when it is gone."""
        conn = self.connections.get(conn_id)
        if conn is None:
            return False
        conn.close(code, reason)
        return True

    def subscriber_count(self, topic: str) -> int:
        """Connections that receive `topic` (by name or glob)."""
        return sum(1 for _ in self._subscribers(topic))

    def health(self) -> dict[str, Any]:
        """What `GET <prefix>/health` answers."""
        return {
            "status": "ok",
            "mode": "router",
            "connections": len(self.connections),
            "topics": len(self._exact) + len(self._globs),
            "uptime_seconds": int(time.monotonic() - self._started),
            **{f"{name}_total": n for name, n in sorted(self.counters.items())},
        }

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


def _check_priority(priority: int) -> None:
    if isinstance(priority, bool) or priority not in _PRIORITIES:
        raise ValueError(f"priority must be 1 to 10, got {priority!r}")


def _version() -> str:
    from wse_server import __version__

    return __version__
