"""The client against the real `wse-server` binary, over loopback sockets."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from conftest import (
    JWT_SECRET,
    Server,
    hs256_token,
    open_publisher,
    publish,
    start_server,
)

from wse_client import (
    AsyncWSEClient,
    ConnectionState,
    RateLimit,
    ReconnectPolicy,
    SyncWSEClient,
    WSEAuthError,
    WSEConnectionError,
    WSEEvent,
    WSERateLimitError,
    WSETimeoutError,
    connect,
)

FAST = ReconnectPolicy(base_delay=0.2, max_delay=1.0, jitter=0.0)


async def wait_until_live(client: AsyncWSEClient, url: str, topic: str) -> None:
    """Publishes probes (n = -1) until one arrives: the subscription is in place."""
    publisher = await open_publisher(url)
    try:
        for _ in range(50):
            await publish(publisher, topic, {"n": -1})
            try:
                event = await client.recv(timeout=0.2)
            except WSETimeoutError:
                continue
            if event.topic == topic:
                return
        pytest.fail("the subscription never took effect")
    finally:
        await publisher.close()


async def numbers(client: AsyncWSEClient, topic: str, count: int) -> list[int]:
    """The `n` of the next `count` publications of `topic`, probes skipped."""
    got: list[int] = []
    while len(got) < count:
        event = await client.recv(timeout=10)
        if event.topic == topic and event.payload["n"] >= 0:
            got.append(event.payload["n"])
    return got


async def assert_quiet(client: AsyncWSEClient, topic: str, seconds: float) -> None:
    """No further publication of `topic` arrives (no duplicates left over)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = await client.recv(timeout=left)
        except WSETimeoutError:
            return
        assert event.topic != topic or event.payload["n"] < 0, event


def test_subscribe_and_receive(server: Server) -> None:
    async def scenario() -> None:
        seen: list[str] = []
        async with connect(server.url, topics=["news"]) as client:
            client.on("news", lambda event: seen.append(event.type))
            answer = await client.subscribe(["live_data"])
            assert answer.success_topics == ("live_data",)
            assert answer.failed_topics == ()
            with pytest.raises(ValueError, match="no spaces"):
                await client.subscribe(["bad topic"])
            assert client.subscriptions == {"news", "live_data"}
            await wait_until_live(client, server.url, "news")
            async with connect(server.url) as publisher:
                await publisher.publish("news", {"n": 1})
                await publisher.publish("live_data", {"n": 2}, type="tick")
            events = [await client.recv(timeout=5) for _ in range(2)]
            by_topic = {event.topic: event for event in events}
            news, tick = by_topic["news"], by_topic["live_data"]
            assert (news.type, news.payload, news.category) == ("news", {"n": 1}, "U")
            assert tick.type == "tick" and tick.offset == 0 and tick.id
            assert news.epoch is not None and len(news.epoch) == 8
            assert news.sequence is None and news.timestamp
            assert client.positions["live_data"] == (tick.epoch, 0)
            stats = client.get_stats()
            assert stats["events_delivered"] >= 3 and stats["state"] == "ready"
            assert client.connection_id and client.endpoint == server.url
        assert seen.count("news") == 2
        assert client.state is ConnectionState.CLOSED

    asyncio.run(scenario())


def test_async_iteration_handlers_and_unsubscribe(server: Server) -> None:
    async def scenario() -> None:
        handled: list[int] = []

        async def on_quote(event: WSEEvent) -> None:
            await asyncio.sleep(0)
            handled.append(event.payload["n"])

        client = await connect(server.url, topics=["quotes"])
        client.on("quotes", on_quote)
        everything = client.on("*")(lambda event: None)
        await wait_until_live(client, server.url, "quotes")
        publisher = await open_publisher(server.url)
        for n in range(5):
            await publish(publisher, "quotes", {"n": n})
        got = []
        async for event in client:
            got.append(event.payload["n"])
            if len(got) == 5:
                break
        assert got == [0, 1, 2, 3, 4]
        await asyncio.sleep(0.1)
        assert sorted(handled)[-5:] == [0, 1, 2, 3, 4]
        client.off("*", everything)
        result = await client.unsubscribe(["quotes"])
        assert result.success_topics == ("quotes",)
        assert "quotes" not in client.positions
        await publish(publisher, "quotes", {"n": 99})
        await assert_quiet(client, "quotes", 0.5)
        await publisher.close()
        await client.close()
        assert [event async for event in client] == []

    asyncio.run(scenario())


