"""The connection manager: sockets, the handshake, heartbeats and reconnects.

Where it sits: `client.AsyncWSEClient` owns one `ConnectionManager`, which owns the
`websockets` connection of the moment and the task that reads it. Every frame read is
handed to the client (`Delegate.frame_received`), which decodes and delivers; the
manager keeps only what concerns the socket: which endpoint to dial (`pool`), when to
dial again (`reconnect`), how the connection is doing (`monitor`), and what a close
code means (PROTOCOL.md §9):

- 1000, 1001 and a Close without status stop the client at once, with no error;
- 4401 and 4403 ask the token provider for a fresh token and reconnect (without a
  provider the client stops with `WSEAuthError`); 1008 stops with `WSEAuthError`;
- 1007, 1009 and 4400 stop with `WSEProtocolError` (reconnecting would repeat them);
- 4300 reconnects at once, to another endpoint when there is one; 4429 waits the
  longest back-off; everything else, a lost connection (1006) included, reconnects
  with the policy's back-off and then recovers.

A connection is ready after `server_ready`, our `client_hello`, the `server_hello`
(with the key agreement when encryption was asked for) and the delegate's
re-subscription. A socket from which nothing arrives for `heartbeat_timeout` seconds is
aborted and counted as lost (1006): half-open TCP is caught by time, not by the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ._transport import bind_sink
from .errors import (
    WSEAuthError,
    WSECircuitOpenError,
    WSEConnectionError,
    WSEEncryptionError,
    WSEError,
    WSEProtocolError,
    WSETimeoutError,
)
from .monitor import NetworkMonitor
from .pool import ConnectionPool
from .reconnect import Backoff, CloseAction, close_action
from .types import ConnectionQuality, ConnectionState, ReconnectPolicy

__all__ = ["ConnectionManager", "ConnectionOptions", "Delegate", "TokenProvider"]

log = logging.getLogger("wse_client.connection")

TokenProvider = Callable[[], "str | Awaitable[str]"]


class Delegate(Protocol):
    """What the manager needs from the client."""

    def frame_received(self, data: str | bytes) -> bool:
        """Handles one message; True when the event queue is full (the transport
        then stops reading until `wait_for_space` returns)."""
        ...

    async def wait_for_space(self) -> None: ...

    async def connection_opened(self, session: Session) -> None:
        """After `server_hello`: re-subscribe and recover, then return."""
        ...

    def connection_lost(self) -> None: ...

    def state_changed(self, old: ConnectionState, new: ConnectionState) -> None: ...

    def quality_changed(self, quality: ConnectionQuality) -> None: ...

    def heartbeat(self, now: float) -> None:
        """Called every heartbeat interval (releases expired reorder buffers)."""
        ...

    def make_frame(self, kind: str, payload: dict[str, Any]) -> str | bytes:
        """The encoded frame for a system message (sealed once E2E is agreed)."""
        ...

    def hello_payload(self) -> dict[str, Any]:
        """The `client_hello` payload; the delegate resolves `Session.hello` when
        `server_hello` arrives (with `WSEEncryptionError` if the keys do not agree).
        """
        ...


@dataclass(frozen=True, kw_only=True)
class ConnectionOptions:
    """Socket-level settings (see `AsyncWSEClient` for what each means)."""

    token: str | None = None
    token_provider: TokenProvider | None = None
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    reconnect: ReconnectPolicy | None = field(default_factory=ReconnectPolicy)
    open_timeout: float = 10.0
    handshake_timeout: float = 10.0
    hello_timeout: float = 5.0
    heartbeat_interval: float = 20.0
    heartbeat_timeout: float = 60.0
    max_size: int = 1 << 20
    permessage_deflate: bool = False
    require_encryption: bool = False


@dataclass(slots=True)
class Session:
    """One socket's life, from the upgrade to its close. `ws` is None only while
    the upgrade is in progress."""

    url: str
    opened_at: float
    ready: asyncio.Future[dict[str, Any]]
    hello: asyncio.Future[dict[str, Any]]
    ws: ClientConnection | None = None
    connection_id: str | None = None
    frames: int = 0
    close_code: int | None = None


class ConnectionManager:
    """Dials, keeps alive and re-dials one logical connection."""

    def __init__(
        self,
        pool: ConnectionPool,
        options: ConnectionOptions,
        delegate: Delegate,
        monitor: NetworkMonitor,
    ) -> None:
        self.pool = pool
        self.options = options
        self.monitor = monitor
        self._delegate = delegate
        self._token = options.token
        self._backoff = Backoff(options.reconnect or ReconnectPolicy())
        self.state = ConnectionState.IDLE
        self.session: Session | None = None
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()
        self.error: WSEError | None = None
        self.close_code: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._stopping = False
        self.connects = 0
        self.reconnects = 0
        self.failed_attempts = 0
        self.token_refreshes = 0
        self._refreshes_in_row = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connects once (every endpoint tried once); raises the failure."""
        if self._task is not None:
            raise WSEConnectionError("connect() was already called")
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._set_state(ConnectionState.CONNECTING)
        self._task = loop.create_task(self._run(), name="wse-client")
        try:
            await self._first
        except BaseException:
            await self.stop()
            raise

    async def stop(self, code: int = 1000) -> None:
        """Closes the socket (Close `code`) and stops reconnecting."""
        self._stopping = True
        ws = self.session.ws if self.session is not None else None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code), self.options.open_timeout)
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finish(None)

    def abort(self) -> None:
        """Drops the socket without a Close frame, as a network failure would;
        the client reconnects (tests and `force_reconnect`)."""
        session = self.session
        if session is not None and session.ws is not None:
            session.ws.transport.abort()

    async def send(self, frame: str | bytes, *, handshake: bool = False) -> None:
        """Sends on the current socket. Before READY only the client's own
        handshake messages may go (`handshake=True`); otherwise, and when there is
        no socket, `WSEConnectionError`."""
        session = self.session
        ws = session.ws if session is not None else None
        if ws is None or not (handshake or self.state is ConnectionState.READY):
            raise WSEConnectionError("not connected")
        try:
            await ws.send(frame)
        except ConnectionClosed as exc:
            raise WSEConnectionError("connection closed while sending") from exc

    # -- the run loop ------------------------------------------------------------------

    async def _run(self) -> None:
        first_round = set(self.pool.endpoints)
        avoid: str | None = None
        try:
            while not self._stopping:
                url, wait = self._choose(avoid)
                if url is None:
                    self._set_state(ConnectionState.RECONNECTING)
                    await asyncio.sleep(wait)
                    continue
                action, delay = await self._attempt(url, first_round)
                avoid = url if action is CloseAction.RECONNECT_ELSEWHERE else None
                if action is CloseAction.STOP or self._stopping:
                    return
                self._set_state(ConnectionState.RECONNECTING)
                if delay > 0:
                    await asyncio.sleep(delay)
        except WSEError as exc:
            self._finish(exc)
        finally:
            self._finish(None)

    def _choose(self, avoid: str | None) -> tuple[str | None, float]:
        """The next endpoint, or None and how long every breaker stays open."""
        try:
            return self.pool.choose(time.monotonic(), avoid=avoid), 0.0
        except WSECircuitOpenError as exc:
            if self._first is not None and not self._first.done():
                raise
            log.warning(
                "every circuit breaker is open: waiting %.1f s", exc.retry_after
            )
            return None, max(exc.retry_after, _MIN_BREAKER_WAIT)

    async def _attempt(
        self, url: str, first_round: set[str]
    ) -> tuple[CloseAction, float]:
        """One dial and, if it opens, one session. Returns what to do next and the
        delay before it."""
        try:
            code = await self._connect_and_serve(url)
        except _DialFailed as failure:
            return await self._dial_failed(url, failure, first_round)
        return await self._closed(url, code)

    async def _dial_failed(
        self, url: str, failure: _DialFailed, first_round: set[str]
    ) -> tuple[CloseAction, float]:
        now = time.monotonic()
        self.failed_attempts += 1
        self.pool.failed(url, now)
        if failure.refresh_token and await self._refresh_token(failure.error):
            return CloseAction.RECONNECT, 0.0
        if failure.terminal:
            raise failure.error
        first = self._first
        if first is not None and not first.done():
            first_round.discard(url)
            if not first_round:
                raise failure.error
            return CloseAction.RECONNECT, 0.0
        return CloseAction.RECONNECT, self._next_delay(now, failure.retry_after)

    async def _closed(self, url: str, code: int) -> tuple[CloseAction, float]:
        now = time.monotonic()
        self.close_code = code
        if self._stopping:
            return CloseAction.STOP, 0.0
        action = close_action(code)
        log.debug("connection to %s closed with %d: %s", url, code, action.value)
        if action is CloseAction.STOP:
            self._finish(None)
            return action, 0.0
        if action is CloseAction.AUTH_FAILED:
            raise WSEAuthError(f"server closed with {code} (policy)", code=code)
        if action is CloseAction.PROTOCOL_ERROR:
            raise WSEProtocolError(f"server closed with {code}: the client must change")
        if action is CloseAction.REFRESH_TOKEN:
            error = WSEAuthError(f"server closed with {code}", code=code)
            if not await self._refresh_token(error):
                raise error
            return CloseAction.RECONNECT, 0.0
        if action is CloseAction.RECONNECT_ELSEWHERE:
            self.pool.draining(url, now)
            return action, 0.0
        self.pool.failed(url, now)
        if action is CloseAction.BACK_OFF:
            return action, self._backoff.policy.max_delay
        return action, self._next_delay(now, 0.0)

    def _next_delay(self, now: float, at_least: float) -> float:
        if self.options.reconnect is None:
            raise WSEConnectionError("connection lost (reconnect is off)")
        if self._backoff.exhausted():
            raise WSEConnectionError(
                f"gave up after {self._backoff.attempt} reconnect attempts",
                code=self.close_code,
            )
        return max(at_least, self._backoff.next_delay(now, self.monitor.quality))

    async def _refresh_token(self, error: WSEError) -> bool:
        """Asks the token provider for a fresh token; False when there is none or
        it was asked `_MAX_TOKEN_REFRESHES` times in a row without a connection."""
        provider = self.options.token_provider
        if provider is None or self._refreshes_in_row >= _MAX_TOKEN_REFRESHES:
            return False
        self._refreshes_in_row += 1
        try:
            token = provider()
            if inspect.isawaitable(token):
                token = await token
        except Exception as exc:
            raise WSEAuthError(f"token provider failed: {exc}") from exc
        if not isinstance(token, str) or not token:
            raise WSEAuthError("token provider returned no token") from error
        self._token = token
        self.token_refreshes += 1
        return True

    # -- one connection ----------------------------------------------------------------

    async def _connect_and_serve(self, url: str) -> int:
        """Dials, handshakes and serves until the socket closes; returns the close
        code. Raises `_DialFailed` when no session could be set up."""
        loop = asyncio.get_running_loop()
        session = Session(
            url, time.monotonic(), loop.create_future(), loop.create_future()
        )
        self.session = session
        try:
            ws = await self._dial(url, session)
        except BaseException:
            self.session = None
            raise
        session.ws = ws
        closed = loop.create_task(self._until_closed(session), name="wse-closed")
        heartbeat: asyncio.Task[None] | None = None
        try:
            await self._handshake(session, closed)
            self._opened(session)
            heartbeat = loop.create_task(self._heartbeat(session), name="wse-heartbeat")
            await closed
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            if not closed.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), self.options.open_timeout)
                closed.cancel()
            self.session = None
            if self.ready.is_set():
                self.ready.clear()
                self.pool.released(url)
            self.monitor.disconnected()
            self._delegate.connection_lost()
        return session.close_code or 1006

    async def _dial(self, url: str, session: Session) -> ClientConnection:
        options = self.options
        headers = dict(options.headers)
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
            headers["Cookie"] = f"access_token={self._token}"
        delegate = self._delegate

        def sink(data: str | bytes) -> bool:
            session.frames += 1
            return delegate.frame_received(data)

        try:
            return await websockets.connect(
                _with_query(url, options.query),
                additional_headers=headers,
                open_timeout=options.open_timeout,
                max_size=options.max_size,
                compression="deflate" if options.permessage_deflate else None,
                ping_interval=None,
                close_timeout=2.0,
                user_agent_header=f"wse-client-python/{_VERSION}",
                create_connection=bind_sink(sink, delegate.wait_for_space),
            )
        except InvalidStatus as exc:
            raise _DialFailed.from_status(exc) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            error = WSEConnectionError(f"cannot connect to {url}: {exc}")
            raise _DialFailed(error) from exc

    async def _handshake(self, session: Session, closed: asyncio.Task[None]) -> None:
        """server_ready, client_hello, server_hello, then the delegate's
        re-subscription. Raises `_DialFailed` when the socket closes first."""
        options = self.options
        ready = await self._wait(session.ready, closed, options.handshake_timeout)
        details = ready.get("details") if isinstance(ready, dict) else None
        if isinstance(details, dict):
            session.connection_id = details.get("connection_id")
        hello = self._delegate.hello_payload()
        await self.send(
            self._delegate.make_frame("client_hello", hello), handshake=True
        )
        try:
            await self._wait(session.hello, closed, options.hello_timeout)
        except WSEEncryptionError as exc:
            assert session.ws is not None
            with contextlib.suppress(Exception):
                await session.ws.close(1000)
            raise _DialFailed(exc, terminal=True) from exc
        except _DialFailed as failure:
            if not isinstance(failure.error, WSETimeoutError):
                raise
            if options.require_encryption:
                raise _DialFailed(
                    WSEEncryptionError("server did not answer client_hello"),
                    terminal=True,
                ) from failure
        resubscribe = asyncio.ensure_future(self._delegate.connection_opened(session))
        await self._wait(resubscribe, closed, options.handshake_timeout)

    async def _wait(
        self, future: asyncio.Future[Any], closed: asyncio.Task[None], timeout: float
    ) -> Any:
        """The result of one handshake step, unless the socket closes first or the
        step takes longer than `timeout` (both raise `_DialFailed`)."""
        done, _ = await asyncio.wait(
            {future, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if future in done:
            return future.result()
        future.cancel()
        session = self.session
        if closed in done and session is not None and session.ws is not None:
            reason = session.ws.close_reason or ""
            raise _DialFailed.from_close(session.close_code or 1006, reason)
        raise _DialFailed(WSETimeoutError(f"handshake step took over {timeout} s"))

    def _opened(self, session: Session) -> None:
        self._refreshes_in_row = 0
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        self.pool.connected(session.url)
        self._set_state(ConnectionState.READY)
        self.ready.set()
        first = self._first
        if first is not None and not first.done():
            first.set_result(None)

    async def _until_closed(self, session: Session) -> None:
        ws = session.ws
        assert ws is not None
        await ws.wait_closed()
        session.close_code = ws.close_code if ws.close_code is not None else 1006

    async def _heartbeat(self, session: Session) -> None:
        """Every interval: a `ping` (latency and loss), expiry of lost pings and of
        held reorder buffers, and the liveness check: a socket on which no frame
        arrived for `heartbeat_timeout` is aborted (counted as 1006)."""
        options = self.options
        ws = session.ws
        assert ws is not None
        stable_at = session.opened_at + self._backoff.policy.stable_after
        seen, quiet_since = session.frames, time.monotonic()
        while True:
            await asyncio.sleep(options.heartbeat_interval)
            now = time.monotonic()
            if now >= stable_at:
                self._backoff.stable()
            if session.frames != seen:
                seen, quiet_since = session.frames, now
            elif now - quiet_since > options.heartbeat_timeout:
                log.warning(
                    "no frame for %.1f s: dropping the socket", now - quiet_since
                )
                self.abort()
                return
            stamp = int(time.time() * 1000)
            self.monitor.ping_sent(stamp, now)
            quality = self.monitor.expire(now)
            if quality is not None:
                self._delegate.quality_changed(quality)
            self._delegate.heartbeat(now)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self._delegate.make_frame("ping", {"timestamp": stamp}))

    # -- state -------------------------------------------------------------------------

    def _set_state(self, state: ConnectionState) -> None:
        old = self.state
        if old is state or old is ConnectionState.CLOSED:
            return
        self.state = state
        self._delegate.state_changed(old, state)

    def _finish(self, error: WSEError | None) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        if error is not None:
            self.error = error
        first = self._first
        if first is not None and not first.done():
            first.set_exception(error or WSEConnectionError("closed while connecting"))
        self.ready.clear()
        self._set_state(ConnectionState.CLOSED)
        self.closed.set()


class _DialFailed(Exception):
    """An attempt that produced no usable session."""

    def __init__(
        self,
        error: WSEError,
        *,
        terminal: bool = False,
        refresh_token: bool = False,
        retry_after: float = 0.0,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.terminal = terminal
        self.refresh_token = refresh_token
        self.retry_after = retry_after

    @classmethod
    def from_status(cls, exc: InvalidStatus) -> _DialFailed:
        status = exc.response.status_code
        if status in (401, 403):
            refused = WSEAuthError(f"server refused the upgrade with HTTP {status}")
            return cls(refused, terminal=True, refresh_token=status == 401)
        retry = exc.response.headers.get("Retry-After", "0")
        retry_after = float(retry) if retry.isdigit() else 0.0
        error = WSEConnectionError(f"server refused the upgrade with HTTP {status}")
        return cls(error, retry_after=retry_after)

    @classmethod
    def from_close(cls, code: int, reason: str) -> _DialFailed:
        """The socket closed during the handshake (e.g. 4401 after AUTH_REQUIRED)."""
        action = close_action(code)
        detail = f"closed with {code} during the handshake" + (
            f": {reason}" if reason else ""
        )
        if action is CloseAction.REFRESH_TOKEN:
            return cls(
                WSEAuthError(detail, code=code), terminal=True, refresh_token=True
            )
        if action is CloseAction.AUTH_FAILED:
            return cls(WSEAuthError(detail, code=code), terminal=True)
        if action in (CloseAction.PROTOCOL_ERROR, CloseAction.STOP):
            return cls(WSEConnectionError(detail, code=code), terminal=True)
        return cls(WSEConnectionError(detail, code=code))


def _with_query(url: str, extra: dict[str, str]) -> str:
    if not extra:
        return url
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    names = {name for name, _ in query}
    query += [(k, v) for k, v in extra.items() if k not in names]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


_MAX_TOKEN_REFRESHES = 3
_MIN_BREAKER_WAIT = 0.05
_VERSION = "3.0.0.dev0"
