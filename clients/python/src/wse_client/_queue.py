"""The bounded queue between the socket reader and `recv` / `async for`.

A deque and at most one waiting getter: lighter than `asyncio.Queue` on the path every
event takes. Two policies when it holds `maxsize` events:

- "block" (the default): `put` still appends and reports that the queue is full; the
  reader then stops reading the socket until a consumer makes room, so TCP pushes back
  to the server (whose own slow-consumer policy applies, PROTOCOL.md §10). Nothing is
  dropped in the client. The messages of the socket read in progress are still
  queued, so the queue may overshoot by one read (asyncio reads at most 256 KiB).
- "drop_oldest": the oldest event is discarded and counted in `dropped`.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .errors import WSEClosedError, WSEError, WSETimeoutError
from .types import WSEEvent

__all__ = ["EventQueue"]


class EventQueue:
    def __init__(self, maxsize: int, policy: str = "block") -> None:
        if maxsize < 1:
            raise ValueError("queue_size must be at least 1")
        if policy not in ("block", "drop_oldest"):
            raise ValueError('queue_policy must be "block" or "drop_oldest"')
        self.maxsize = maxsize
        self.drop_oldest = policy == "drop_oldest"
        self.dropped = 0
        self._items: deque[WSEEvent] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self._closed = False
        self._error: WSEError | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: WSEEvent) -> bool:
        """Appends `event`; True when the queue is now full (policy "block")."""
        items = self._items
        items.append(event)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)
        if len(items) < self.maxsize:
            return False
        if not self.drop_oldest:
            return True
        if len(items) > self.maxsize:
            items.popleft()
            self.dropped += 1
        return False

    async def wait_for_space(self) -> None:
        """Returns once the queue is below `maxsize`, or closed."""
        while len(self._items) >= self.maxsize and not self._closed:
            space = asyncio.get_running_loop().create_future()
            self._space = space
            await space

    async def get(self, timeout: float | None = None) -> WSEEvent:
        """The next event. Raises `WSETimeoutError` after `timeout` seconds, and once
        the queue is closed and empty, the error that closed it (`WSEClosedError`
        after a clean close)."""
        items = self._items
        if not items:
            await self._wait_for_item(timeout)
        event = items.popleft()
        space = self._space
        if space is not None and len(items) < self.maxsize:
            self._space = None
            if not space.done():
                space.set_result(None)
        return event

    def close(self, error: WSEError | None) -> None:
        """No more events will come; waiting getters wake up."""
        self._closed = True
        self._error = error
        for waiter in (self._getter, self._space):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._getter = self._space = None

    def reopen(self) -> None:
        self._closed = False
        self._error = None

    async def _wait_for_item(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._items:
            if self._closed:
                raise self._error or WSEClosedError("the client is closed")
            getter = loop.create_future()
            self._getter = getter
            if deadline is None:
                await getter
                continue
            remaining = deadline - loop.time()
            try:
                await asyncio.wait_for(getter, max(remaining, 0))
            except TimeoutError:
                if self._getter is getter:
                    self._getter = None
                raise WSETimeoutError(f"no event within {timeout} s") from None
