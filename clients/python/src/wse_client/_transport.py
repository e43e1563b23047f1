"""The `websockets` connection, with data messages handed straight to the client.

`websockets` parses frames, answers Pings, runs the closing handshake and validates the
protocol; its `recv()` then queues each message for a coroutine to pick up. On the
path every event takes, that queue and the coroutine switch cost about as much as
decoding the JSON, so `SinkConnection` overrides `process_event` (the hook
`websockets` subclasses use, see `ClientConnection.process_event`) and passes each
complete text or binary message to a callback instead. Control frames go to
`websockets` as usual. `recv()` is not used on these connections.

Backpressure: when the callback says the client's queue is full, the transport stops
reading (`pause_reading`) until `space()` returns, as `websockets` itself does for its
own queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import CloseCode, Frame, Opcode

__all__ = ["SinkConnection", "bind_sink"]

Sink = Callable[[str | bytes], bool]


class SinkConnection(ClientConnection):
    """A client connection that delivers data messages to `sink`."""

    sink: Sink
    space: Callable[[], Awaitable[None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fragments: list[bytes] = []
        self._fragmented_text = False
        #: True while reading is paused because the client's queue is full.
        self.paused = False
        self._resume_task: asyncio.Task[None] | None = None

    def process_event(self, event: Any) -> None:
        if self.response is None or not isinstance(event, Frame):
            super().process_event(event)
            return
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if event.fin:
                self._deliver(bytes(event.data), opcode is Opcode.TEXT)
            else:
                self._fragments = [bytes(event.data)]
                self._fragmented_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(event.data))
            if event.fin:
                data, self._fragments = b"".join(self._fragments), []
                self._deliver(data, self._fragmented_text)
        else:
            super().process_event(event)

    def _deliver(self, data: bytes, text: bool) -> None:
        if text:
            try:
                message: str | bytes = data.decode()
            except UnicodeDecodeError:
                self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
                self.send_data()
                return
        else:
            message = data
        if self.sink(message) and not self.paused:
            self.paused = True
            self.transport.pause_reading()
            self._resume_task = self.loop.create_task(self._resume())

    async def _resume(self) -> None:
        await self.space()
        self.paused = False
        if not self.transport.is_closing():
            self.transport.resume_reading()


def bind_sink(sink: Sink, space: Callable[[], Awaitable[None]]) -> type[SinkConnection]:
    """A `SinkConnection` class bound to one connection's callbacks, for
    `websockets.connect(create_connection=...)` (frames can arrive in the same read
    as the handshake response, so the sink must be in place before it)."""
    return type(
        "BoundSinkConnection",
        (SinkConnection,),
        {"sink": staticmethod(sink), "space": staticmethod(space)},
    )
