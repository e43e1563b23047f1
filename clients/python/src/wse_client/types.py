"""Value types of the public API: events, states, priorities and option records."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ConnectionQuality",
    "ConnectionState",
    "Priority",
    "RateLimit",
    "ReconnectPolicy",
    "ReconnectStrategy",
    "SubscriptionResult",
    "TopicRecovery",
    "WSEEvent",
]


class ConnectionState(enum.StrEnum):
    """Where the client is in its life; `READY` is the only state that delivers."""

    IDLE = "idle"
    """Created, `connect()` not called yet."""
    CONNECTING = "connecting"
    """Opening the socket and waiting for `server_ready` (first connection)."""
    READY = "ready"
    """Handshake done, subscriptions sent: events flow."""
    RECONNECTING = "reconnecting"
    """The connection dropped; waiting out the back-off or opening a new socket."""
    CLOSED = "closed"
    """Closed for good: by `close()`, a terminal close code, or attempts exhausted."""


class ConnectionQuality(enum.StrEnum):
    """Judged by `NetworkMonitor` from heartbeat latency, jitter and loss."""

    UNKNOWN = "unknown"
    EXCELLENT = "excellent"
    GOOD = "good"
    FAIR = "fair"
    POOR = "poor"


class Priority(enum.IntEnum):
    """Message priority (`pri` on the wire, PROTOCOL.md §3)."""

    CRITICAL = 10
    HIGH = 8
    NORMAL = 5
    LOW = 3
    BACKGROUND = 1


class ReconnectStrategy(enum.StrEnum):
    """How the delay between reconnect attempts grows (see `reconnect.delay`)."""

    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    FIBONACCI = "fibonacci"
    ADAPTIVE = "adaptive"


@dataclass(frozen=True, kw_only=True)
class ReconnectPolicy:
    """When and how often to reconnect after a connection drops.

    Delays are in seconds. `jitter` is the fraction by which each delay is randomly
    spread (0.2: anywhere from 80 % to 120 %). `max_attempts` counts consecutive
    failed attempts; None retries forever. `stable_after` is how long a connection
    must stay up before the attempt count starts over.
    """

    strategy: ReconnectStrategy = ReconnectStrategy.EXPONENTIAL
    base_delay: float = 0.5
    max_delay: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    max_attempts: int | None = None
    stable_after: float = 10.0

    def __post_init__(self) -> None:
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within 0 and 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be positive or None")


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """A token bucket for outbound messages: `rate` per second, bursts of `burst`.

    `mode` "wait" makes a send wait for a token; "raise" raises `WSERateLimitError`.
    """

    rate: float
    burst: int
    mode: str = "wait"

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("need rate > 0 and burst >= 1")
        if self.mode not in ("wait", "raise"):
            raise ValueError('mode must be "wait" or "raise"')


@dataclass(slots=True, eq=False)
class WSEEvent:
    """One message from the server (PROTOCOL.md §3).

    `sequence` is `seq` (direct messages only); `topic`, `epoch` and `offset` are set
    on topic publications. `timestamp` is the server's ISO-8601 text. `raw` holds the
    whole decoded envelope.
    """

    type: str
    payload: Any
    id: str | None = None
    sequence: int | None = None
    timestamp: str | None = None
    category: str = "U"
    priority: int = 5
    correlation_id: str | None = None
    topic: str | None = None
    epoch: str | None = None
    offset: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class TopicRecovery:
    """What a subscription answer said about one topic's recovery."""

    recovered: bool
    epoch: str | None
    offset: int | None
    count: int


@dataclass(frozen=True, slots=True)
class SubscriptionResult:
    """The server's answer to `subscribe` or `unsubscribe`."""

    success_topics: tuple[str, ...]
    failed_topics: tuple[str, ...]
    errors: dict[str, str]
    recovery: dict[str, TopicRecovery]
    filtered_topics: tuple[str, ...]
