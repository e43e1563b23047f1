"""Choosing an endpoint among several servers. Sans-I/O: time and randomness are
parameters.

Each endpoint has a health score in [0, 1] (successes raise it, failures halve it,
slow heartbeats lower it), a count of clients connected through it, and a circuit
breaker. `choose` skips endpoints whose breaker is open and picks among the rest by
the pool's strategy. One pool may be shared by several clients, which is what makes
least-connections meaningful.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from .errors import WSECircuitOpenError
from .reconnect import CircuitBreaker

__all__ = ["ConnectionPool", "EndpointHealth", "PoolStrategy"]


class PoolStrategy(enum.StrEnum):
    WEIGHTED_RANDOM = "weighted_random"
    """Random, each endpoint weighted by its health score."""
    LEAST_CONNECTIONS = "least_connections"
    """The endpoint with the fewest clients; the healthier one on a tie."""
    ROUND_ROBIN = "round_robin"
    """Each endpoint in turn."""


@dataclass(slots=True)
class EndpointHealth:
    """What the pool knows about one endpoint."""

    url: str
    breaker: CircuitBreaker
    score: float = 1.0
    connections: int = 0
    successes: int = 0
    failures: int = 0
    latency_ms: float | None = None
    draining_until: float = 0.0


class ConnectionPool:
    """Endpoints with health scores, a strategy, and a breaker each."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        strategy: PoolStrategy = PoolStrategy.WEIGHTED_RANDOM,
        rng: random.Random | None = None,
        breaker_threshold: int = 5,
        breaker_window: float = 60.0,
        breaker_cooldown: float = 30.0,
    ) -> None:
        if not endpoints:
            raise ValueError("a pool needs at least one endpoint")
        if len(set(endpoints)) != len(endpoints):
            raise ValueError("endpoints must be distinct")
        self.strategy = PoolStrategy(strategy)
        self._rng = rng or random.Random()
        self._next = 0
        self.endpoints = {
            url: EndpointHealth(
                url,
                CircuitBreaker(
                    threshold=breaker_threshold,
                    window=breaker_window,
                    cooldown=breaker_cooldown,
                ),
            )
            for url in endpoints
        }

    def choose(self, now: float, *, avoid: str | None = None) -> str:
        """The endpoint for the next attempt. `avoid` (an endpoint that is draining)
        is used only when nothing else is available. Raises `WSECircuitOpenError`
        when every breaker is open."""
        ready = [h for h in self.endpoints.values() if h.breaker.allow(now)]
        if not ready:
            wait = min(h.breaker.retry_after(now) for h in self.endpoints.values())
            raise WSECircuitOpenError(
                "every endpoint's circuit breaker is open", retry_after=wait
            )
        preferred = [
            h for h in ready if h.url != avoid and h.draining_until <= now
        ] or ready
        if self.strategy is PoolStrategy.ROUND_ROBIN:
            return self._round_robin(preferred)
        if self.strategy is PoolStrategy.LEAST_CONNECTIONS:
            best = min(preferred, key=lambda h: (h.connections, -h.score))
            return best.url
        weights = [max(h.score, _MIN_WEIGHT) for h in preferred]
        return self._rng.choices(preferred, weights=weights)[0].url

    def connected(self, url: str) -> None:
        """A client connected through `url`."""
        health = self.endpoints[url]
        health.connections += 1
        health.successes += 1
        health.score = min(1.0, health.score * 0.8 + 0.2)
        health.breaker.record_success()

    def released(self, url: str) -> None:
        """A client's connection through `url` ended."""
        health = self.endpoints[url]
        health.connections = max(0, health.connections - 1)

    def failed(self, url: str, now: float) -> None:
        """An attempt through `url` failed, or its connection dropped abnormally."""
        health = self.endpoints[url]
        health.failures += 1
        health.score *= 0.5
        health.breaker.record_failure(now)

    def draining(self, url: str, now: float, seconds: float = 30.0) -> None:
        """`url` announced a lame-duck drain (close 4300): prefer others for a while."""
        self.endpoints[url].draining_until = now + seconds

    def latency(self, url: str, latency_ms: float) -> None:
        """A heartbeat round trip through `url`: slow endpoints score lower."""
        health = self.endpoints[url]
        previous = health.latency_ms
        health.latency_ms = (
            latency_ms if previous is None else previous * 0.8 + latency_ms * 0.2
        )
        target = 1.0 / (1.0 + health.latency_ms / _LATENCY_SCALE_MS)
        health.score = health.score * 0.9 + target * 0.1

    def stats(self) -> dict[str, dict[str, object]]:
        return {
            url: {
                "score": round(h.score, 3),
                "connections": h.connections,
                "successes": h.successes,
                "failures": h.failures,
                "latency_ms": h.latency_ms,
                "breaker": h.breaker.state.value,
            }
            for url, h in self.endpoints.items()
        }

    def _round_robin(self, candidates: list[EndpointHealth]) -> str:
        order = list(self.endpoints)
        for step in range(len(order)):
            url = order[(self._next + step) % len(order)]
            if any(h.url == url for h in candidates):
                self._next = (self._next + step + 1) % len(order)
                return url
        raise AssertionError("unreachable: candidates are a non-empty subset")


_MIN_WEIGHT = 0.01
_LATENCY_SCALE_MS = 200.0