def test_recovers_across_a_reconnect_without_duplicates(server: Server) -> None:
    async def scenario() -> None:
        client = await connect(server.url, topics=["orders"], reconnect=FAST)
        await wait_until_live(client, server.url, "orders")
        publisher = await open_publisher(server.url)
        for n in range(20):
            await publish(publisher, "orders", {"n": n})
        got = await numbers(client, "orders", 20)

        # The socket drops; 20 more are published while the client is away.
        await client.force_reconnect()
        for n in range(20, 40):
            await publish(publisher, "orders", {"n": n})
        got += await numbers(client, "orders", 20)
        assert got == list(range(40))
        await assert_quiet(client, "orders", 0.5)
        stats = client.get_stats()
        assert stats["reconnects"] == 1 and stats["lost"] == 0
        assert server.metric("wse_recovered_total") >= 1
        assert server.metric("wse_replayed_messages_total") >= 1
        await publisher.close()
        await client.close()

    asyncio.run(scenario())


def test_resyncs_cleanly_after_a_server_restart(server: Server) -> None:
    async def scenario() -> None:
        changes: list[str] = []
        client = await connect(server.url, topics=["ticks"], reconnect=FAST)
        client.on("state_changed", lambda e: changes.append(e.payload["state"]))
        await wait_until_live(client, server.url, "ticks")
        publisher = await open_publisher(server.url)
        for n in range(10):
            await publish(publisher, "ticks", {"n": n})
        assert await numbers(client, "ticks", 10) == list(range(10))
        old_epoch = client.positions["ticks"][0]
        await publisher.close()

        # SIGTERM: the server closes everyone with 1012; the history is gone.
        await asyncio.to_thread(server.restart)
        for _ in range(100):
            if client.is_ready and client.get_stats()["reconnects"] == 1:
                break
            await asyncio.sleep(0.1)
        assert client.is_ready, client.get_stats()
        assert client.get_stats()["last_close_code"] == 1012
        publisher = await open_publisher(server.url)
        for n in range(10, 20):
            await publish(publisher, "ticks", {"n": n})
        assert await numbers(client, "ticks", 10) == list(range(10, 20))
        assert client.positions["ticks"][0] != old_epoch
        await assert_quiet(client, "ticks", 0.5)
        assert server.metric("wse_not_recovered_total") == 1, "no recovery loop"
        assert "reconnecting" in changes and changes[-1] == "ready"
        await publisher.close()
        await client.close()

    asyncio.run(scenario())


def test_end_to_end_encryption_round_trip(server: Server) -> None:
    async def scenario() -> None:
        async with (
            connect(server.url, encryption=True, topics=["secret"]) as reader,
            connect(server.url, encryption=True) as writer,
        ):
            assert reader.encrypted and writer.encrypted
            assert reader.server_info["encryption_public_key"]
            await wait_until_live(reader, server.url, "secret")
            await writer.publish("secret", {"n": 7})
            assert await numbers(reader, "secret", 1) == [7]
            await writer.send("note", {"sealed": True})
            assert writer.get_stats()["server_errors"] == 0

    asyncio.run(scenario())


def test_signatures_follow_the_e2e_key_once_agreed(servers: list[Server]) -> None:
    """PROTOCOL.md §6: the server signs JSON text frames under the shared secret on a
    plain connection and under the E2E key on an encrypted one; both verify here."""
    secret = "python-client-signing-secret-0123456789"
    flags = (
        "--signing-secret",
        secret,
        "--sign-outbound",
        "*",
        "--allow-client-publish",
    )
    signing = start_server(servers, *flags)

    async def scenario() -> None:
        key = secret.encode()
        async with (
            connect(signing.url, signing_secret=key, topics=["s"]) as plain,
            connect(signing.url, signing_secret=key, encryption=True) as sealed,
        ):
            assert sealed.encrypted and not plain.encrypted
            await wait_until_live(plain, signing.url, "s")
            await sealed.publish("s", {"n": 6})
            assert await numbers(plain, "s", 1) == [6]
            await sealed.send("ping", {"timestamp": 1})
            await asyncio.sleep(0.3)
            for client in (plain, sealed):
                assert client.get_stats()["server_errors"] == 0
                assert client.get_stats()["bad_signatures"] == 0

    asyncio.run(scenario())


