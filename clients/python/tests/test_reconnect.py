"""Reconnect schedules, the circuit breaker and the close-code policy."""

from __future__ import annotations

import random

import pytest

from wse_client.reconnect import (
    Backoff,
    BreakerState,
    CircuitBreaker,
    CloseAction,
    close_action,
    delay,
)
from wse_client.types import ConnectionQuality, ReconnectPolicy, ReconnectStrategy


def policy(
    strategy: ReconnectStrategy, **options: float | int | None
) -> ReconnectPolicy:
    values: dict[str, float | int | None] = {"base_delay": 1.0, "max_delay": 100.0}
    values.update(options)
    return ReconnectPolicy(strategy=strategy, jitter=0.0, **values)  # type: ignore[arg-type]


def schedule(p: ReconnectPolicy, attempts: int = 7) -> list[float]:
    return [delay(p, n) for n in range(1, attempts + 1)]


def test_exponential_schedule_doubles_up_to_the_cap() -> None:
    p = policy(ReconnectStrategy.EXPONENTIAL, max_delay=30.0)
    assert schedule(p) == [1, 2, 4, 8, 16, 30, 30]


def test_linear_schedule() -> None:
    assert schedule(policy(ReconnectStrategy.LINEAR), 4) == [1, 2, 3, 4]


def test_fibonacci_schedule() -> None:
    p = policy(ReconnectStrategy.FIBONACCI)
    assert schedule(p) == [1, 1, 2, 3, 5, 8, 13]
    assert delay(p, 10_000) == 100.0


def test_adaptive_grows_with_recent_failures_and_poor_quality() -> None:
    p = policy(ReconnectStrategy.ADAPTIVE)
    assert delay(p, 1) == 1.0
    assert delay(p, 1, recent_failures=3) == 8.0
    assert delay(p, 1, quality=ConnectionQuality.POOR) == 2.0
    assert delay(p, 2, quality=ConnectionQuality.FAIR) == 3.0


def test_jitter_spreads_within_bounds_and_is_seeded() -> None:
    p = ReconnectPolicy(base_delay=10.0, max_delay=100.0, jitter=0.2)
    values = [delay(p, 1, rng=random.Random(seed)) for seed in range(200)]
    assert min(values) >= 8.0 and max(values) <= 12.0
    assert len(set(values)) > 100
    assert delay(p, 1, rng=random.Random(1)) == delay(p, 1, rng=random.Random(1))
    capped = ReconnectPolicy(base_delay=10.0, max_delay=10.0, jitter=0.5)
    assert all(delay(capped, 1, rng=random.Random(s)) <= 10.0 for s in range(50))


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError):
        delay(ReconnectPolicy(), 0)


@pytest.mark.parametrize(
    "options",
    [
        {"base_delay": -1.0},
        {"base_delay": 5.0, "max_delay": 1.0},
        {"factor": 0.5},
        {"jitter": 1.5},
        {"max_attempts": 0},
    ],
)
def test_bad_policies_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ReconnectPolicy(**options)  # type: ignore[arg-type]


def test_backoff_counts_attempts_and_gives_up() -> None:
    backoff = Backoff(policy(ReconnectStrategy.EXPONENTIAL, max_attempts=3))
    delays = [backoff.next_delay(float(n)) for n in range(3)]
    assert delays == [1, 2, 4]
    assert backoff.exhausted()
    backoff.stable()
    assert not backoff.exhausted()
    assert backoff.next_delay(10.0) == 1


def test_infinite_attempts_by_default() -> None:
    backoff = Backoff(ReconnectPolicy(jitter=0.0))
    for n in range(1000):
        backoff.next_delay(float(n))
    assert not backoff.exhausted()


def test_adaptive_backoff_remembers_failures_for_a_minute() -> None:
    backoff = Backoff(policy(ReconnectStrategy.ADAPTIVE))
    assert backoff.next_delay(0.0) == 1
    backoff.stable()  # a connection came up, then dropped again
    assert backoff.next_delay(1.0) == 2, "the earlier failure still counts"
    backoff.stable()
    assert backoff.next_delay(100.0) == 1, "older than the window"


def test_breaker_opens_after_threshold_and_probes_after_cooldown() -> None:
    breaker = CircuitBreaker(threshold=3, window=10.0, cooldown=5.0)
    for t in (0.0, 1.0):
        breaker.record_failure(t)
    assert breaker.allow(2.0)
    breaker.record_failure(2.0)
    assert breaker.state is BreakerState.OPEN and not breaker.allow(3.0)
    assert breaker.retry_after(3.0) == 4.0
    assert breaker.allow(7.0)
    assert state_of(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow(7.1), "one probe at a time"
    assert breaker.retry_after(7.1) == 0.0
    breaker.record_failure(7.2)
    assert breaker.state is BreakerState.OPEN and breaker.times_opened == 2
    assert breaker.allow(12.3)
    breaker.record_success()
    assert state_of(breaker) is BreakerState.CLOSED and breaker.allow(12.4)


def state_of(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state


def test_breaker_forgets_failures_outside_the_window() -> None:
    breaker = CircuitBreaker(threshold=2, window=5.0, cooldown=1.0)
    breaker.record_failure(0.0)
    breaker.record_failure(6.0)
    assert breaker.state is BreakerState.CLOSED


def test_breaker_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold=0)


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (1000, CloseAction.STOP),
        (1001, CloseAction.STOP),
        (1005, CloseAction.STOP),
        (1006, CloseAction.RECONNECT),
        (1002, CloseAction.RECONNECT),
        (1011, CloseAction.RECONNECT),
        (1012, CloseAction.RECONNECT),
        (4408, CloseAction.RECONNECT),
        (4503, CloseAction.RECONNECT),
        (4300, CloseAction.RECONNECT_ELSEWHERE),
        (4429, CloseAction.BACK_OFF),
        (4401, CloseAction.REFRESH_TOKEN),
        (4403, CloseAction.REFRESH_TOKEN),
        (1008, CloseAction.AUTH_FAILED),
        (1007, CloseAction.PROTOCOL_ERROR),
        (1009, CloseAction.PROTOCOL_ERROR),
        (4400, CloseAction.PROTOCOL_ERROR),
    ],
)
def test_close_codes_follow_protocol_section_9(code: int, action: CloseAction) -> None:
    assert close_action(code) is action
