"""The constructor's keyword arguments, and the payload conversion rules.

Neither needs a running server: the constructor checks its arguments before anything
starts, and the conversion rules are one Python function (`wse_server.dumps`) that both
modes call. One test sends a converted payload through a running engine to show that
the engine path applies the same rules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import inspect
import json
import uuid
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from websockets.asyncio.client import connect

from conftest import StartServer, url
from wse_server import RustWSEServer, dumps, to_jsonable


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"max_connections": 0}, ValueError, "max_connections must be an integer >= 1"),
        (
            {"max_message_size": 100},
            ValueError,
            "max_message_size must be an integer >= 125",
        ),
        (
            {"ping_interval": 0},
            ValueError,
            "ping_interval must be a number of seconds above 0",
        ),
        (
            {"idle_timeout": -1.5},
            ValueError,
            "idle_timeout must be a number of seconds above 0",
        ),
        (
            {"idle_timeout": float("nan")},
            ValueError,
            "idle_timeout must be a number of seconds",
        ),
        ({"jwt_secret": b"short"}, ValueError, "jwt_secret"),
        ({"jwt_issuer": "me"}, ValueError, "jwt_secret is needed"),
        (
            {"jwt_secret": "x" * 40, "jwt_algorithm": "none"},
            ValueError,
            "jwt_algorithm",
        ),
        ({"jwt_secret": "x" * 40, "jwt_algorithm": "RS256"}, ValueError, "jwt_secret"),
        ({"jwt_cookie_name": "a;b"}, ValueError, "jwt_cookie_name"),
        ({"auth_failure_mode": "maybe"}, ValueError, "auth_failure_mode"),
        ({"compression_level": 0}, ValueError, "compression_level must be 1 to 9"),
        ({"rate_limit_refill": 0}, ValueError, "rate_limit_refill"),
        ({"shards": 0}, ValueError, "shards must be 1 to 1024, got 0"),
        ({"shards": 1, "cores": [0]}, ValueError, "not both"),
        ({"cores": [10_000]}, ValueError, "core 10000 is not online"),
        ({"path": "wse"}, ValueError, "path must start with '/'"),
        ({"max_inbound_queue_bytes": 10}, ValueError, "max_inbound_queue_bytes"),
        ({"require_signed_inbound": True}, ValueError, "signing_secret"),
        ({"tls_cert": "cert.pem"}, ValueError, "tls_key"),
        (
            {"max_connections": "10"},
            TypeError,
            "max_connections got a value of type str",
        ),
        (
            {"max_connections": True},
            TypeError,
            "max_connections got a value of type bool",
        ),
        ({"recovery_enabled": "yes"}, TypeError, "recovery_enabled"),
        (
            {"no_such_option": 1},
            TypeError,
            "unexpected keyword argument 'no_such_option'",
        ),
        ({"redis_url": "http://x"}, ValueError, "redis_url"),
        ({"redis_url": "redis://x", "redis_prefix": "a b"}, ValueError, "redis_prefix"),
        ({"redis_timeout": 0}, ValueError, "redis_timeout"),
        # An int of the right type but out of range is a ValueError with the rule.
        ({"shards": -1}, ValueError, "shards must be 1 to 1024, got -1"),
        ({"shards": 2**70}, ValueError, f"shards must be 1 to 1024, got {2**70}"),
        ({"cores": [-1]}, ValueError, "cores core -1 is not online"),
        ({"cores": [2**70]}, ValueError, f"cores core {2**70} is not online"),
        (
            {"max_connections": 2**70},
            ValueError,
            f"max_connections must be an integer >= 1 and <= {2**64 - 1}, got {2**70}",
        ),
        ({"recovery_memory_budget": -(2**70)}, ValueError, "recovery_memory_budget"),
        ({"compression_level": 2**70}, ValueError, "compression_level must be 1 to 9"),
        ({"redis_breaker_threshold": 2**70}, ValueError, "redis_breaker_threshold"),
        ({"rate_limit_capacity": 2**70}, ValueError, "must be 1 to 1e18 messages"),
        (
            {"handshake_timeout": 1e300},
            ValueError,
            "handshake_timeout must be a number of seconds above 0 and at most "
            "31536000 (a year)",
        ),
        (
            {"jwt_secret": "k" * 32, "jwt_previous_secret": "short"},
            ValueError,
            "jwt_previous_secret: .*previous key is 5 bytes",
        ),
        # The rules below are the `wse-server` ones (Config::validate), shared by both.
        (
            {"signing_secret": b""},
            ValueError,
            "signing_secret is 0 bytes; at least 32 are required",
        ),
        (
            {"signing_secret": "short"},
            ValueError,
            "signing_secret is 5 bytes; at least 32 are required",
        ),
        ({"path": "/a b"}, ValueError, "path must start with '/' and be visible ASCII"),
        (
            {"path": "/\x00"},
            ValueError,
            "path must start with '/' and be visible ASCII",
        ),
        (
            {"jwt_cookie_name": "a\x00"},
            ValueError,
            "jwt_cookie_name must be a cookie name (an RFC 6265 token",
        ),
        (
            {"allowed_origins": [""]},
            ValueError,
            'allowed_origins entry "" is not an origin: scheme://host',
        ),
        (
            {"allowed_origins": ["https://ok.example", "not a url"]},
            ValueError,
            'allowed_origins entry "not a url" is not an origin',
        ),
        (
            {"redis_url": "http://x"},
            ValueError,
            'redis_url must be redis://.*; the scheme "http" is not one of them',
        ),
        (
            {"redis_url": "rediss://x"},
            ValueError,
            "redis_url rediss:// (TLS) is not supported by this build: use redis://",
        ),
        ({"redis_url": "redis://"}, ValueError, "redis_url .*names no host"),
    ],
)
def test_bad_options_are_refused_with_the_argument_named(
    options: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        RustWSEServer("127.0.0.1", 0, **options)


def test_host_and_port_are_checked() -> None:
    with pytest.raises(ValueError, match="host must be an IP address"):
        RustWSEServer("localhost", 0)
    with pytest.raises(ValueError, match="port must be 0 to 65535"):
        RustWSEServer("127.0.0.1", 70_000)
    with pytest.raises(ValueError, match=f"port must be 0 to 65535, got {2**70}"):
        RustWSEServer("127.0.0.1", 2**70)


def test_method_arguments_out_of_range_name_the_argument_and_the_range() -> None:
    server = RustWSEServer("127.0.0.1", 0)
    with pytest.raises(ValueError, match=f"code must be a close code .*got {2**70}"):
        server.disconnect("1", 2**70)
    with pytest.raises(ValueError, match=f"code must be a close code .*got {-(2**70)}"):
        server.reject("1", -(2**70))
    with pytest.raises(
        ValueError, match=f"max_count must be 1 to 1048576, got {2**70}"
    ):
        server.drain_inbound(2**70, 10)
    with pytest.raises(ValueError, match=f"timeout_ms must be 0 to 86400000 .*{2**70}"):
        server.drain_inbound(1, 2**70)
    with pytest.raises(ValueError, match=f"priority must be 1 to 10, got {2**70}"):
        server.publish("t", {}, 2**70)
    with pytest.raises(ValueError, match=f"limit must be 1 to 100000, got {2**70}"):
        server.dlq_messages(limit=2**70)
    with pytest.raises(ValueError, match=r"at most 31536000 \(a year\)"):
        server.drain(4300, 1e300)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda s: s.subscribe_connection("1", "abc"), "topics"),
        (lambda s: s.unsubscribe_connection("1", "abc"), "topics"),
        (lambda s: s.snapshot_complete("1", "abc"), "topics"),
        (lambda s: s.set_topic_acl("1", allow="abc"), "allow"),
        (lambda s: s.set_topic_acl("1", deny="abc"), "deny"),
        (lambda s: s.set_topic_acl("1", publish="abc"), "publish"),
    ],
)
def test_topics_must_be_a_list_of_str_not_a_str(call: Any, name: str) -> None:
    server = RustWSEServer("127.0.0.1", 0)
    with pytest.raises(TypeError, match=f"^{name} must be a list of str, not a str$"):
        call(server)


def test_good_options_are_taken() -> None:
    server = RustWSEServer(
        "127.0.0.1",
        0,
        max_connections=5,
        jwt_secret=b"k" * 32,
        jwt_issuer="your-app",
        jwt_audience="your-api",
        jwt_cookie_name="session",
        jwt_previous_secret="p" * 32,
        jwt_algorithm="hs256",
        max_message_size=4096,
        ping_interval=0.5,
        idle_timeout=2,
        max_outbound_queue_bytes=65536,
        max_subscriptions_per_connection=10,
        recovery_enabled=False,
        recovery_buffer_size=8,
        recovery_ttl=60,
        presence_enabled=True,
        rate_limit_capacity=1000.0,
        rate_limit_refill=50,
        require_accept=True,
        redis_url=None,
        shards=1,
    )
    assert "stopped" in repr(server) and not server.is_running()


def test_the_signature_lists_every_option_with_its_default() -> None:
    params = inspect.signature(RustWSEServer).parameters
    assert list(params)[:2] == ["host", "port"]
    assert params["max_connections"].default == 10_000
    assert params["ping_interval"].default == 25.0
    assert params["idle_timeout"].default == 60.0
    assert params["max_outbound_queue_bytes"].default == 1 << 20
    assert params["rate_limit_capacity"].default == 100_000
    assert params["max_inbound_queue_size"].default == 65_536
    assert params["publish_timeout"].default == 1.0
    assert params["redis_url"].default is None
    assert params["redis_breaker_threshold"].default == 10
    assert params["redis_breaker_reset"].default == 60.0
    for name, param in list(params.items())[2:]:
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, name


class Color(enum.Enum):
    RED = "red"
    WHEN = dt.date(2026, 1, 15)


@dataclasses.dataclass
class Line:
    sku: uuid.UUID
    price: Decimal
    at: dt.datetime


class Order(pydantic.BaseModel):
    id: int
    lines: list[Line]
    color: Color
    note: bytes


AT = dt.datetime(
    2026, 1, 15, 11, 30, 0, 123_456, tzinfo=dt.timezone(dt.timedelta(hours=1))
)
SKU = uuid.UUID("12345678-1234-5678-1234-567812345678")
EXPECTED_LINE = {
    "sku": "12345678-1234-5678-1234-567812345678",
    "price": "19.90",
    "at": "2026-01-15T10:30:00.123Z",
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (AT, "2026-01-15T10:30:00.123Z"),
        (dt.datetime(2026, 1, 15, 10, 30), "2026-01-15T10:30:00.000Z"),
        (dt.date(2026, 1, 15), "2026-01-15"),
        (dt.time(10, 30, 5), "10:30:05"),
        (SKU, "12345678-1234-5678-1234-567812345678"),
        (Color.RED, "red"),
        (Color.WHEN, "2026-01-15"),
        (Decimal("19.90"), "19.90"),
        (Decimal("1E+3"), "1E+3"),
        (b"\x00\xffhi", "AP9oaQ=="),
        (bytearray(b"hi"), "aGk="),
        (Line(SKU, Decimal("19.90"), AT), EXPECTED_LINE),
        (
            Order(
                id=1,
                lines=[Line(SKU, Decimal("19.90"), AT)],
                color=Color.RED,
                note=b"x",
            ),
            {"id": 1, "lines": [EXPECTED_LINE], "color": "red", "note": "eA=="},
        ),
        ({1: "a", None: "b", SKU: "c"}, {"1": "a", "null": "b", str(SKU): "c"}),
        ((1, 2.5, True, None), [1, 2.5, True, None]),
        (float("nan"), None),
    ],
)
def test_conversion_rules(value: Any, expected: Any) -> None:
    assert to_jsonable(value) == expected
    assert json.loads(dumps({"v": value})) == {"v": expected}


def test_unconvertible_values_raise_type_error() -> None:
    with pytest.raises(TypeError, match="set"):
        dumps({"s": {1, 2}})
    with pytest.raises(TypeError):
        dumps(2**70)


def test_the_engine_path_applies_the_same_rules(start_server: StartServer) -> None:
    server = start_server()
    payload = {"line": Line(SKU, Decimal("19.90"), AT), "color": Color.RED, "at": AT}

    async def scenario() -> dict[str, Any]:
        async with connect(url(server, "?topics=orders")) as ws:
            for _ in range(2):  # server_ready, subscription_update
                await asyncio.wait_for(ws.recv(), 5)
            server.publish("orders", payload)
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if message["t"] == "orders":
                    result: dict[str, Any] = message["p"]
                    return result

    assert asyncio.run(scenario()) == to_jsonable(payload)