def test_encryption_refused_by_the_server_is_an_error(servers: list[Server]) -> None:
    refusing = start_server(servers, "--disable-encryption")

    async def scenario() -> None:
        with pytest.raises(Exception, match="encryption") as raised:
            await connect(refusing.url, encryption=True)
        assert "WSEEncryptionError" in type(raised.value).__name__

    asyncio.run(scenario())


def test_msgpack_mode(server: Server) -> None:
    async def scenario() -> None:
        before = server.metric("wse_msgpack_frames_out_total")
        async with connect(server.url, format="msgpack", topics=["mp"]) as client:
            await wait_until_live(client, server.url, "mp")
            publisher = await open_publisher(server.url)
            for n in range(3):
                await publish(publisher, "mp", {"n": n, "f": 1.5, "ok": True})
            got: list[dict[str, Any]] = []
            while len(got) < 3:
                event = await client.recv(timeout=5)
                if event.topic == "mp" and event.payload["n"] >= 0:
                    got.append(event.payload)
            assert got == [{"n": n, "f": 1.5, "ok": True} for n in range(3)]
            await publisher.close()
        assert server.metric("wse_msgpack_frames_out_total") >= before + 3

    asyncio.run(scenario())


def test_sync_wrapper(server: Server) -> None:
    received: list[WSEEvent] = []
    with SyncWSEClient(server.url, topics=["sync"]) as client:
        client.on("sync", received.append)
        assert client.is_ready and client.state is ConnectionState.READY
        assert client.subscribe(["other"]).success_topics == ("other",)
        assert client.subscriptions == {"sync", "other"}
        with SyncWSEClient(server.url) as publisher:
            for n in range(30):
                publisher.publish("sync", {"n": n})
                try:
                    event = client.recv(timeout=0.1)
                except WSETimeoutError:
                    continue
                break
            for n in range(3):
                publisher.publish("sync", {"n": 100 + n})
            publisher.send("hello", {"from": "sync"})
        got = []
        for event in client:
            if event.payload["n"] >= 100:
                got.append(event.payload["n"])
            if len(got) == 3:
                break
        assert got == [100, 101, 102]
        assert client.get_stats()["events_delivered"] >= 4
        assert client.unsubscribe(["other"]).success_topics == ("other",)
        client.request_snapshot(["sync"])
        assert client.quality.value == "unknown"
    assert received and event.topic == "sync"
    client.close()
    with pytest.raises(WSEConnectionError):
        client.recv(timeout=0.1)


def test_missing_token_is_an_auth_error(servers: list[Server]) -> None:
    secured = start_server(servers, "--jwt-secret", JWT_SECRET)

    async def scenario() -> None:
        with pytest.raises(WSEAuthError) as raised:
            await connect(secured.url)
        assert raised.value.code == 4401
        async with connect(secured.url, token=hs256_token("alice")) as client:
            assert client.is_ready

    asyncio.run(scenario())


def test_token_provider_renews_a_refused_and_an_expired_token(
    servers: list[Server],
) -> None:
    flags = ("--jwt-secret", JWT_SECRET, "--close-on-token-expiry")
    secured = start_server(servers, *flags, "--allow-client-publish")

    async def scenario() -> None:
        tokens: list[str] = []

        def fresh() -> str:
            tokens.append(hs256_token("bob", ttl=300))
            return tokens[-1]

        # A token that expires in 2 s: the server closes with 4403, the provider
        # gives a fresh one, the client reconnects and keeps its subscription.
        client = await connect(
            secured.url,
            token=hs256_token("bob", ttl=2),
            token_provider=fresh,
            topics=["acl"],
            reconnect=FAST,
        )
        for _ in range(100):
            if client.get_stats()["token_refreshes"] == 1 and client.is_ready:
                break
            await asyncio.sleep(0.1)
        stats = client.get_stats()
        assert stats["last_close_code"] == 4403 and stats["token_refreshes"] == 1
        assert client.subscriptions == {"acl"}
        await client.close()

        async def fresh_async() -> str:
            return hs256_token("carol")

        async with connect(
            secured.url, token="not-a-jwt", token_provider=fresh_async
        ) as renewed:
            assert renewed.get_stats()["token_refreshes"] == 1

    asyncio.run(scenario())


