"""Token bucket for outbound messages. Sans-I/O: the time is a parameter.

Off by default: a backend service sends as fast as the server admits (the server has
its own inbound limit, PROTOCOL.md §10). Turn it on with `rate_limit=RateLimit(...)`.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; one token per message."""

    def __init__(self, *, rate: float, capacity: int, now: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("need rate > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._tokens = float(capacity)
        self._stamp = now
        self.refused = 0

    def tokens(self, now: float) -> float:
        """Tokens available at `now`."""
        self._refill(now)
        return self._tokens

    def acquire(self, now: float, count: int = 1) -> float:
        """Takes `count` tokens and returns 0.0, or takes nothing and returns the
        seconds until they will be there."""
        if count > self.capacity:
            raise ValueError(
                f"cannot take {count} tokens from a bucket of {self.capacity}"
            )
        self._refill(now)
        if self._tokens >= count:
            self._tokens -= count
            return 0.0
        self.refused += 1
        return (count - self._tokens) / self.rate

    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
            self._stamp = now
