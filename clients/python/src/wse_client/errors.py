"""The exception tree of `wse_client`, in one place.

Every exception the client raises is a `WSEError`, so `except WSEError` catches them
all. The subclasses say what went wrong and what the caller can do about it.
"""

from __future__ import annotations

__all__ = [
    "WSEAuthError",
    "WSECircuitOpenError",
    "WSEClosedError",
    "WSEConnectionError",
    "WSEEncryptionError",
    "WSEError",
    "WSEProtocolError",
    "WSERateLimitError",
    "WSETimeoutError",
]


class WSEError(Exception):
    """Base class of every error this package raises."""


class WSEConnectionError(WSEError):
    """The connection could not be opened, or it closed for good.

    `code` is the WebSocket close code when the server sent one (PROTOCOL.md §9),
    else None. After a terminal close the client does not reconnect: open a new one.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class WSEClosedError(WSEConnectionError):
    """The client is closed: `close()` was called, or the server closed normally
    (1000, 1001, or a Close without status). `async for` simply ends instead."""


class WSECircuitOpenError(WSEConnectionError):
    """Every endpoint's circuit breaker is open: too many failures in a short time.

    `retry_after` is the number of seconds until the first breaker lets a probe through.
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WSEAuthError(WSEConnectionError):
    """The server refused the credentials: close 4401 or 4403, close 1008, HTTP 401/403.

    Raised when no `token_provider` was given or it could not produce a fresh token.
    """


class WSERateLimitError(WSEError):
    """A send was refused by the client's own rate limiter (mode "raise"), or the
    server closed the connection with 4429. `retry_after` is in seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WSEProtocolError(WSEError):
    """A frame or message broke the wire protocol: undecodable, oversized, or closed
    with a code that says the sender must change (1002, 1007, 1009, 4400)."""


class WSEEncryptionError(WSEError):
    """End-to-end encryption failed: `cryptography` missing, a bad server key, or a
    sealed frame that does not open."""


class WSETimeoutError(WSEError, TimeoutError):
    """A wait ran past its deadline (recv, subscribe, the handshake). Also a
    `TimeoutError`, so `except TimeoutError` works too."""