def test_reconnects_to_another_endpoint(servers: list[Server]) -> None:
    first = start_server(servers, "--allow-client-publish")
    second = start_server(servers, "--allow-client-publish")

    async def scenario() -> None:
        client = await connect(
            first.url,
            endpoints=[second.url],
            topics=["fail"],
            reconnect=FAST,
            pool_strategy="round_robin",  # type: ignore[arg-type]
        )
        assert client.endpoint == first.url
        await asyncio.to_thread(first.stop)
        for _ in range(100):
            if client.is_ready and client.endpoint == second.url:
                break
            await asyncio.sleep(0.1)
        assert client.endpoint == second.url
        await wait_until_live(client, second.url, "fail")
        await client.close()

    asyncio.run(scenario())


def test_first_connect_failure_raises(servers: list[Server]) -> None:
    from conftest import free_port

    async def scenario() -> None:
        url = f"ws://127.0.0.1:{free_port()}/wse"
        with pytest.raises(WSEConnectionError, match="cannot connect"):
            await connect(url, open_timeout=2)
        with pytest.raises(ValueError):
            AsyncWSEClient("http://example/wse")

    asyncio.run(scenario())


def test_outbound_rate_limit_waits_or_raises(server: Server) -> None:
    async def scenario() -> None:
        limit = RateLimit(rate=50.0, burst=5)
        async with connect(server.url, rate_limit=limit) as client:
            started = time.monotonic()
            for n in range(15):
                await client.send("tick", {"n": n})
            assert time.monotonic() - started >= 0.15
            assert client.get_stats()["rate_limit_waits"] > 0
        strict = RateLimit(rate=1.0, burst=2, mode="raise")
        async with connect(server.url, rate_limit=strict) as client:
            await client.send("a")
            await client.send("b")
            with pytest.raises(WSERateLimitError) as raised:
                await client.send("c")
            assert raised.value.retry_after > 0

    asyncio.run(scenario())


def test_sends_are_not_capped_by_default(server: Server) -> None:
    async def scenario() -> None:
        before = server.metric("wse_messages_in_total")
        async with connect(server.url) as client:
            for n in range(2000):
                await client.send("burst", {"n": n})
            await asyncio.sleep(0.3)
            assert client.get_stats()["messages_sent"] == 2000
        assert server.metric("wse_messages_in_total") >= before + 2000

    asyncio.run(scenario())


def test_heartbeats_measure_quality(servers: list[Server]) -> None:
    quick = start_server(servers, "--ping-interval", "1")

    async def scenario() -> None:
        qualities: list[Any] = []
        client = AsyncWSEClient(quick.url, heartbeat_interval=0.1)
        client.on("quality_changed", lambda e: qualities.append(e.payload["quality"]))
        await client.connect()
        await asyncio.sleep(1.5)
        stats = client.get_stats()
        assert stats["pongs_received"] >= 5 and stats["latency_ms"] is not None
        assert qualities and qualities[0] in ("excellent", "good")
        assert client.quality.value == qualities[-1]
        await client.close()

    asyncio.run(scenario())


def test_slow_consumer_backpressure_loses_nothing(server: Server) -> None:
    async def scenario() -> None:
        client = await connect(server.url, topics=["flood"], queue_size=10)
        await wait_until_live(client, server.url, "flood")
        publisher = await open_publisher(server.url)
        for n in range(5000):
            await publish(publisher, "flood", {"n": n})
        await asyncio.sleep(1.0)  # the client's queue fills; reading pauses
        # Pausing takes effect after the current socket read (at most 256 KiB).
        assert client.get_stats()["queued_events"] < 2500
        assert await numbers(client, "flood", 5000) == list(range(5000))
        assert client.get_stats()["dropped_events"] == 0
        await publisher.close()
        await client.close()

    asyncio.run(scenario())


def test_sync_client_in_threads(server: Server) -> None:
    results: list[int] = []

    def worker(topic: str) -> None:
        with SyncWSEClient(server.url, topics=[topic]) as client:
            client.publish(topic, {"n": -1})
            event = client.recv(timeout=5)
            results.append(event.offset or 0)

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert results == [0, 0, 0]
