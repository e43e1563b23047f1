"""Reconnect schedules, the circuit breaker, and the close-code policy.

Sans-I/O: delays are computed from attempt numbers and a random source; the breaker
takes the time as a parameter. `connection.py` sleeps and dials.
"""

from __future__ import annotations

import enum
import random
from collections import deque

from .types import ConnectionQuality, ReconnectPolicy, ReconnectStrategy

__all__ = ["Backoff", "CircuitBreaker", "CloseAction", "close_action", "delay"]


def delay(
    policy: ReconnectPolicy,
    attempt: int,
    *,
    rng: random.Random | None = None,
    recent_failures: int = 0,
    quality: ConnectionQuality = ConnectionQuality.UNKNOWN,
) -> float:
    """Seconds to wait before reconnect attempt `attempt` (1 for the first).

    exponential: base * factor^(attempt-1); linear: base * attempt; fibonacci:
    base * fib(attempt) (1, 1, 2, 3, 5, ...); adaptive: exponential in the number of
    failures within the last minute (`recent_failures`, so a flapping server backs
    off even when each connection briefly succeeds), scaled up when the last measured
    quality was fair (x1.5) or poor (x2). All are capped at `max_delay`, then spread
    by `jitter`.
    """
    if attempt < 1:
        raise ValueError("attempts count from 1")
    base = policy.base_delay
    strategy = policy.strategy
    if strategy is ReconnectStrategy.EXPONENTIAL:
        raw = base * policy.factor ** min(attempt - 1, 64)
    elif strategy is ReconnectStrategy.LINEAR:
        raw = base * attempt
    elif strategy is ReconnectStrategy.FIBONACCI:
        raw = base * _fibonacci(min(attempt, 90))
    else:
        steps = max(attempt, recent_failures + 1) - 1
        raw = base * policy.factor ** min(steps, 64) * _QUALITY_SCALE[quality]
    capped = min(raw, policy.max_delay)
    if policy.jitter == 0:
        return capped
    spread = (rng or random).uniform(-policy.jitter, policy.jitter)
    return max(0.0, min(capped * (1 + spread), policy.max_delay))


class Backoff:
    """Attempt counting for one client: `next_delay()` per failure, `succeeded()`
    when a connection becomes ready, `stable()` once it stayed up long enough."""

    def __init__(self, policy: ReconnectPolicy, *, rng: random.Random | None = None):
        self.policy = policy
        self.attempt = 0
        self._rng = rng
        self._failures: deque[float] = deque(maxlen=64)

    def exhausted(self) -> bool:
        """True when `max_attempts` consecutive attempts have failed."""
        limit = self.policy.max_attempts
        return limit is not None and self.attempt >= limit

    def next_delay(
        self, now: float, quality: ConnectionQuality = ConnectionQuality.UNKNOWN
    ) -> float:
        """Counts a failure at `now` and returns the delay before the next attempt."""
        self.attempt += 1
        self._failures.append(now)
        while self._failures and self._failures[0] < now - _ADAPTIVE_WINDOW:
            self._failures.popleft()
        return delay(
            self.policy,
            self.attempt,
            rng=self._rng,
            recent_failures=len(self._failures) - 1,
            quality=quality,
        )

    def stable(self) -> None:
        """The connection stayed up for `stable_after`: start counting afresh."""
        self.attempt = 0


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops reconnect storms: after `threshold` failures within `window` seconds it
    opens and refuses attempts for `cooldown` seconds, then lets one probe through
    (half-open). A success closes it; a failed probe opens it again."""

    def __init__(
        self, *, threshold: int = 5, window: float = 60.0, cooldown: float = 30.0
    ) -> None:
        if threshold < 1 or window <= 0 or cooldown < 0:
            raise ValueError("need threshold >= 1, window > 0, cooldown >= 0")
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self.state = BreakerState.CLOSED
        self.opened_at = 0.0
        self.times_opened = 0
        self._failures: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """May an attempt start now? Moves an open breaker to half-open after the
        cool-down (one probe)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.cooldown:
            self.state = BreakerState.HALF_OPEN
            return True
        return False

    def retry_after(self, now: float) -> float:
        """Seconds until `allow` can say yes (0 when it already does)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - now)

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self._failures.clear()

    def record_failure(self, now: float) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        failures = self._failures
        failures.append(now)
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) >= self.threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.times_opened += 1
        self._failures.clear()


class CloseAction(enum.Enum):
    """What a close code asks the client to do (PROTOCOL.md §9)."""

    STOP = "stop"
    """Normal close: stop for good, no error."""
    RECONNECT = "reconnect"
    """Transient: reconnect with back-off (then recover)."""
    RECONNECT_ELSEWHERE = "reconnect_elsewhere"
    """Lame-duck drain (4300): reconnect at once, preferably to another endpoint."""
    BACK_OFF = "back_off"
    """Rate limited (4429): reconnect after the longest back-off."""
    REFRESH_TOKEN = "refresh_token"
    """4401/4403: ask the token provider for a fresh token, then reconnect."""
    AUTH_FAILED = "auth_failed"
    """1008: a policy violation; stop with `WSEAuthError`."""
    PROTOCOL_ERROR = "protocol_error"
    """1007, 1009, 4400: the sender (this client) must change; stop."""


def close_action(code: int) -> CloseAction:
    """The policy for a close code: 1005 is a Close frame without a status (a normal
    close), 1006 no Close frame at all (the connection was lost: reconnect)."""
    if code in (1000, 1001, 1005):
        return CloseAction.STOP
    return _CLOSE_ACTIONS.get(code, CloseAction.RECONNECT)


def _fibonacci(n: int) -> int:
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return a


_CLOSE_ACTIONS = {
    1007: CloseAction.PROTOCOL_ERROR,
    1008: CloseAction.AUTH_FAILED,
    1009: CloseAction.PROTOCOL_ERROR,
    4300: CloseAction.RECONNECT_ELSEWHERE,
    4400: CloseAction.PROTOCOL_ERROR,
    4401: CloseAction.REFRESH_TOKEN,
    4403: CloseAction.REFRESH_TOKEN,
    4429: CloseAction.BACK_OFF,
}
_ADAPTIVE_WINDOW = 60.0
_QUALITY_SCALE = {
    ConnectionQuality.UNKNOWN: 1.0,
    ConnectionQuality.EXCELLENT: 1.0,
    ConnectionQuality.GOOD: 1.0,
    ConnectionQuality.FAIR: 1.5,
    ConnectionQuality.POOR: 2.0,
}
