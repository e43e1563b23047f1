"""`SyncWSEClient`: the asyncio client driven from threaded code.

One daemon thread runs an event loop with an `AsyncWSEClient` on it; every method
hands a coroutine to that loop and waits for its result. Handlers registered with
`on()` run on the loop's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from .client import AsyncWSEClient, Handler
from .errors import WSEClosedError, WSETimeoutError
from .types import (
    ConnectionQuality,
    ConnectionState,
    Priority,
    SubscriptionResult,
    WSEEvent,
)

__all__ = ["SyncWSEClient"]

T = TypeVar("T")


class SyncWSEClient:
    """Blocking facade over `AsyncWSEClient`; takes the same arguments.

    Use as a context manager, or call `connect()` and `close()`. Iterating yields
    events until the client is closed.
    """

    def __init__(self, url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="wse-client-sync", daemon=True
        )
        self._thread.start()
        self._client: AsyncWSEClient = self._call(_make(url, options))

    def connect(self, timeout: float | None = None) -> SyncWSEClient:
        self._call(self._client.connect(), timeout)
        return self

    def close(self) -> None:
        """Closes the connection and stops the loop thread. Idempotent."""
        if self._loop.is_closed():
            return
        if self._loop.is_running():
            self._call(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> SyncWSEClient:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[WSEEvent]:
        while True:
            try:
                yield self.recv()
            except WSEClosedError:
                return

    def recv(self, timeout: float | None = None) -> WSEEvent:
        """The next event; `WSETimeoutError` after `timeout` seconds."""
        return self._call(self._client.recv(timeout))

    def send(
        self,
        type: str,
        payload: Any = None,
        *,
        priority: Priority | int | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self._call(
            self._client.send(
                type, payload, priority=priority, correlation_id=correlation_id
            )
        )

    def publish(self, topic: str, data: Any, **options: Any) -> None:
        self._call(self._client.publish(topic, data, **options))

    def subscribe(
        self,
        topics: Iterable[str],
        *,
        recover: bool | Mapping[str, tuple[str, int]] = False,
        filters: Mapping[str, Any] | None = None,
    ) -> SubscriptionResult:
        return self._call(
            self._client.subscribe(list(topics), recover=recover, filters=filters)
        )

    def unsubscribe(self, topics: Iterable[str]) -> SubscriptionResult:
        return self._call(self._client.unsubscribe(list(topics)))

    def request_snapshot(self, topics: Iterable[str] | None = None) -> None:
        self._call(self._client.request_snapshot(topics))

    def on(self, event_type: str, handler: Handler) -> Handler:
        """Registers a handler; it runs on the client's loop thread."""
        self._call(_register(self._client, event_type, handler))
        return handler

    def get_stats(self) -> dict[str, Any]:
        return self._call(_stats(self._client))

    @property
    def state(self) -> ConnectionState:
        return self._client.state

    @property
    def quality(self) -> ConnectionQuality:
        return self._client.quality

    @property
    def subscriptions(self) -> frozenset[str]:
        return self._client.subscriptions

    @property
    def is_ready(self) -> bool:
        return self._client.is_ready

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop.is_closed():
            coro.close()
            raise WSEClosedError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise WSETimeoutError(f"no result within {timeout} s") from None


async def _make(url: str, options: dict[str, Any]) -> AsyncWSEClient:
    return AsyncWSEClient(url, **options)


async def _register(client: AsyncWSEClient, event_type: str, handler: Handler) -> None:
    client.on(event_type, handler)


async def _stats(client: AsyncWSEClient) -> dict[str, Any]:
    return client.get_stats()
