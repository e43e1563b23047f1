"""`AsyncWSEClient`: the public asyncio client.

Data path: socket → `connection.ConnectionManager` (reader task) →
`AsyncWSEClient.frame_received` → `codec` (frame to envelope) → system messages
handled here (handshake, heartbeats, subscription answers) → `sequencer` (duplicates,
`seq` gaps, topic order and recovery) → `on()` handlers → the event queue →
`recv()` / `async for`. Sending goes the other way: envelope → `codec` (JSON, sealed or
signed) → optional rate limiter → socket.

The client remembers what it is subscribed to and the last `(epoch, offset)` it
delivered per topic, so that after a reconnect it re-subscribes with `recover: true`
and the server replays what it missed (PROTOCOL.md §7).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from typing import Any, Literal, overload

from ._queue import EventQueue
from .codec import Codec, MessageIds, envelope_to_event, iso_now
from .connection import ConnectionManager, ConnectionOptions, Session, TokenProvider
from .crypto import KeyExchange, Signer
from .errors import (
    WSEClosedError,
    WSEConnectionError,
    WSEEncryptionError,
    WSEError,
    WSEProtocolError,
    WSERateLimitError,
    WSETimeoutError,
)
from .monitor import NetworkMonitor
from .pool import ConnectionPool, PoolStrategy
from .ratelimit import TokenBucket
from .sequencer import EventSequencer
from .types import (
    ConnectionQuality,
    ConnectionState,
    Priority,
    RateLimit,
    ReconnectPolicy,
    SubscriptionResult,
    TopicRecovery,
    WSEEvent,
)

__all__ = ["CLIENT_EVENTS", "AsyncWSEClient", "Handler"]

log = logging.getLogger("wse_client")

Handler = Callable[[WSEEvent], "Awaitable[None] | None"]

#: Events the client itself raises, for `on()` handlers only (never queued):
#: `state_changed` {state, previous}, `quality_changed` {quality, latency_ms,
#: jitter_ms, loss}, `sequence_gap` {missing, seq}.
CLIENT_EVENTS = frozenset({"state_changed", "quality_changed", "sequence_gap"})


class AsyncWSEClient:
    """A WSE client on asyncio. Use `async with connect(...)` or `await connect()`
    then `await close()`.

    `url` is the endpoint (`ws://` or `wss://`); `endpoints` adds more, and the pool
    picks one per attempt with `pool_strategy`. `token` goes as the `access_token`
    cookie and a Bearer header; `token_provider` (sync or async callable) is asked for
    a fresh one when the server answers 4401/4403 or HTTP 401. `topics` are
    subscribed on connect and after every reconnect. `reconnect` is a
    `ReconnectPolicy` (None: the default, exponential and unlimited; False: never).
    `encryption=True` requires end-to-end encryption (PROTOCOL.md §5).
    `format="msgpack"` asks the server for `M:` frames. `queue_size` and
    `queue_policy` bound the event queue ("block" pushes back on the socket,
    "drop_oldest" discards). `rate_limit` caps sends (off by default).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        topics: Iterable[str] | None = None,
        reconnect: ReconnectPolicy | Literal[False] | None = None,
        encryption: bool = False,
        endpoints: Iterable[str] | None = None,
        pool_strategy: PoolStrategy = PoolStrategy.WEIGHTED_RANDOM,
        pool: ConnectionPool | None = None,
        format: Literal["json", "msgpack"] = "json",
        headers: Mapping[str, str] | None = None,
        queue_size: int = 10_000,
        queue_policy: Literal["block", "drop_oldest"] = "block",
        rate_limit: RateLimit | None = None,
        request_timeout: float = 10.0,
        open_timeout: float = 10.0,
        heartbeat_interval: float = 20.0,
        heartbeat_timeout: float = 60.0,
        max_message_size: int = 1 << 20,
        permessage_deflate: bool = False,
        signing_secret: bytes | None = None,
        dedup_size: int = 10_000,
        dedup_age: float = 300.0,
        reorder_limit: int = 1_000,
        client_version: str = "wse-client-python/3.0.0.dev0",
    ) -> None:
        if format not in ("json", "msgpack"):
            raise ValueError('format must be "json" or "msgpack"')
        if request_timeout <= 0 or heartbeat_interval <= 0:
            raise ValueError("timeouts and intervals must be positive")
        urls = _endpoint_list(url, endpoints)
        self._pool = pool or ConnectionPool(urls, strategy=pool_strategy)
        if pool is not None and not set(urls) <= set(pool.endpoints):
            raise ValueError("url and endpoints must be in the given pool")
        self._format = format
        self._encryption = encryption
        self._client_version = client_version
        self._request_timeout = request_timeout
        self._codec = Codec(
            max_size=max_message_size,
            signer=Signer(signing_secret) if signing_secret else None,
            verify_signatures=signing_secret is not None,
        )
        self._sequencer = EventSequencer(
            dedup_size=dedup_size, dedup_age=dedup_age, reorder_limit=reorder_limit
        )
        self._queue = EventQueue(queue_size, queue_policy)
        self._limit = rate_limit
        self._bucket: TokenBucket | None = None
        self._monitor = NetworkMonitor(loss_timeout=max(heartbeat_interval * 2, 5.0))
        query = {"client_version": client_version, "protocol_version": "1"}
        if format == "msgpack":
            query["format"] = "msgpack"
        options = ConnectionOptions(
            token=token,
            token_provider=token_provider,
            headers=dict(headers or {}),
            query=query,
            reconnect=None if reconnect is False else (reconnect or ReconnectPolicy()),
            open_timeout=open_timeout,
            handshake_timeout=max(request_timeout, open_timeout),
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            max_size=max_message_size,
            permessage_deflate=permessage_deflate,
            require_encryption=encryption,
        )
        self._manager = ConnectionManager(self._pool, options, self, self._monitor)
        self._topics: dict[str, None] = dict.fromkeys(topics or ())
        self._filters: dict[str, Any] = {}
        self._handlers: dict[str, list[Handler]] = {}
        self._any_handlers: list[Handler] = []
        self._pending: dict[str, asyncio.Future[SubscriptionResult]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._key_exchange: KeyExchange | None = None
        self._server: dict[str, Any] = {}
        self._frames_received = 0
        self._bytes_received = 0
        self._events_delivered = 0
        self._messages_sent = 0
        self._stats = {
            "decode_errors": 0,
            "handler_errors": 0,
            "rate_limit_waits": 0,
            "server_errors": 0,
        }
        self._ids = MessageIds()
        self._started = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Opens the connection: socket, handshake, subscriptions. Raises
        `WSEConnectionError` (or `WSEAuthError`, `WSEEncryptionError`) when no
        endpoint could be reached; once connected, drops are reconnected."""
        if self._limit is not None and self._bucket is None:
            self._bucket = TokenBucket(
                rate=self._limit.rate, capacity=self._limit.burst, now=time.monotonic()
            )
        await self._manager.start()

    async def close(self) -> None:
        """Closes the connection (Close 1000) for good. Events already queued can
        still be read; then iteration ends."""
        await self._manager.stop()
        for task in list(self._tasks):
            task.cancel()

    async def force_reconnect(self) -> None:
        """Drops the socket as a network failure would; the client reconnects and
        recovers. Meant for tests and failover drills."""
        self._manager.abort()

    def __await__(self) -> Generator[Any, None, AsyncWSEClient]:
        """`client = await connect(...)` connects and returns the client."""
        return self._connected().__await__()

    async def _connected(self) -> AsyncWSEClient:
        await self.connect()
        return self

    async def __aenter__(self) -> AsyncWSEClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncWSEClient:
        return self

    async def __anext__(self) -> WSEEvent:
        try:
            return await self._queue.get()
        except WSEClosedError:
            raise StopAsyncIteration from None

    # -- receiving ---------------------------------------------------------------------

    async def recv(self, timeout: float | None = None) -> WSEEvent:
        """The next event. `WSETimeoutError` after `timeout` seconds; once the client
        is closed and the queue empty, `WSEClosedError` (or the error that closed
        it, e.g. `WSEAuthError`)."""
        return await self._queue.get(timeout)

    @overload
    def on(self, event_type: str) -> Callable[[Handler], Handler]: ...

    @overload
    def on(self, event_type: str, handler: Handler) -> Handler: ...

    def on(
        self, event_type: str, handler: Handler | None = None
    ) -> Handler | Callable[[Handler], Handler]:
        """Calls `handler` for every event of `event_type` ("*" for all), before it
        is queued. Works as a decorator too. Async handlers run as tasks; exceptions
        are logged and counted, never raised into the reader."""
        if handler is None:

            def register(fn: Handler) -> Handler:
                return self.on(event_type, fn)

            return register
        if event_type == "*":
            self._any_handlers.append(handler)
        else:
            self._handlers.setdefault(event_type, []).append(handler)
        return handler

    def off(self, event_type: str, handler: Handler) -> None:
        """Removes a handler added with `on`; unknown ones are ignored."""
        handlers = (
            self._any_handlers
            if event_type == "*"
            else self._handlers.get(event_type, [])
        )
        if handler in handlers:
            handlers.remove(handler)

    # -- sending -----------------------------------------------------------------------

    async def send(
        self,
        type: str,
        payload: Any = None,
        *,
        priority: Priority | int | None = None,
        correlation_id: str | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Sends one message to the server application (PROTOCOL.md §7: it reaches
        it as a `msg` event). Waits up to `timeout` (default `request_timeout`)
        for a connection while reconnecting."""
        if not isinstance(type, str) or not type:
            raise ValueError("type must be a non-empty string")
        envelope = self._envelope(type, {} if payload is None else payload)
        if message_id is not None:
            envelope["id"] = message_id
        if priority is not None and priority != Priority.NORMAL:
            envelope["pri"] = int(priority)
        if correlation_id is not None:
            envelope["cid"] = correlation_id
        await self._send_envelope(envelope, timeout)

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        type: str | None = None,
        priority: Priority | int | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publishes `data` to `topic` through the server (**ext**, needs publish
        rights). `message_id` lets the server drop a repeated publication."""
        _check_topic(topic)
        body: dict[str, Any] = {"topic": topic, "data": data}
        if type is not None:
            body["type"] = type
        if priority is not None and priority != Priority.NORMAL:
            body["pri"] = int(priority)
        await self.send("publish", body, message_id=message_id, timeout=timeout)

    async def subscribe(
        self,
        topics: Iterable[str],
        *,
        recover: bool | Mapping[str, tuple[str, int]] = False,
        filters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> SubscriptionResult:
        """Subscribes and waits for the server's answer. `recover=True` asks for
        what was published since the last position this client delivered;
        a mapping gives positions explicitly (e.g. saved from `positions`).
        `filters` maps topics to server-side criteria (**ext**). The topics are
        re-subscribed after every reconnect."""
        names = _topic_list(topics)
        for name in names:
            self._topics[name] = None
        if filters:
            self._filters.update(filters)
        positions = self._recovery_positions(names, recover)
        result = await self._request_subscription(
            "subscribe", names, positions, filters, timeout=timeout
        )
        for name in result.failed_topics:
            self._topics.pop(name, None)
            self._filters.pop(name, None)
        return result

    async def unsubscribe(
        self, topics: Iterable[str], *, timeout: float | None = None
    ) -> SubscriptionResult:
        """Unsubscribes and waits for the answer; the topics' positions are
        forgotten."""
        names = _topic_list(topics)
        for name in names:
            self._topics.pop(name, None)
            self._filters.pop(name, None)
        return await self._request_subscription(
            "unsubscribe", names, None, None, timeout=timeout
        )

    async def request_snapshot(self, topics: Iterable[str] | None = None) -> None:
        """Sends `sync_request`: the server application answers with `*_snapshot`
        events and then `snapshot_complete`, delivered like any event."""
        names = list(self._topics) if topics is None else _topic_list(topics)
        await self._send_envelope(self._envelope("sync_request", {"topics": names}))

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._manager.state

    @property
    def is_ready(self) -> bool:
        return self._manager.state is ConnectionState.READY

    @property
    def quality(self) -> ConnectionQuality:
        return self._monitor.quality

    @property
    def subscriptions(self) -> frozenset[str]:
        """The topics (and globs) this client keeps subscribed."""
        return frozenset(self._topics)

    @property
    def positions(self) -> dict[str, tuple[str, int]]:
        """The last delivered `(epoch, offset)` per topic."""
        return self._sequencer.positions()

    @property
    def connection_id(self) -> str | None:
        session = self._manager.session
        return session.connection_id if session is not None else None

    @property
    def endpoint(self) -> str | None:
        session = self._manager.session
        return session.url if session is not None else None

    @property
    def encrypted(self) -> bool:
        return self._codec.session is not None

    @property
    def server_info(self) -> dict[str, Any]:
        """The last `server_hello` payload (limits, features, ping interval)."""
        return dict(self._server)

    def get_stats(self) -> dict[str, Any]:
        """Counters and gauges since the client was created."""
        monitor, manager, seq = self._monitor, self._manager, self._sequencer.stats
        return {
            "frames_received": self._frames_received,
            "bytes_received": self._bytes_received,
            "events_delivered": self._events_delivered,
            "messages_sent": self._messages_sent,
            **self._stats,
            "state": manager.state.value,
            "endpoint": self.endpoint,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "connects": manager.connects,
            "reconnects": manager.reconnects,
            "failed_attempts": manager.failed_attempts,
            "token_refreshes": manager.token_refreshes,
            "last_close_code": manager.close_code,
            "queued_events": len(self._queue),
            "dropped_events": self._queue.dropped,
            "duplicates": seq.duplicates,
            "seq_gaps": seq.seq_gaps,
            "seq_regressions": seq.seq_regressions,
            "topic_gaps": seq.topic_gaps,
            "lost": seq.lost,
            "epoch_changes": seq.epoch_changes,
            "held": seq.held,
            "recoveries_requested": seq.recoveries_requested,
            "bad_signatures": self._codec.bad_signatures,
            "quality": monitor.quality.value,
            "latency_ms": monitor.latency_ms,
            "jitter_ms": monitor.jitter_ms,
            "loss": monitor.loss,
            "pings_sent": monitor.pings_sent,
            "pongs_received": monitor.pongs_received,
            "rate_limited": self._bucket.refused if self._bucket else 0,
            "pool": self._pool.stats(),
        }

    # -- connection delegate (called by ConnectionManager) -----------------------------

    def frame_received(self, data: str | bytes) -> bool:
        self._frames_received += 1
        self._bytes_received += len(data)
        try:
            envelope = self._codec.decode(data)
        except WSEError as exc:
            self._stats["decode_errors"] += 1
            log.warning("dropped an undecodable frame: %s", exc)
            return False
        return self._envelope_received(envelope)

    async def wait_for_space(self) -> None:
        await self._queue.wait_for_space()

    async def connection_opened(self, session: Session) -> None:
        if not self._topics:
            return
        names = list(self._topics)
        positions = self._recovery_positions(names, True)
        filters = {k: v for k, v in self._filters.items() if k in self._topics}
        await self._request_subscription(
            "subscribe", names, positions, filters or None, handshake=True
        )

    def connection_lost(self) -> None:
        self._codec.session = None
        self._key_exchange = None
        self._sequencer.new_connection()
        for event in self._sequencer.flush():
            self._deliver(event)
        self._fail_pending(WSEConnectionError("connection lost before the answer"))

    def state_changed(self, old: ConnectionState, new: ConnectionState) -> None:
        log.debug("state %s -> %s", old.value, new.value)
        if new is ConnectionState.CLOSED:
            self._queue.close(self._manager.error)
            self._fail_pending(self._manager.error or WSEClosedError("client closed"))
        self._notify("state_changed", {"state": new.value, "previous": old.value})

    def quality_changed(self, quality: ConnectionQuality) -> None:
        monitor = self._monitor
        payload = {
            "quality": quality.value,
            "latency_ms": monitor.latency_ms,
            "jitter_ms": monitor.jitter_ms,
            "loss": monitor.loss,
        }
        self._notify("quality_changed", payload)

    def heartbeat(self, now: float) -> None:
        for event in self._sequencer.expire(now):
            self._deliver(event)

    def make_frame(self, kind: str, payload: dict[str, Any]) -> str | bytes:
        return self._codec.encode(self._envelope(kind, payload))

    def hello_payload(self) -> dict[str, Any]:
        features = {
            "compression": True,
            "encryption": self._encryption,
            "msgpack": self._format == "msgpack",
            "batching": True,
            "recovery": True,
        }
        hello: dict[str, Any] = {
            "client_version": self._client_version,
            "protocol_version": 1,
            "features": features,
        }
        if self._encryption:
            self._key_exchange = KeyExchange.generate()
            hello["encryption_public_key"] = self._key_exchange.public_key_b64()
        return hello

    # -- inbound helpers ---------------------------------------------------------------

    def _on_batch(self, event: WSEEvent) -> bool:
        payload = event.payload
        messages = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(messages, list):
            self._stats["decode_errors"] += 1
            log.warning("dropped a batch without a messages list")
            return False
        full = False
        for item in messages:
            if isinstance(item, str):
                try:
                    item = json.loads(item)
                except ValueError:
                    item = None
            if not isinstance(item, dict):
                self._stats["decode_errors"] += 1
                continue
            full = self._envelope_received(item) or full
        return full

    def _envelope_received(self, envelope: dict[str, Any]) -> bool:
        try:
            event = envelope_to_event(envelope)
        except WSEProtocolError as exc:
            self._stats["decode_errors"] += 1
            log.warning("dropped a message: %s", exc)
            return False
        seq = event.sequence
        if seq is not None and type(seq) is int:
            missing = self._sequencer.check_seq(seq)
            if missing:
                self._notify("sequence_gap", {"missing": missing, "seq": seq})
        system = _SYSTEM_HANDLERS.get(event.type)
        if system is not None:
            return system(self, event)
        return self._accept(event)

    def _accept(self, event: WSEEvent) -> bool:
        sequencer = self._sequencer
        now = time.monotonic()
        if event.id is not None and sequencer.is_duplicate(event.id, now):
            return False
        if event.topic is None or type(event.offset) is not int:
            return self._deliver(event)
        out = sequencer.on_publication(event, now)
        if out is None:
            return self._deliver(event)
        full = False
        for released in out:
            full = self._deliver(released) or full
        if sequencer.wanted:
            self._request_recovery()
        return full

    def _deliver(self, event: WSEEvent) -> bool:
        self._events_delivered += 1
        if self._handlers:
            handlers = self._handlers.get(event.type)
            if handlers:
                self._call(handlers, event)
        if self._any_handlers:
            self._call(self._any_handlers, event)
        return self._queue.put(event)

    def _notify(self, kind: str, payload: dict[str, Any]) -> None:
        handlers = self._handlers.get(kind)
        if handlers or self._any_handlers:
            event = WSEEvent(kind, payload, category="WSE")
            self._call([*(handlers or ()), *self._any_handlers], event)

    def _call(self, handlers: list[Handler], event: WSEEvent) -> None:
        for handler in list(handlers):
            try:
                result = handler(event)
            except Exception:
                self._stats["handler_errors"] += 1
                log.exception("handler for %r failed", event.type)
                continue
            if inspect.isawaitable(result):
                self._spawn(_guard(result, self._stats), name="wse-handler")

    def _spawn(self, coro: Any, *, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- system messages ---------------------------------------------------------------

    def _on_server_ready(self, event: WSEEvent) -> bool:
        session = self._manager.session
        if session is not None and not session.ready.done():
            payload = event.payload if isinstance(event.payload, dict) else {}
            session.ready.set_result(payload)
        self._dispatch_only(event)
        return False

    def _on_server_hello(self, event: WSEEvent) -> bool:
        payload = event.payload if isinstance(event.payload, dict) else {}
        self._server = payload
        session = self._manager.session
        error: WSEEncryptionError | None = None
        if self._encryption:
            error = self._agree(payload)
        if session is not None and not session.hello.done():
            if error is None:
                session.hello.set_result(payload)
            else:
                session.hello.set_exception(error)
        self._dispatch_only(event)
        return False

    def _agree(self, payload: dict[str, Any]) -> WSEEncryptionError | None:
        key = payload.get("encryption_public_key")
        exchange = self._key_exchange
        if not isinstance(key, str) or exchange is None:
            return WSEEncryptionError("server did not agree to end-to-end encryption")
        try:
            self._codec.session = exchange.agree(key)
        except WSEEncryptionError as exc:
            return exc
        return None

    def _on_ping(self, event: WSEEvent) -> bool:
        payload = event.payload if isinstance(event.payload, dict) else {}
        answer = {"server_time": payload.get("server_time"), "timestamp": _now_ms()}
        frame = self.make_frame("PONG", answer)
        self._spawn(self._send_quietly(frame), name="wse-pong")
        return False

    def _on_pong(self, event: WSEEvent) -> bool:
        payload = event.payload if isinstance(event.payload, dict) else {}
        stamp = payload.get("client_timestamp")
        if isinstance(stamp, int):
            quality = self._monitor.pong_received(stamp, time.monotonic())
            latency = self._monitor.latency_ms
            session = self._manager.session
            if latency is not None and session is not None:
                self._pool.latency(session.url, latency)
            if quality is not None:
                self.quality_changed(quality)
        return False

    def _on_subscription_update(self, event: WSEEvent) -> bool:
        payload = event.payload if isinstance(event.payload, dict) else {}
        result = _subscription_result(payload)
        full = False
        if payload.get("action", "subscribe") == "subscribe":
            self._sequencer.subscribed(
                list(result.success_topics), list(result.filtered_topics)
            )
            for topic, recovery in result.recovery.items():
                for released in self._sequencer.finish_recovery(topic, recovery):
                    full = self._deliver(released) or full
        else:
            self._sequencer.unsubscribed(list(result.success_topics))
        waiter = self._pending_for(event.correlation_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)
        self._dispatch_only(event)
        return full

    def _on_error(self, event: WSEEvent) -> bool:
        self._stats["server_errors"] += 1
        payload = event.payload if isinstance(event.payload, dict) else {}
        log.debug("server error %s: %s", payload.get("code"), payload.get("message"))
        if event.correlation_id is not None:
            waiter = self._pending.pop(event.correlation_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(_server_error(payload))
        return self._deliver(event)

    def _pending_for(
        self, cid: str | None
    ) -> asyncio.Future[SubscriptionResult] | None:
        """The request an answer belongs to: by `cid`, or the oldest one when the
        server does not echo `cid`."""
        if cid is not None:
            return self._pending.pop(cid, None)
        if not self._pending:
            return None
        return self._pending.pop(next(iter(self._pending)))

    def _dispatch_only(self, event: WSEEvent) -> None:
        handlers = self._handlers.get(event.type)
        if handlers:
            self._call(handlers, event)
        if self._any_handlers:
            self._call(self._any_handlers, event)

    # -- outbound helpers --------------------------------------------------------------

    def _envelope(self, kind: str, payload: Any) -> dict[str, Any]:
        return {
            "t": kind,
            "p": payload,
            "id": self._ids.next(),
            "ts": iso_now(),
            "v": 1,
        }

    async def _send_envelope(
        self, envelope: dict[str, Any], timeout: float | None = None
    ) -> None:
        if self._manager.state is not ConnectionState.READY:
            await self._until_ready(timeout)
        if self._bucket is not None:
            await self._take_token()
        await self._manager.send(self._codec.encode(envelope))
        self._messages_sent += 1

    async def _until_ready(self, timeout: float | None) -> None:
        manager = self._manager
        if manager.state is ConnectionState.CLOSED:
            raise manager.error or WSEClosedError("the client is closed")
        if manager.state is ConnectionState.IDLE:
            raise WSEConnectionError("not connected: call connect() first")
        wait = self._request_timeout if timeout is None else timeout
        ready = asyncio.ensure_future(manager.ready.wait())
        closed = asyncio.ensure_future(manager.closed.wait())
        try:
            await asyncio.wait(
                {ready, closed}, timeout=wait, return_when="FIRST_COMPLETED"
            )
        finally:
            ready.cancel()
            closed.cancel()
        state: ConnectionState = manager.state
        if state is ConnectionState.READY:
            return
        if state is ConnectionState.CLOSED:
            raise manager.error or WSEClosedError("the client is closed")
        raise WSETimeoutError(f"not connected within {wait} s")

    async def _take_token(self) -> None:
        bucket, limit = self._bucket, self._limit
        assert bucket is not None and limit is not None
        while True:
            wait = bucket.acquire(time.monotonic())
            if wait == 0.0:
                return
            if limit.mode == "raise":
                raise WSERateLimitError("outbound rate limit reached", retry_after=wait)
            self._stats["rate_limit_waits"] += 1
            await asyncio.sleep(wait)

    async def _send_quietly(self, frame: str | bytes) -> None:
        with contextlib.suppress(WSEConnectionError):
            await self._manager.send(frame, handshake=True)

    async def _request_subscription(
        self,
        action: str,
        topics: list[str],
        positions: dict[str, tuple[str, int]] | None,
        filters: Mapping[str, Any] | None,
        *,
        timeout: float | None = None,
        handshake: bool = False,
    ) -> SubscriptionResult:
        body: dict[str, Any] = {"action": action, "topics": topics}
        if positions:
            body["recover"] = True
            body["recovery"] = {
                name: {"epoch": epoch, "offset": offset}
                for name, (epoch, offset) in positions.items()
            }
        if filters:
            body["filters"] = dict(filters)
        envelope = self._envelope("subscription_update", body)
        cid = envelope["id"]
        envelope["cid"] = cid
        waiter: asyncio.Future[SubscriptionResult] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[cid] = waiter
        wait = self._request_timeout if timeout is None else timeout
        try:
            if handshake:
                await self._manager.send(self._codec.encode(envelope), handshake=True)
            else:
                await self._send_envelope(envelope, timeout)
            return await asyncio.wait_for(asyncio.shield(waiter), wait)
        except TimeoutError:
            raise WSETimeoutError(f"no answer to {action} within {wait} s") from None
        finally:
            self._pending.pop(cid, None)

    def _request_recovery(self) -> None:
        wanted = self._sequencer.wanted
        topics = [t for t in dict.fromkeys(wanted) if t in self._topics]
        wanted.clear()
        positions = self._recovery_positions(topics, True)
        if not positions:
            return
        body = {
            "action": "subscribe",
            "topics": list(positions),
            "recover": True,
            "recovery": {
                t: {"epoch": e, "offset": o} for t, (e, o) in positions.items()
            },
        }
        frame = self._codec.encode(self._envelope("subscription_update", body))
        self._spawn(self._send_quietly(frame), name="wse-recovery")

    def _recovery_positions(
        self, topics: list[str], recover: bool | Mapping[str, tuple[str, int]]
    ) -> dict[str, tuple[str, int]] | None:
        if recover is False:
            return None
        known = self._sequencer.positions() if recover is True else dict(recover)
        return {t: known[t] for t in topics if t in known} or None

    def _fail_pending(self, error: WSEError) -> None:
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            if not waiter.done():
                waiter.set_exception(error)


_SYSTEM_HANDLERS: dict[str, Callable[[AsyncWSEClient, WSEEvent], bool]] = {
    "server_ready": AsyncWSEClient._on_server_ready,
    "server_hello": AsyncWSEClient._on_server_hello,
    "ping": AsyncWSEClient._on_ping,
    "PONG": AsyncWSEClient._on_pong,
    "pong": AsyncWSEClient._on_pong,
    "subscription_update": AsyncWSEClient._on_subscription_update,
    "error": AsyncWSEClient._on_error,
    "batch": AsyncWSEClient._on_batch,
}


async def _guard(awaitable: Awaitable[None], stats: dict[str, int]) -> None:
    try:
        await awaitable
    except Exception:
        stats["handler_errors"] += 1
        log.exception("async handler failed")


def _subscription_result(payload: dict[str, Any]) -> SubscriptionResult:
    recovery: dict[str, TopicRecovery] = {}
    raw_recovery = payload.get("recovery")
    if isinstance(raw_recovery, dict):
        for topic, info in raw_recovery.items():
            if not isinstance(info, dict):
                continue
            epoch, offset = info.get("epoch"), info.get("offset")
            recovery[topic] = TopicRecovery(
                recovered=bool(info.get("recovered")),
                epoch=epoch if isinstance(epoch, str) else None,
                offset=offset if isinstance(offset, int) else None,
                count=count if isinstance(count := info.get("count"), int) else 0,
            )
    errors = payload.get("errors")
    return SubscriptionResult(
        success_topics=tuple(_strings(payload.get("success_topics"))),
        failed_topics=tuple(_strings(payload.get("failed_topics"))),
        errors=dict(errors) if isinstance(errors, dict) else {},
        recovery=recovery,
        filtered_topics=tuple(_strings(payload.get("filtered_topics"))),
    )


def _server_error(payload: dict[str, Any]) -> WSEError:
    code = payload.get("code", "ERROR")
    message = payload.get("message", "")
    return WSEError(f"server error {code}: {message}")


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _topic_list(topics: Iterable[str]) -> list[str]:
    if isinstance(topics, str):
        raise TypeError("topics must be a list of names, not a string")
    names = list(dict.fromkeys(topics))
    if not names:
        raise ValueError("no topics given")
    for name in names:
        _check_topic(name, wildcards=True)
    return names


def _check_topic(name: str, *, wildcards: bool = False) -> None:
    """PROTOCOL.md §3: 1 to 256 bytes of UTF-8, no control characters, no spaces;
    `*` and `?` only in subscriptions."""
    if not isinstance(name, str) or not 1 <= len(name.encode()) <= 256:
        raise ValueError(f"invalid topic {name!r}: 1 to 256 bytes of UTF-8")
    if any(ch <= " " or ch == "\x7f" for ch in name):
        raise ValueError(f"invalid topic {name!r}: no spaces or control characters")
    if not wildcards and ("*" in name or "?" in name):
        raise ValueError(f"invalid topic {name!r}: wildcards only in subscriptions")


def _endpoint_list(url: str, endpoints: Iterable[str] | None) -> list[str]:
    urls = list(dict.fromkeys([url, *(endpoints or ())]))
    for item in urls:
        if not isinstance(item, str) or not item.startswith(("ws://", "wss://")):
            raise ValueError(f"not a ws:// or wss:// URL: {item!r}")
    return urls


def _now_ms() -> int:
    return int(time.time() * 1000)
