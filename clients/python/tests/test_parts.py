"""Pool, rate limiter, network monitor and the event queue."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from wse_client._queue import EventQueue
from wse_client.errors import (
    WSECircuitOpenError,
    WSEClosedError,
    WSEError,
    WSETimeoutError,
)
from wse_client.monitor import NetworkMonitor, QualityThresholds
from wse_client.pool import ConnectionPool, PoolStrategy
from wse_client.ratelimit import TokenBucket
from wse_client.types import ConnectionQuality, RateLimit, WSEEvent

A, B, C = "ws://a/wse", "ws://b/wse", "ws://c/wse"

# -- pool ------------------------------------------------------------------------------


def test_round_robin_takes_turns_and_skips_open_breakers() -> None:
    pool = ConnectionPool([A, B, C], strategy=PoolStrategy.ROUND_ROBIN)
    assert [pool.choose(0.0) for _ in range(4)] == [A, B, C, A]
    for t in range(5):
        pool.failed(B, float(t))
    assert [pool.choose(5.0) for _ in range(3)] == [C, A, C]


def test_least_connections_prefers_idle_then_healthy() -> None:
    pool = ConnectionPool([A, B], strategy=PoolStrategy.LEAST_CONNECTIONS)
    assert pool.choose(0.0) == A
    pool.connected(A)
    assert pool.choose(0.0) == B
    pool.connected(B)
    pool.failed(B, 0.0)
    assert pool.choose(0.0) == A, "same load, A is healthier"
    pool.released(A)
    pool.released(A)
    assert pool.endpoints[A].connections == 0


def test_weighted_random_follows_health() -> None:
    pool = ConnectionPool([A, B], rng=random.Random(7))
    for t in range(3):
        pool.failed(B, float(t))
    picks = Counter(pool.choose(0.0) for _ in range(2000))
    assert picks[A] > picks[B] * 4
    pool.connected(B)
    assert pool.endpoints[B].score > 0.3


def test_every_breaker_open_raises_with_retry_after() -> None:
    pool = ConnectionPool([A], breaker_threshold=1, breaker_cooldown=10.0)
    pool.failed(A, 0.0)
    with pytest.raises(WSECircuitOpenError) as raised:
        pool.choose(4.0)
    assert raised.value.retry_after == 6.0
    assert pool.choose(10.0) == A


def test_draining_endpoint_is_avoided_while_others_exist() -> None:
    pool = ConnectionPool([A, B], strategy=PoolStrategy.ROUND_ROBIN)
    pool.draining(A, 0.0, seconds=30.0)
    assert {pool.choose(1.0, avoid=A) for _ in range(4)} == {B}
    assert {pool.choose(31.0, avoid=B) for _ in range(2)} == {A}
    alone = ConnectionPool([A])
    alone.draining(A, 0.0)
    assert alone.choose(1.0, avoid=A) == A, "nothing else left"


def test_latency_lowers_the_score() -> None:
    pool = ConnectionPool([A, B])
    for _ in range(20):
        pool.latency(A, 5.0)
        pool.latency(B, 800.0)
    assert pool.endpoints[A].score > pool.endpoints[B].score
    stats = pool.stats()
    assert stats[B]["latency_ms"] is not None and stats[A]["breaker"] == "closed"


@pytest.mark.parametrize("endpoints", [[], [A, A]])
def test_pool_needs_distinct_endpoints(endpoints: list[str]) -> None:
    with pytest.raises(ValueError):
        ConnectionPool(endpoints)


# -- rate limiter ----------------------------------------------------------------------


def test_token_bucket_allows_bursts_then_refills() -> None:
    bucket = TokenBucket(rate=10.0, capacity=5, now=0.0)
    assert [bucket.acquire(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.acquire(0.0) == pytest.approx(0.1)
    assert bucket.refused == 1
    assert bucket.acquire(0.1) == 0.0
    assert bucket.tokens(100.0) == 5.0, "never above capacity"
    with pytest.raises(ValueError):
        bucket.acquire(0.0, 6)
    with pytest.raises(ValueError):
        TokenBucket(rate=0.0, capacity=1, now=0.0)


@pytest.mark.parametrize(
    "options", [{"rate": 0.0, "burst": 1}, {"rate": 1.0, "burst": 0}, {"mode": "x"}]
)
def test_rate_limit_options_are_checked(options: dict[str, object]) -> None:
    values: dict[str, object] = {"rate": 1.0, "burst": 1, **options}
    with pytest.raises(ValueError):
        RateLimit(**values)  # type: ignore[arg-type]


# -- monitor ---------------------------------------------------------------------------


def test_quality_from_latency_jitter_and_loss() -> None:
    monitor = NetworkMonitor(window=4, loss_timeout=5.0)
    assert monitor.quality is ConnectionQuality.UNKNOWN
    monitor.ping_sent(1, 0.0)
    assert monitor.pong_received(1, 0.010) is ConnectionQuality.EXCELLENT
    monitor.ping_sent(2, 1.0)
    assert monitor.pong_received(2, 1.010) is None, "unchanged"
    monitor.ping_sent(3, 2.0)
    assert monitor.pong_received(3, 2.100) is ConnectionQuality.FAIR, "jitter 45 ms"
    assert monitor.jitter_ms == pytest.approx(45.0)
    assert monitor.latency_ms == pytest.approx(100.0)
    assert monitor.average_latency_ms == pytest.approx(40.0)
    monitor.ping_sent(4, 3.0)
    monitor.ping_sent(5, 4.0)
    assert monitor.expire(8.5) is ConnectionQuality.POOR
    assert monitor.loss == 0.25 and monitor.pings_lost == 1
    assert monitor.pong_received(4, 9.0) is None, "already counted as lost"
    assert monitor.expire(9.5) is None
    assert monitor.pings_sent == 5 and monitor.pongs_received == 3


def test_loss_alone_is_poor_and_disconnect_forgets_pings() -> None:
    monitor = NetworkMonitor(window=2, loss_timeout=1.0)
    monitor.ping_sent(1, 0.0)
    assert monitor.expire(0.5) is None
    assert monitor.expire(2.0) is ConnectionQuality.POOR
    assert monitor.average_latency_ms is None
    monitor.ping_sent(2, 3.0)
    monitor.disconnected()
    assert monitor.expire(10.0) is None


def test_custom_thresholds() -> None:
    strict = QualityThresholds(excellent=(1.0, 1.0, 0.0), good=(2.0, 2.0, 0.0))
    monitor = NetworkMonitor(thresholds=strict)
    monitor.ping_sent(1, 0.0)
    assert monitor.pong_received(1, 0.005) is ConnectionQuality.FAIR
    with pytest.raises(ValueError):
        NetworkMonitor(window=1)


# -- event queue -----------------------------------------------------------------------


def event(n: int) -> WSEEvent:
    return WSEEvent("e", n)


def test_block_policy_reports_full_and_waits_for_space() -> None:
    async def scenario() -> None:
        queue = EventQueue(2)
        assert queue.put(event(1)) is False
        assert queue.put(event(2)) is True
        waiter = asyncio.ensure_future(queue.wait_for_space())
        await asyncio.sleep(0)
        assert not waiter.done()
        assert (await queue.get()).payload == 1
        await asyncio.wait_for(waiter, 1)
        assert len(queue) == 1 and queue.dropped == 0

    asyncio.run(scenario())


def test_drop_oldest_policy_counts_drops() -> None:
    async def scenario() -> None:
        queue = EventQueue(2, "drop_oldest")
        for n in range(5):
            assert queue.put(event(n)) is False
        assert [(await queue.get()).payload for _ in range(2)] == [3, 4]
        assert queue.dropped == 3

    asyncio.run(scenario())


def test_get_waits_times_out_and_ends_on_close() -> None:
    async def scenario() -> None:
        queue = EventQueue(10)
        getter = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        queue.put(event(7))
        assert (await asyncio.wait_for(getter, 1)).payload == 7
        with pytest.raises(WSETimeoutError):
            await queue.get(timeout=0.05)
        with pytest.raises(TimeoutError):
            await queue.get(timeout=0.0)
        queue.put(event(8))
        queue.close(None)
        assert (await queue.get()).payload == 8, "queued events survive the close"
        with pytest.raises(WSEClosedError):
            await queue.get()
        queue.reopen()
        queue.close(WSEError("boom"))
        with pytest.raises(WSEError, match="boom"):
            await queue.get()

    asyncio.run(scenario())


def test_close_wakes_waiters() -> None:
    async def scenario() -> None:
        queue = EventQueue(1)
        queue.put(event(1))
        space = asyncio.ensure_future(queue.wait_for_space())
        await asyncio.sleep(0)
        queue.close(None)
        await asyncio.wait_for(space, 1)
        await queue.get()
        getter = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        assert getter.done()
        assert isinstance(getter.exception(), WSEClosedError)

    asyncio.run(scenario())


@pytest.mark.parametrize(("size", "policy"), [(0, "block"), (1, "lifo")])
def test_queue_settings_are_checked(size: int, policy: str) -> None:
    with pytest.raises(ValueError):
        EventQueue(size, policy)
