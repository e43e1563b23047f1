"""Network quality from heartbeats: latency, jitter, loss. Sans-I/O: time is given.

The client sends a `ping` every heartbeat interval and the server answers `PONG`
(PROTOCOL.md §7). Each answered ping is a latency sample; a ping unanswered after
`loss_timeout` counts as lost. Jitter is the mean absolute difference between
consecutive samples (RFC 3550 §6.4.1 in spirit, without its smoothing). The quality
is judged over the last `window` pings.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from .types import ConnectionQuality

__all__ = ["NetworkMonitor", "QualityThresholds"]


@dataclass(frozen=True, kw_only=True)
class QualityThresholds:
    """The worst latency and jitter (ms) and loss (fraction) of each grade."""

    excellent: tuple[float, float, float] = (50.0, 10.0, 0.01)
    good: tuple[float, float, float] = (150.0, 30.0, 0.03)
    fair: tuple[float, float, float] = (400.0, 100.0, 0.10)


class NetworkMonitor:
    """Heartbeat bookkeeping for one client (across reconnects)."""

    def __init__(
        self,
        *,
        window: int = 20,
        loss_timeout: float = 10.0,
        thresholds: QualityThresholds | None = None,
    ) -> None:
        if window < 2:
            raise ValueError("window must be at least 2")
        self.loss_timeout = loss_timeout
        self.thresholds = thresholds or QualityThresholds()
        self.quality = ConnectionQuality.UNKNOWN
        self._samples: deque[float] = deque(maxlen=window)
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._pending: dict[int, float] = {}
        self.pings_sent = 0
        self.pongs_received = 0
        self.pings_lost = 0

    @property
    def latency_ms(self) -> float | None:
        """The latest round trip, in milliseconds."""
        return self._samples[-1] if self._samples else None

    @property
    def average_latency_ms(self) -> float | None:
        samples = self._samples
        return sum(samples) / len(samples) if samples else None

    @property
    def jitter_ms(self) -> float:
        samples = list(self._samples)
        if len(samples) < 2:
            return 0.0
        steps = [abs(b - a) for a, b in itertools.pairwise(samples)]
        return sum(steps) / len(steps)

    @property
    def loss(self) -> float:
        """Fraction of the last `window` pings that went unanswered."""
        outcomes = self._outcomes
        if not outcomes:
            return 0.0
        return outcomes.count(False) / len(outcomes)

    def ping_sent(self, key: int, now: float) -> None:
        """A ping carrying `key` (its timestamp in ms) left at `now` (seconds)."""
        self._pending[key] = now
        self.pings_sent += 1

    def pong_received(self, key: int, now: float) -> ConnectionQuality | None:
        """The answer to ping `key` arrived. Returns the new quality when it changed.
        Answers to unknown or expired pings are ignored."""
        sent = self._pending.pop(key, None)
        if sent is None:
            return None
        self.pongs_received += 1
        self._samples.append((now - sent) * 1000.0)
        self._outcomes.append(True)
        return self._judge()

    def expire(self, now: float) -> ConnectionQuality | None:
        """Counts pings older than `loss_timeout` as lost; returns the new quality
        when it changed."""
        late = [
            key
            for key, sent in self._pending.items()
            if now - sent >= self.loss_timeout
        ]
        if not late:
            return None
        for key in late:
            del self._pending[key]
            self._outcomes.append(False)
        self.pings_lost += len(late)
        return self._judge()

    def disconnected(self) -> None:
        """Pings in flight on a dropped connection are neither answered nor lost."""
        self._pending.clear()

    def _judge(self) -> ConnectionQuality | None:
        latency = self.average_latency_ms
        if latency is None:
            grade = ConnectionQuality.POOR
        else:
            grade = self._grade(latency, self.jitter_ms, self.loss)
        if grade is self.quality:
            return None
        self.quality = grade
        return grade

    def _grade(self, latency: float, jitter: float, loss: float) -> ConnectionQuality:
        limits = self.thresholds
        for grade, (max_latency, max_jitter, max_loss) in (
            (ConnectionQuality.EXCELLENT, limits.excellent),
            (ConnectionQuality.GOOD, limits.good),
            (ConnectionQuality.FAIR, limits.fair),
        ):
            if latency <= max_latency and jitter <= max_jitter and loss <= max_loss:
                return grade
        return ConnectionQuality.POOR
